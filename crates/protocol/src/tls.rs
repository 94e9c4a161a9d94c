//! Mutual TLS to the city broker: the city CA as the only trust anchor (no web PKI, no
//! plaintext, verification never disabled), the box's certificate and key, the gateway id (the
//! certificate's CN), and plain words for TLS failures.
//!
//! rustls runs with the `ring` provider, chosen explicitly (no process-wide default, no
//! aws-lc-rs or OpenSSL in the tree). The key file must be mode 0600: anything looser is
//! refused, because whoever reads it can impersonate the box. Key bytes are never logged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

/// Why the TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the expected kind.
    #[error("cannot read {what} {}: {message}", path.display())]
    Read {
        /// `ca_file`, `cert_file` or `key_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The key file is readable by others.
    #[error("key_file {} has mode {mode:04o}; it must be 0600 (run: chmod 600 {})", path.display(), path.display())]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate could not be parsed or has no CN usable as a gateway id.
    #[error("cert_file {}: {message}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate is outside its validity period.
    #[error("certificate expired: cert_file {} was valid until {not_after} (now {now})", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// End of validity (RFC 3339).
        not_after: String,
        /// The current time (RFC 3339).
        now: String,
    },
    /// The certificate is not valid yet (or the clock is wrong).
    #[error("certificate not yet valid: cert_file {} is valid from {not_before} (now {now}; is the clock right?)", path.display())]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Start of validity (RFC 3339).
        not_before: String,
        /// The current time (RFC 3339).
        now: String,
    },
    /// rustls refused the combination (e.g. key does not match certificate).
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The loaded identity and trust anchor, ready for rumqttc.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The gateway id (CN of the certificate).
    pub gateway_id: String,
    /// rustls client configuration (ring provider, city CA only, client certificate).
    pub config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("gateway_id", &self.gateway_id)
            .finish_non_exhaustive()
    }
}

/// Checks that `path` is not readable or writable by group or others.
pub fn check_key_mode(path: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| TlsError::Read {
        what: "key_file",
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Read {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The CN of a DER certificate and its validity (`not_before`, `not_after` as Unix seconds).
pub fn certificate_identity(der: &[u8]) -> Result<(String, i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or("the certificate has no CN (the CN is the gateway id)")?
        .as_str()
        .map_err(|e| format!("the CN is not a string: {e}"))?
        .to_owned();
    if !valid_gateway_id(&cn) {
        return Err(format!(
            "the CN {cn:?} is not a valid gateway id (1-64 of A-Z a-z 0-9 _ - .; it becomes a topic level)"
        ));
    }
    let v = cert.validity();
    Ok((cn, v.not_before.timestamp(), v.not_after.timestamp()))
}

pub use crate::ids::valid_gateway_id;

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// Reads the gateway id from `cert_file` without checking validity dates (for config checks).
pub fn gateway_id(cert_file: &Path) -> Result<String, TlsError> {
    let certs = read_certs("cert_file", cert_file)?;
    certificate_identity(&certs[0])
        .map(|(cn, _, _)| cn)
        .map_err(|message| TlsError::BadCertificate {
            path: cert_file.to_owned(),
            message,
        })
}

/// Loads CA, certificate and key and builds the client configuration. Refuses a key file that
/// is not 0600 and a certificate outside its validity period (checked here, so the broker is
/// not even contacted with it).
pub fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<TlsMaterial, TlsError> {
    check_key_mode(key_file)?;
    let cas = read_certs("ca_file", ca_file)?;
    let chain = read_certs("cert_file", cert_file)?;
    let (gateway_id, not_before, not_after) =
        certificate_identity(&chain[0]).map_err(|message| TlsError::BadCertificate {
            path: cert_file.to_owned(),
            message,
        })?;
    let now = jiff::Timestamp::now().as_second();
    if now > not_after {
        return Err(TlsError::Expired {
            path: cert_file.to_owned(),
            not_after: rfc3339(not_after),
            now: rfc3339(now),
        });
    }
    if now < not_before {
        return Err(TlsError::NotYetValid {
            path: cert_file.to_owned(),
            not_before: rfc3339(not_before),
            now: rfc3339(now),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Read {
        what: "key_file",
        path: key_file.to_owned(),
        // The PEM error names the problem, never the key bytes.
        message: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| TlsError::Read {
            what: "ca_file",
            path: ca_file.to_owned(),
            message: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key do not fit together: {e}")))?;
    Ok(TlsMaterial {
        gateway_id,
        config: Arc::new(config),
    })
}

/// Plain words for a rustls error met while connecting, or `None` when it is not one.
pub fn plain_tls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "CA mismatch: the broker's certificate is not signed by ca_file".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet (is the clock right?)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the broker's certificate does not name the host in uplink.broker".into()
            }
            other => format!("the broker's certificate was refused: {other:?}"),
        },
        E::AlertReceived(a) => match a {
            AlertDescription::UnknownCA => {
                "the broker refused our certificate: it does not trust the CA that signed it".into()
            }
            AlertDescription::CertificateExpired => {
                "certificate expired: the broker refused our expired certificate".into()
            }
            AlertDescription::CertificateRevoked => {
                "the broker says our certificate is revoked".into()
            }
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => {
                format!("the broker refused our certificate ({a:?})")
            }
            AlertDescription::CertificateRequired => {
                "the broker wants a client certificate and did not get one".into()
            }
            other => format!("the broker ended the TLS handshake ({other:?})"),
        },
        other => format!("TLS error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_must_be_topic_safe() {
        assert!(valid_gateway_id("gw-1"));
        assert!(valid_gateway_id("box_42.springfield"));
        for bad in ["", "a/b", "a+b", "#", "a b", &"x".repeat(65)] {
            assert!(!valid_gateway_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn loose_key_file_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key_mode(&key).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_mode(&key).unwrap();
    }

    #[test]
    fn unknown_issuer_reads_as_ca_mismatch() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(plain_tls(&e).starts_with("CA mismatch"));
        let e = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(plain_tls(&e).contains("does not trust the CA"));
    }
}
