//! The registry of cameras added at run time: the sled tree `cameras`.
//!
//! # Records
//!
//! One key per camera: the camera id (UTF-8) → JSON of [`StoredCamera`]. Each write is one
//! `insert` followed by a flush, so an acknowledged add, edit or removal survives kill -9. A
//! record that cannot be read is logged and skipped (never a crash loop); it stays in the tree
//! for inspection until the resident adds a camera with the same id.
//!
//! # Secrets
//!
//! The RTSP/ONVIF password is stored as given, because the box must present it to the camera
//! after every restart; the sled database lives in `data_dir` (mode 0700, owned by the
//! service user), like the API token and the box's private key. It is held in memory as
//! [`Secret`] and is never returned by the API: the API shows only whether one is set.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::ingest::spec::{CameraSpec, Credentials, Record, Transport};
use crate::secret::Secret;

/// Name of the sled tree.
pub const TREE: &str = "cameras";

/// What the box knows of an ONVIF device behind an added camera.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnvifRef {
    /// The WS-Discovery endpoint reference (or mDNS name): stable across DHCP changes.
    pub endpoint: String,
    /// The short discovery id of `endpoint` (what `porchlight discover` lists).
    pub discovery_id: String,
    /// The device service address the streams were asked from (on the approved address).
    pub device_url: String,
    /// Serial number from `GetDeviceInformation`, when the camera gave one.
    pub serial: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// A move seen by discovery that waits for the resident (see [`super::moves`]).
    #[serde(default)]
    pub pending_move: Option<PendingMove>,
}

/// A camera seen at another address than the approved one, not followed automatically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMove {
    /// Where the device now answers.
    pub address: IpAddr,
    /// Its device service address there.
    pub device_url: String,
    /// When discovery saw it there (UTC ms).
    pub seen_ms: i64,
    /// Why it was not followed automatically (snake_case word).
    pub reason: String,
}

/// One added camera as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredCamera {
    /// Camera id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Main stream URL, without credentials.
    pub url: String,
    /// Substream URL, without credentials.
    #[serde(default)]
    pub substream_url: Option<String>,
    /// User name for RTSP (and ONVIF).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for RTSP (and ONVIF).
    #[serde(default, with = "secret_field")]
    pub password: Option<Secret>,
    /// What is recorded.
    #[serde(default)]
    pub record: Record,
    /// Audio ingested.
    #[serde(default)]
    pub audio: bool,
    /// RTP transport.
    #[serde(default)]
    pub transport: Transport,
    /// The device address the resident approved: the only host credentials go to.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The ONVIF device, for cameras added from discovery.
    #[serde(default)]
    pub onvif: Option<OnvifRef>,
    /// When it was added (UTC ms).
    #[serde(default)]
    pub added_ms: i64,
}

/// `Option<Secret>` in the stored JSON (the only place the password is written).
mod secret_field {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_some(p.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

impl StoredCamera {
    /// Validates and converts to what the ingest worker takes; every problem is listed.
    pub fn to_spec(&self) -> Result<CameraSpec, Vec<String>> {
        let mut problems = Vec::new();
        let who = format!("camera {:?}", self.id);
        if !crate::ingest::spec::valid_camera_id(&self.id) {
            problems.push(format!(
                "{who}: id must be 1-32 characters of A-Z, a-z, 0-9, '_' or '-'"
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 64 {
            problems.push(format!("{who}: name must be 1-64 characters"));
        }
        let url = crate::ingest::spec::check_rtsp_url(&who, "url", &self.url, &mut problems);
        let sub = self.substream_url.as_deref().and_then(|u| {
            crate::ingest::spec::check_rtsp_url(&who, "substream_url", u, &mut problems)
        });
        if self.record == Record::Sub && self.substream_url.is_none() {
            problems.push(format!("{who}: record = \"sub\" needs a substream_url"));
        }
        let credentials = match (&self.username, &self.password) {
            (Some(u), p) => Some(Credentials {
                username: u.clone(),
                password: p.clone().unwrap_or_else(|| Secret::new("")),
            }),
            (None, Some(_)) => {
                problems.push(format!("{who}: a password is set but no username"));
                None
            }
            (None, None) => None,
        };
        match (url, problems.is_empty()) {
            (Some(url), true) => Ok(CameraSpec {
                id: self.id.clone(),
                name: self.name.clone(),
                url,
                substream_url: sub,
                credentials,
                record: self.record,
                audio: self.audio,
                transport: self.transport,
            }),
            _ => Err(problems),
        }
    }
}

/// The `cameras` tree.
#[derive(Clone)]
pub struct Registry {
    tree: sled::Tree,
}

impl Registry {
    /// Opens (or creates) the tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Registry, sled::Error> {
        Ok(Registry {
            tree: db.open_tree(TREE)?,
        })
    }

    /// Every readable stored camera, by id.
    pub fn list(&self) -> Vec<StoredCamera> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            match item {
                Ok((k, v)) => match serde_json::from_slice::<StoredCamera>(&v) {
                    Ok(c) if c.id.as_bytes() == k.as_ref() => out.push(c),
                    Ok(_) | Err(_) => warn!(
                        key = %String::from_utf8_lossy(&k),
                        "An added camera's record cannot be read; skipped (left in the store)"
                    ),
                },
                Err(e) => {
                    warn!(error = %e, "Camera registry unreadable past this point");
                    break;
                }
            }
        }
        out
    }

    /// The stored camera with this id.
    pub fn get(&self, id: &str) -> Result<Option<StoredCamera>, sled::Error> {
        Ok(self
            .tree
            .get(id.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Writes a camera (insert or replace) and flushes.
    pub fn put(&self, cam: &StoredCamera) -> Result<(), sled::Error> {
        let bytes = serde_json::to_vec(cam).expect("a stored camera serialises");
        self.tree.insert(cam.id.as_bytes(), bytes)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Deletes a camera and flushes; `false` when it was not there.
    pub fn remove(&self, id: &str) -> Result<bool, sled::Error> {
        let had = self.tree.remove(id.as_bytes())?.is_some();
        self.tree.flush()?;
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(id: &str) -> StoredCamera {
        StoredCamera {
            id: id.into(),
            name: "Porch".into(),
            url: "rtsp://192.0.2.10:554/main".into(),
            substream_url: Some("rtsp://192.0.2.10:554/sub".into()),
            username: Some("admin".into()),
            password: Some(Secret::new("hunter2 secret")),
            record: Record::Sub,
            audio: false,
            transport: Transport::Tcp,
            address: Some("192.0.2.10".parse().unwrap()),
            onvif: Some(OnvifRef {
                endpoint: "urn:uuid:1".into(),
                discovery_id: crate::discovery::short_id("urn:uuid:1"),
                device_url: "http://192.0.2.10/onvif/device_service".into(),
                serial: Some("PC0001".into()),
                manufacturer: None,
                model: None,
                pending_move: None,
            }),
            added_ms: 1,
        }
    }

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    #[test]
    fn registry_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let r = Registry::open(&db).unwrap();
            r.put(&cam("porch")).unwrap();
            r.put(&cam("garage")).unwrap();
            assert!(r.remove("garage").unwrap());
            assert!(!r.remove("garage").unwrap());
        }
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let r = Registry::open(&db).unwrap();
        let all = r.list();
        assert_eq!(all.len(), 1);
        let c = &all[0];
        assert_eq!(c.password.as_ref().unwrap().expose(), "hunter2 secret");
        assert_eq!(c.onvif, cam("porch").onvif);
        let spec = c.to_spec().unwrap();
        assert_eq!(spec.recorded_url().as_str(), "rtsp://192.0.2.10:554/sub");
    }

    #[test]
    fn unreadable_records_are_skipped_not_fatal() {
        let (_d, db) = db();
        let r = Registry::open(&db).unwrap();
        r.put(&cam("ok")).unwrap();
        db.open_tree(TREE)
            .unwrap()
            .insert("broken", b"{not json".to_vec())
            .unwrap();
        let ids: Vec<String> = r.list().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["ok"]);
    }

    #[test]
    fn the_password_never_prints() {
        let c = cam("porch");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.to_spec().unwrap()).contains("hunter2"));
    }

    #[test]
    fn invalid_settings_list_every_problem_without_the_password() {
        let mut c = cam("bad id!");
        c.url = "http://admin:hunter2@192.0.2.1/".into();
        c.substream_url = None;
        c.username = None;
        let p = c.to_spec().unwrap_err().join("\n");
        for needle in ["id must be", "rtsp://", "substream_url", "no username"] {
            assert!(p.contains(needle), "missing {needle:?} in {p}");
        }
        assert!(!p.contains("hunter2"), "{p}");
    }
}
