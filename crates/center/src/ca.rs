//! `porchlight-center ca …`: the city CA that enrollment signs with, and the certificates a
//! city needs to stand up its broker.
//!
//! - `ca init --dir DIR`: a self-signed ECDSA P-256 CA (`ca.pem`, key `ca.key` 0600; 20 years
//!   by default; key usages keyCertSign + cRLSign, path length 0 so it can only sign
//!   end-entity certificates) and the center's Ed25519 request key pair
//!   ([`super::keygen`]). Refuses to overwrite an existing CA.
//! - `ca issue-server --dns NAME… [--ip ADDR…]`: the broker's TLS certificate (serverAuth).
//! - `ca issue-client --cn NAME`: a client certificate (clientAuth) — the center's own
//!   (`--cn center`, the broker ACL's center user) or a test box's.
//!
//! Every key is ECDSA P-256 made by ring through rcgen; keys are written with mode 0600 and
//! never overwritten. Serial numbers are 16 random bytes (positive, RFC 5280 §4.1.2.2).
//!
//! [`CityCa`] is what `serve` and `revoke-box` use: load once, issue box certificates, sign
//! the CRL.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use x509_parser::time::ASN1Time;

use super::store::CenterDir;
use super::CenterError;

/// Default CA lifetime.
pub const CA_YEARS: u32 = 20;
/// Grace before "now" in `notBefore`, for boxes whose clock is a little behind.
pub const BACKDATE_S: i64 = 3600;

/// Arguments of `ca`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// `ca` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Create the city CA and the center's request key in a new state directory.
    Init(InitArgs),
    /// Issue the broker's TLS server certificate.
    IssueServer(ServerArgs),
    /// Issue a client certificate (the center's own, `--cn center`).
    IssueClient(ClientArgs),
}

/// The state directory flag shared by the center's enrollment commands.
#[derive(clap::Args, Debug, Clone)]
pub struct DirArg {
    /// The center's state directory (CA, registry, audit log; made by `ca init`).
    #[arg(long, env = "PORCHLIGHT_CENTER_DIR")]
    pub dir: PathBuf,
}

/// `ca init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// The CA's name (its CN).
    #[arg(long, default_value = "Porchlight city CA")]
    pub name: String,
    /// CA lifetime in years.
    #[arg(long, default_value_t = CA_YEARS)]
    pub years: u32,
}

/// `ca issue-server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// DNS names the broker is reached by (repeat the flag or give several).
    #[arg(long = "dns", num_args = 1..)]
    pub dns: Vec<String>,
    /// IP addresses the broker is reached by.
    #[arg(long = "ip", num_args = 1..)]
    pub ip: Vec<IpAddr>,
    /// Output file prefix: writes PREFIX.pem and PREFIX.key (0600).
    #[arg(long, default_value = "server")]
    pub out: PathBuf,
    /// Lifetime in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
}

/// `ca issue-client`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// The certificate's CN: the broker user name (`center` for the center).
    #[arg(long)]
    pub cn: String,
    /// Output file prefix: writes PREFIX.pem and PREFIX.key (0600); default: the CN.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Lifetime in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
}

/// A certificate just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM.
    pub pem: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// notAfter, UTC ms.
    pub not_after_ms: i64,
}

/// The loaded city CA.
pub struct CityCa {
    /// The CA certificate, PEM (sent to boxes).
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CityCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityCa").finish_non_exhaustive()
    }
}

fn rc(what: &str) -> impl FnOnce(rcgen::Error) -> CenterError + '_ {
    move |e| CenterError::Usage(format!("{what}: {e}"))
}

/// Sets `notBefore`/`notAfter` from UTC seconds (rcgen's date type comes from `time`, which
/// this crate reaches through x509-parser rather than as a dependency of its own).
fn set_validity(p: &mut CertificateParams, from_s: i64, to_s: i64) -> Result<(), CenterError> {
    let t = |s: i64| {
        ASN1Time::from_timestamp(s)
            .map(|t| t.to_datetime())
            .map_err(|_| CenterError::Usage(format!("time {s} is out of range")))
    };
    p.not_before = t(from_s)?;
    p.not_after = t(to_s)?;
    Ok(())
}

/// A fresh serial: 16 random bytes, the top bit cleared (positive), never zero.
pub fn new_serial() -> Result<Vec<u8>, CenterError> {
    let mut b = super::random_bytes::<16>().map_err(|source| CenterError::File {
        what: "random source",
        path: "getrandom(2)".into(),
        source,
    })?;
    b[0] &= 0x7f;
    b[0] |= 0x01 << 6; // keeps the length at 16 bytes and the value non-zero
    Ok(b.to_vec())
}

/// Now, UTC seconds.
pub fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl CityCa {
    /// The CA's signature (base64url) over the request-key statement of `request_key_pem`
    /// (`porchlight_protocol::pairing::request_key_statement`): what lets a box take the key
    /// from an answer that came through the broker.
    pub fn sign_request_key(&self, request_key_pem: &str) -> Result<String, CenterError> {
        use base64::Engine as _;
        use rcgen::SigningKey as _;
        let msg = porchlight_protocol::pairing::request_key_statement(request_key_pem);
        let sig = self
            .issuer
            .key()
            .sign(&msg)
            .map_err(rc("cannot sign the request key"))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
    }

    /// Loads `ca.pem` and `ca.key` (which must be 0600) from `dir`.
    pub fn load(dir: &CenterDir) -> Result<CityCa, CenterError> {
        dir.check_initialized()?;
        porchlight_protocol::tls::check_key_mode(&dir.ca_key())?;
        let read = |what: &'static str, p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| CenterError::File {
                what,
                path: p,
                source,
            })
        };
        let pem = read("CA certificate", dir.ca_cert())?;
        let key_pem = read("CA key", dir.ca_key())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CenterError::Key {
            path: dir.ca_key(),
            message: format!("not a private key rcgen can use: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key).map_err(|e| CenterError::Config {
            path: dir.ca_cert(),
            message: format!("not a CA certificate: {e}"),
        })?;
        Ok(CityCa { pem, issuer })
    }

    fn sign(
        &self,
        mut p: CertificateParams,
        key: &impl PublicKeyData,
        from_s: i64,
        to_s: i64,
    ) -> Result<Issued, CenterError> {
        let serial = new_serial()?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        set_validity(&mut p, from_s, to_s)?;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(key, &self.issuer).map_err(rc("cannot sign"))?;
        Ok(Issued {
            pem: cert.pem(),
            serial: hex::encode(serial),
            not_after_ms: to_s * 1000,
        })
    }

    /// A client certificate (clientAuth, digitalSignature) with CN `cn` for `key`, valid from
    /// an hour before `now_s` for `lifetime_s`.
    pub fn issue_client(
        &self,
        cn: &str,
        key: &impl PublicKeyData,
        now_s: i64,
        lifetime_s: i64,
    ) -> Result<Issued, CenterError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p, key, now_s - BACKDATE_S, now_s + lifetime_s)
    }

    /// A server certificate (serverAuth) for `dns` names and `ips`.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        key: &impl PublicKeyData,
        now_s: i64,
        lifetime_s: i64,
    ) -> Result<Issued, CenterError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let cn = dns
            .first()
            .cloned()
            .or_else(|| ips.first().map(|i| i.to_string()))
            .ok_or_else(|| {
                CenterError::Usage("give at least one --dns NAME or --ip ADDR".into())
            })?;
        p.distinguished_name.push(DnType::CommonName, cn);
        for d in dns {
            let name = d
                .clone()
                .try_into()
                .map_err(|_| CenterError::Usage(format!("--dns {d:?} is not a DNS name")))?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p, key, now_s - BACKDATE_S, now_s + lifetime_s)
    }

    /// A CRL (PEM) listing `revoked` (serial hex, revocation time UTC s), number `number`,
    /// valid for `valid_s` from `now_s`.
    pub fn crl(
        &self,
        revoked: &[(String, i64)],
        number: u64,
        now_s: i64,
        valid_s: i64,
    ) -> Result<String, CenterError> {
        let t = |s: i64| {
            ASN1Time::from_timestamp(s)
                .map(|t| t.to_datetime())
                .map_err(|_| CenterError::Usage(format!("time {s} is out of range")))
        };
        let mut certs = Vec::with_capacity(revoked.len());
        for (serial, at) in revoked {
            let bytes = hex::decode(serial)
                .map_err(|_| CenterError::Usage(format!("serial {serial:?} is not hex")))?;
            certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: t(*at)?,
                reason_code: Some(RevocationReason::CessationOfOperation),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: t(now_s - 60)?,
            next_update: t(now_s + valid_s)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(rc("cannot sign the CRL"))?;
        crl.pem().map_err(rc("cannot encode the CRL"))
    }
}

/// Writes a new file with `mode`, never replacing an existing one.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CenterError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CenterError::Usage(format!(
                    "{} exists; not overwritten (move it away first)",
                    path.display()
                ))
            } else {
                CenterError::File {
                    what: "output file",
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| CenterError::File {
            what: "output file",
            path: path.to_owned(),
            source,
        })
}

/// Runs a `ca` subcommand.
pub fn run(args: Args) -> Result<ExitCode, CenterError> {
    match args.command {
        CaCommand::Init(a) => init(a),
        CaCommand::IssueServer(a) => {
            let dir = CenterDir::new(&a.dir.dir);
            let ca = CityCa::load(&dir)?;
            if a.dns.is_empty() && a.ip.is_empty() {
                return Err(CenterError::Usage(
                    "give at least one --dns NAME or --ip ADDR (what boxes connect to)".into(),
                ));
            }
            let key = KeyPair::generate().map_err(rc("cannot make a key"))?;
            let issued =
                ca.issue_server(&a.dns, &a.ip, &key, now_s(), i64::from(a.days) * 86_400)?;
            write_pair(&a.out, &issued, &key)
        }
        CaCommand::IssueClient(a) => {
            if !porchlight_protocol::tls::valid_gateway_id(&a.cn) {
                return Err(CenterError::Usage(format!(
                    "--cn {:?} must be 1-64 of A-Z a-z 0-9 _ - . (it becomes the broker user name)",
                    a.cn
                )));
            }
            if a.cn == porchlight_protocol::pairing::BOOTSTRAP_USERNAME {
                return Err(CenterError::Usage(format!(
                    "--cn {:?} is the pairing listener's bootstrap account; a certificate with \
                     it would share that account's ACL",
                    a.cn
                )));
            }
            let dir = CenterDir::new(&a.dir.dir);
            let ca = CityCa::load(&dir)?;
            let key = KeyPair::generate().map_err(rc("cannot make a key"))?;
            let issued = ca.issue_client(&a.cn, &key, now_s(), i64::from(a.days) * 86_400)?;
            let out = a.out.unwrap_or_else(|| PathBuf::from(&a.cn));
            write_pair(&out, &issued, &key)
        }
    }
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn write_pair(prefix: &Path, issued: &Issued, key: &KeyPair) -> Result<ExitCode, CenterError> {
    let (cert, key_path) = (with_ext(prefix, ".pem"), with_ext(prefix, ".key"));
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert, &issued.pem, 0o644)?;
    println!("certificate: {} (serial {})", cert.display(), issued.serial);
    println!("key:         {} (mode 0600)", key_path.display());
    Ok(ExitCode::SUCCESS)
}

fn init(a: InitArgs) -> Result<ExitCode, CenterError> {
    let dir = CenterDir::new(&a.dir.dir);
    if dir.ca_cert().exists() || dir.ca_key().exists() {
        return Err(CenterError::Usage(format!(
            "{} already holds a city CA; not overwritten",
            dir.path.display()
        )));
    }
    if a.years == 0 || a.years > 100 {
        return Err(CenterError::Usage("--years must be 1..=100".into()));
    }
    std::fs::create_dir_all(&dir.path).map_err(|source| CenterError::File {
        what: "state directory",
        path: dir.path.clone(),
        source,
    })?;
    let key = KeyPair::generate().map_err(rc("cannot make the CA key"))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, a.name.clone());
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(SerialNumber::from_slice(&new_serial()?));
    let now = now_s();
    set_validity(
        &mut p,
        now - BACKDATE_S,
        now + i64::from(a.years) * 365 * 86_400,
    )?;
    let cert = p.self_signed(&key).map_err(rc("cannot sign the CA"))?;
    // The key first: a CA certificate without its key would be useless.
    write_new(&dir.ca_key(), &key.serialize_pem(), 0o600)?;
    write_new(&dir.ca_cert(), &cert.pem(), 0o644)?;
    if !dir.request_key().exists() {
        super::keygen::run(super::keygen::Args {
            out: dir.path.clone(),
            force: false,
        })?;
    }
    println!(
        "city CA:     {} (key {} mode 0600)",
        dir.ca_cert().display(),
        dir.ca_key().display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_issue_a_client_certificate_that_chains_to_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("center");
        init(InitArgs {
            dir: DirArg { dir: d.clone() },
            name: "Test city".into(),
            years: 1,
        })
        .unwrap();
        let dir = CenterDir::new(&d);
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.ca_key(), dir.request_key()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert!(init(InitArgs {
            dir: DirArg { dir: d.clone() },
            name: "x".into(),
            years: 1,
        })
        .is_err());
        let ca = CityCa::load(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let issued = ca
            .issue_client("gw-abc", &key, now_s(), 90 * 86_400)
            .unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.pem.as_bytes());
        use rustls::pki_types::pem::PemObject;
        let der = der.unwrap();
        let (cn, nb, na) = porchlight_protocol::tls::certificate_identity(&der).unwrap();
        assert_eq!(cn, "gw-abc");
        assert!(na - nb > 89 * 86_400);
        assert_eq!(issued.serial.len(), 32);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let crl = ca
            .crl(&[(issued.serial.clone(), now_s())], 1, now_s(), 86_400)
            .unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");

        // The request key, vouched for by the CA: what a box checks before taking it.
        let pem = std::fs::read_to_string(dir.request_key_pub()).unwrap();
        let sig = ca.sign_request_key(&pem).unwrap();
        porchlight_protocol::pairing::verify_request_key(&ca.pem, &pem, &sig).unwrap();
        let other = pem.replace('A', "B");
        assert!(porchlight_protocol::pairing::verify_request_key(&ca.pem, &other, &sig).is_err());
    }
}
