//! Test PKI made with rcgen (ring): a city CA, the broker's server certificate, gateway and
//! center client certificates, expired ones and ones from another CA.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// PEM file of the CA certificate.
    pub pem_file: PathBuf,
}

/// A certificate and its key on disk.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM (mode 0600).
    pub key: PathBuf,
}

/// Validity of an issued certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2020 to 2090.
    Current,
    /// Valid in 2020 only: expired.
    Expired,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/{name}-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let pem_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_file, cert.pem()).unwrap();
        Ca {
            params,
            key,
            pem_file,
        }
    }

    fn issue(&self, dir: &Path, file: &str, mut params: CertificateParams) -> Identity {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        params.subject_alt_names.clear();
        let id = Identity {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&id.cert, cert.pem()).unwrap();
        std::fs::write(&id.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&id.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        id
    }

    /// The broker's certificate, for 127.0.0.1 and localhost.
    pub fn server(&self, dir: &Path, file: &str) -> Identity {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "broker");
        p.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2090, 1, 1);
        self.issue(dir, file, p)
    }

    /// A client certificate with CN `cn`.
    pub fn client(&self, dir: &Path, cn: &str, validity: Validity) -> Identity {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        match validity {
            Validity::Current => {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2090, 1, 1);
            }
            Validity::Expired => {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
        }
        let file = match validity {
            Validity::Current => cn.to_owned(),
            Validity::Expired => format!("{cn}-expired"),
        };
        self.issue(dir, &file, p)
    }
}
