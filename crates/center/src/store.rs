//! The center's durable state: one directory (`--dir`, `PORCHLIGHT_CENTER_DIR`) that `ca init`
//! creates and every enrollment command shares.
//!
//! # Files
//!
//! | file | mode | what |
//! |---|---|---|
//! | `ca.pem` | 0644 | the city CA certificate (ECDSA P-256, self-signed): the trust anchor of broker and boxes |
//! | `ca.key` | 0600 | its private key (PKCS#8 PEM) |
//! | `request-key.pem` | 0600 | the center's Ed25519 request key ([`super::keygen`]) |
//! | `request-key.pub.pem` | 0644 | its public half, sent to every box at pairing |
//! | `registry.json` | 0600 | claim codes and boxes ([`Registry`]) |
//! | `audit.jsonl` | 0600 | one JSON line per decision (codes issued, enrolled, refused, renewed, revoked) |
//! | `crl.pem` | 0644 | the revocation list for the broker's `crlfile` ([`super::revoke`]) |
//! | `registry.lock` | 0600 | empty; `flock`ed around every read and write of `registry.json` |
//!
//! # Writes
//!
//! `codes issue`, `revoke-box` and every `serve` worker may run at once (on one host or one
//! shared file system with working `flock`). Each change takes the exclusive lock on
//! `registry.lock`, **re-reads** `registry.json`, changes it, writes `registry.json.tmp`,
//! fsyncs it, renames it over `registry.json` and fsyncs the directory, then appends its audit
//! line (fsynced) and only then drops the lock. A crash leaves either the old or the new file,
//! never a torn one. Readers take the shared lock. The whole registry is re-read per CSR: at
//! 10,000 boxes it is about 10 MB of JSON and 30 ms, far below the rate at which boxes pair.
//!
//! Claim codes are stored as issued (the file is 0600): a code is a one-time secret, useless
//! once used or expired. Private keys of boxes never reach the center.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::geo::LatLon;
use super::CenterError;

/// `registry.json`'s format version.
pub const REGISTRY_VERSION: u32 = 1;

/// A claim code as the center keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCode {
    /// Normalized code (12 characters of the claim alphabet).
    pub code: String,
    /// Free text for the city (a household, a letter's reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The resident's registered address; copied to the box record at enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LatLon>,
    /// When it was issued, UTC ms.
    pub issued: i64,
    /// After this it is refused (`code_expired`), UTC ms.
    pub expires: i64,
    /// Set once a box enrolled with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<CodeUse>,
}

/// Which box used a code, and with which key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeUse {
    /// When, UTC ms.
    pub at: i64,
    /// SHA-256 (hex) of the box's SubjectPublicKeyInfo: the same key retrying gets the same
    /// certificate, another key gets `code_used`.
    pub key_sha256: String,
    /// The gateway id assigned.
    pub gateway_id: String,
}

/// A paired box.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxRecord {
    /// The gateway id (CN of its certificate).
    pub gateway_id: String,
    /// The claim code's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The registered address (from the claim code; never from the box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LatLon>,
    /// The claim code it enrolled with.
    pub code: String,
    /// SHA-256 (hex) of the current certificate's public key.
    pub key_sha256: String,
    /// Serial of the current certificate (hex).
    pub serial: String,
    /// Every serial ever issued to this box, oldest first (all go on the CRL at revocation).
    pub serials: Vec<String>,
    /// The current certificate, PEM (re-sent when the same key retries).
    pub certificate: String,
    /// First enrollment, UTC ms.
    pub enrolled: i64,
    /// The current certificate's issue time, UTC ms.
    pub issued: i64,
    /// Its notAfter, UTC ms.
    pub not_after: i64,
    /// When the city revoked it, UTC ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

/// `registry.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// [`REGISTRY_VERSION`].
    pub version: u32,
    /// Every claim code issued.
    pub codes: Vec<ClaimCode>,
    /// Every box paired.
    pub boxes: Vec<BoxRecord>,
    /// The last CRL number used (CRL numbers only grow).
    #[serde(default)]
    pub crl_number: u64,
}

impl Registry {
    /// The code `code` (normalized).
    pub fn code_mut(&mut self, code: &str) -> Option<&mut ClaimCode> {
        self.codes.iter_mut().find(|c| c.code == code)
    }

    /// The box `gw`.
    pub fn find_box(&self, gw: &str) -> Option<&BoxRecord> {
        self.boxes.iter().find(|b| b.gateway_id == gw)
    }

    /// The box `gw`, to change it.
    pub fn box_mut(&mut self, gw: &str) -> Option<&mut BoxRecord> {
        self.boxes.iter_mut().find(|b| b.gateway_id == gw)
    }
}

/// The center's state directory.
#[derive(Clone, Debug)]
pub struct CenterDir {
    /// Its path.
    pub path: PathBuf,
}

/// An `flock` held until dropped.
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on a file descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CenterError {
    let path = path.to_owned();
    move |source| CenterError::File { what, path, source }
}

impl CenterDir {
    /// The directory at `path` (not checked yet).
    pub fn new(path: impl Into<PathBuf>) -> CenterDir {
        CenterDir { path: path.into() }
    }

    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("ca.pem")
    }
    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.path.join("ca.key")
    }
    /// `request-key.pem`.
    pub fn request_key(&self) -> PathBuf {
        self.path.join(super::keygen::PRIVATE_FILE)
    }
    /// `request-key.pub.pem`.
    pub fn request_key_pub(&self) -> PathBuf {
        self.path.join(super::keygen::PUBLIC_FILE)
    }
    /// `registry.json`.
    pub fn registry(&self) -> PathBuf {
        self.path.join("registry.json")
    }
    /// `audit.jsonl`.
    pub fn audit(&self) -> PathBuf {
        self.path.join("audit.jsonl")
    }
    /// `crl.pem`.
    pub fn crl(&self) -> PathBuf {
        self.path.join("crl.pem")
    }

    /// Fails with plain words when `ca init` has not been run here.
    pub fn check_initialized(&self) -> Result<(), CenterError> {
        if self.ca_cert().exists() && self.ca_key().exists() {
            Ok(())
        } else {
            Err(CenterError::Usage(format!(
                "{} holds no city CA: run `porchlight-center ca init --dir {}` first",
                self.path.display(),
                self.path.display()
            )))
        }
    }

    fn lock(&self, exclusive: bool) -> Result<Lock, CenterError> {
        let path = self.path.join("registry.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_err("lock file", &path))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a file descriptor we own; blocks until granted.
        if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
            return Err(file_err("lock file", &path)(std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    fn load(&self) -> Result<Registry, CenterError> {
        let path = self.registry();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CenterError::Config {
                path,
                message: format!("the registry is not valid: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry {
                version: REGISTRY_VERSION,
                ..Registry::default()
            }),
            Err(e) => Err(file_err("registry", &path)(e)),
        }
    }

    /// A consistent snapshot of the registry (shared lock).
    pub fn read(&self) -> Result<Registry, CenterError> {
        let _lock = self.lock(false)?;
        self.load()
    }

    /// Changes the registry under the exclusive lock: `f` gets a fresh copy and returns the
    /// result plus the audit lines to append; the registry is written (atomically) and the
    /// lines appended before the lock is released. When `f` fails nothing is written.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<(T, Vec<serde_json::Value>), CenterError>,
    ) -> Result<T, CenterError> {
        let _lock = self.lock(true)?;
        let mut reg = self.load()?;
        let before = reg.clone();
        let (out, audit) = f(&mut reg)?;
        if reg != before {
            self.write_registry(&reg)?;
        }
        for line in audit {
            self.append_audit(&line)?;
        }
        Ok(out)
    }

    fn write_registry(&self, reg: &Registry) -> Result<(), CenterError> {
        let path = self.registry();
        let text = serde_json::to_vec_pretty(reg).expect("registry serializes");
        write_atomic(&path, &text, 0o600)
    }

    fn append_audit(&self, line: &serde_json::Value) -> Result<(), CenterError> {
        let path = self.audit();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_err("audit log", &path))?;
        let mut text = serde_json::to_vec(line).expect("audit line serializes");
        text.push(b'\n');
        f.write_all(&text).map_err(file_err("audit log", &path))?;
        f.sync_data().map_err(file_err("audit log", &path))
    }
}

/// Writes `path` as a whole: temp file with `mode`, fsync, rename, fsync of the directory (the
/// center's one durable write; the box's is `porchlight::fsutil::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CenterError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(file_err("file", &tmp))?;
    f.write_all(bytes).map_err(file_err("file", &tmp))?;
    f.sync_all().map_err(file_err("file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err("file", path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The rename is durable only once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err("directory", dir))
}

/// An audit line: `{"ts":…,"event":…, …fields}`.
pub fn audit_line(event: &str, ts_ms: i64, fields: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({ "ts": ts_ms, "event": event });
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_durable_audited_and_rolled_back_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = CenterDir::new(dir.path());
        assert!(d.read().unwrap().codes.is_empty());
        d.update(|r| {
            r.codes.push(ClaimCode {
                code: "ABCDEFGHJKMN".into(),
                label: None,
                location: None,
                issued: 1,
                expires: 2,
                used: None,
            });
            Ok((
                (),
                vec![audit_line("codes_issued", 1, serde_json::json!({"n":1}))],
            ))
        })
        .unwrap();
        let err = d.update(|r| {
            r.codes.clear();
            Err::<((), Vec<_>), _>(CenterError::Usage("no".into()))
        });
        assert!(err.is_err());
        assert_eq!(d.read().unwrap().codes.len(), 1);
        let audit = std::fs::read_to_string(d.audit()).unwrap();
        assert_eq!(audit.lines().count(), 1);
        assert!(audit.contains("\"event\":\"codes_issued\""), "{audit}");
        use std::os::unix::fs::PermissionsExt;
        for p in [d.registry(), d.audit()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let d = CenterDir::new(dir.path());
                std::thread::spawn(move || {
                    for i in 0..25 {
                        d.update(|r| {
                            r.codes.push(ClaimCode {
                                code: format!("{t}-{i}"),
                                label: None,
                                location: None,
                                issued: 0,
                                expires: 0,
                                used: None,
                            });
                            Ok(((), vec![]))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(CenterDir::new(dir.path()).read().unwrap().codes.len(), 100);
    }
}
