//! The box's stored identity: what pairing produced, in `{data_dir}/identity/`.
//!
//! ```text
//! identity/                 0700
//!   current -> gen-<ms>     symlink, switched atomically (rename) by pairing and renewal
//!   gen-<ms>/key.pem        the box's P-256 private key, 0600; never leaves the box
//!   gen-<ms>/cert.pem       its certificate (CN = gateway id)
//!   gen-<ms>/ca.pem         the city CA: the only trust anchor for the broker
//!   gen-<ms>/request_key.pem  the center's Ed25519 request key (verifies police requests)
//!   gen-<ms>/identity.json  gateway id, broker, topic root, validity
//!   pending/                an enrollment or renewal in progress: its key (0600) and code
//! ```
//!
//! A generation is written completely (files fsynced) before `current` points at it, so a
//! crash leaves either the old identity or the new one, never a key that does not match its
//! certificate. The uplink reads `current/…` at every connection, so a switch takes effect on
//! the next connection.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the identity could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("identity {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `identity.json` is damaged.
    #[error("identity {}: {message}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `identity.json` records (public facts only: no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// The gateway id (the certificate's CN).
    pub gateway_id: String,
    /// The broker for normal operation, `mqtts://host:port`.
    pub broker: String,
    /// Topic root.
    pub topic_root: String,
    /// When the box was paired, UTC milliseconds.
    pub paired_at: i64,
    /// When the current certificate was issued (pairing or renewal), UTC milliseconds.
    pub issued_at: i64,
    /// The certificate's notBefore, UTC milliseconds.
    pub not_before: i64,
    /// The certificate's notAfter, UTC milliseconds.
    pub not_after: i64,
}

/// The PEM texts of one identity generation. Its `Debug` never shows the key.
pub struct IdentityFiles {
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate.
    pub cert_pem: String,
    /// The city CA chain.
    pub ca_pem: String,
    /// The center's request key, when the center sent one.
    pub request_key_pem: Option<String>,
}

impl std::fmt::Debug for IdentityFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityFiles")
            .field("key_pem", &"<redacted>")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A stored identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `{data_dir}/identity/current`.
    pub dir: PathBuf,
    /// What `identity.json` says.
    pub info: IdentityInfo,
}

impl Identity {
    /// The private key file (stable path through `current`).
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    /// The certificate file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    /// The city CA file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The center's request key, if the center sent one at pairing.
    pub fn request_key(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("request_key.pem")).ok()
    }
}

/// `{data_dir}/identity`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

/// Reads the current identity; `None` when the box is not paired.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let dir = root(data_dir).join("current");
    let path = dir.join("identity.json");
    let raw = match std::fs::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let info: IdentityInfo = serde_json::from_slice(&raw).map_err(|e| IdentityError::Damaged {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(Some(Identity { dir, info }))
}

fn mkdir(path: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(path))
}

/// Writes `bytes` to `path` (created with `mode`) durably ([`crate::fsutil::write_atomic`]).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::fsutil::write_atomic(path, bytes, mode).map_err(|e| io(&e.path.clone())(e.source))
}

fn sync_dir(path: &Path) -> Result<(), IdentityError> {
    crate::fsutil::sync_dir(path).map_err(io(path))
}

/// Installs a new generation and makes it current (pairing, renewal). Older generations are
/// deleted afterwards.
pub fn install(
    data_dir: &Path,
    files: &IdentityFiles,
    info: &IdentityInfo,
) -> Result<Identity, IdentityError> {
    let root = root(data_dir);
    mkdir(&root)?;
    let name = format!("gen-{}", crate::clock::now_ms());
    let gen = root.join(&name);
    mkdir(&gen)?;
    write_file(&gen.join("key.pem"), files.key_pem.as_bytes(), 0o600)?;
    write_file(&gen.join("cert.pem"), files.cert_pem.as_bytes(), 0o644)?;
    write_file(&gen.join("ca.pem"), files.ca_pem.as_bytes(), 0o644)?;
    if let Some(k) = &files.request_key_pem {
        write_file(&gen.join("request_key.pem"), k.as_bytes(), 0o644)?;
    }
    let json = serde_json::to_vec_pretty(info).expect("identity info serialises");
    write_file(&gen.join("identity.json"), &json, 0o644)?;
    sync_dir(&gen)?;
    let link = root.join("current");
    let tmp = root.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(io(&link))?;
    sync_dir(&root)?;
    // Best effort: old generations are dead weight (and old keys).
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with("gen-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Identity {
        dir: link,
        info: info.clone(),
    })
}

/// Installs a renewed generation only if `gw` is still the current identity; `None` (and
/// nothing written) when the box was unpaired or paired anew meanwhile. The caller serializes
/// this with [`remove`].
pub fn install_if_current(
    data_dir: &Path,
    gw: &str,
    files: &IdentityFiles,
    info: &IdentityInfo,
) -> Result<Option<Identity>, IdentityError> {
    match load(data_dir)? {
        Some(cur) if cur.info.gateway_id == gw => install(data_dir, files, info).map(Some),
        _ => Ok(None),
    }
}

/// Forgets the identity (unpairing): the directory is renamed first, so a crash half-way
/// still leaves the box unpaired, then deleted.
pub fn remove(data_dir: &Path) -> Result<(), IdentityError> {
    let root = root(data_dir);
    if !root.exists() {
        return Ok(());
    }
    let gone = data_dir.join(format!("identity.removed-{}", crate::clock::now_ms()));
    std::fs::rename(&root, &gone).map_err(io(&root))?;
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&gone).map_err(io(&gone))?;
    Ok(())
}

/// The key of an enrollment or renewal in progress, for `purpose` (the claim code, or
/// `renew:{gw}`): the same key is reused while the purpose is the same, so a retry after a
/// lost answer gets the same certificate; another purpose starts with a fresh key.
pub fn pending_key(data_dir: &Path, purpose: &str) -> Result<rcgen::KeyPair, IdentityError> {
    let dir = root(data_dir).join("pending");
    mkdir(&root(data_dir))?;
    mkdir(&dir)?;
    let key_path = dir.join("key.pem");
    let purpose_path = dir.join("purpose");
    if std::fs::read_to_string(&purpose_path).ok().as_deref() == Some(purpose) {
        if let Ok(pem) = std::fs::read_to_string(&key_path) {
            if let Ok(k) = rcgen::KeyPair::from_pem(&pem) {
                return Ok(k);
            }
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
        IdentityError::Damaged {
            path: key_path.clone(),
            message: format!("cannot generate a key: {e}"),
        }
    })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&purpose_path, purpose.as_bytes(), 0o600)?;
    sync_dir(&dir)?;
    Ok(key)
}

/// Deletes the pending key once its certificate is installed (or the attempt is abandoned).
pub fn clear_pending(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(root(data_dir).join("pending"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn info(gw: &str) -> IdentityInfo {
        IdentityInfo {
            gateway_id: gw.into(),
            broker: "mqtts://b:8883".into(),
            topic_root: "porchlight/v1".into(),
            paired_at: 1,
            issued_at: 1,
            not_before: 1,
            not_after: 2,
        }
    }

    fn files(tag: &str) -> IdentityFiles {
        IdentityFiles {
            key_pem: format!("KEY {tag}"),
            cert_pem: format!("CERT {tag}"),
            ca_pem: "CA".into(),
            request_key_pem: Some("RK".into()),
        }
    }

    #[test]
    fn install_switches_generations_and_keeps_keys_private() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_none());
        let a = install(d.path(), &files("a"), &info("gw-a")).unwrap();
        assert_eq!(std::fs::read_to_string(a.key_file()).unwrap(), "KEY a");
        let mode = std::fs::metadata(a.key_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::thread::sleep(std::time::Duration::from_millis(2));
        install(d.path(), &files("b"), &info("gw-a")).unwrap();
        let now = load(d.path()).unwrap().unwrap();
        // Same stable paths, new content; the old generation is gone.
        assert_eq!(now.key_file(), a.key_file());
        assert_eq!(std::fs::read_to_string(now.cert_file()).unwrap(), "CERT b");
        assert_eq!(now.request_key().as_deref(), Some("RK"));
        let gens = std::fs::read_dir(root(d.path()))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("gen-")
            })
            .count();
        assert_eq!(gens, 1);
        remove(d.path()).unwrap();
        assert!(load(d.path()).unwrap().is_none());
    }

    #[test]
    fn a_late_renewal_never_resurrects_an_unpaired_identity() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            install_if_current(d.path(), "gw-a", &files("x"), &info("gw-a"))
                .unwrap()
                .is_none()
        );
        install(d.path(), &files("a"), &info("gw-a")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let renewed = install_if_current(d.path(), "gw-a", &files("b"), &info("gw-a")).unwrap();
        assert!(renewed.is_some());
        remove(d.path()).unwrap();
        assert!(
            install_if_current(d.path(), "gw-a", &files("c"), &info("gw-a"))
                .unwrap()
                .is_none()
        );
        assert!(load(d.path()).unwrap().is_none(), "still unpaired");
    }

    #[test]
    fn pending_key_is_reused_for_the_same_code_only() {
        let d = tempfile::tempdir().unwrap();
        let k1 = pending_key(d.path(), "CODE1").unwrap();
        let k2 = pending_key(d.path(), "CODE1").unwrap();
        assert_eq!(k1.public_key_raw(), k2.public_key_raw());
        let k3 = pending_key(d.path(), "CODE2").unwrap();
        assert_ne!(k1.public_key_raw(), k3.public_key_raw());
        let p = root(d.path()).join("pending/key.pem");
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
