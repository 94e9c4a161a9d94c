//! The daemon's cameras at run time: the set every other part iterates, and the workers that
//! keep each one streaming.
//!
//! # Sources
//!
//! A camera comes from the configuration file (`[[cameras]]`, read-only at run time: "managed
//! by the configuration file") or was added by the resident through the control API or the CLI
//! (`porchlight cameras add`). Added cameras are kept in the sled tree `cameras`
//! ([`registry`]), so they survive a restart. When both name the same id, the file wins and
//! the stored camera is left untouched (and logged) until the resident removes one of them.
//!
//! # The set
//!
//! [`CameraSet`] holds the current cameras as an immutable snapshot (`Arc<Vec<_>>`) behind a
//! short lock: readers (heartbeat, events, sharing's live feeds, export, status) take a snapshot
//! and iterate it without holding anything. Changes (add, remove, edit, an automatic re-point
//! after a DHCP move) are serialised by one async lock, and each goes in this order:
//!
//! - add: validate → write the registry (flushed) → publish the new snapshot → start its worker;
//! - remove: stop its worker (which stores its open segment) → delete it from the registry →
//!   publish the snapshot without it;
//! - edit: stop its worker → write the registry → publish → start a worker on the new settings.
//!   The live broadcast is kept across an edit, so a running share ends with `camera_lost`
//!   (the stream parameters may change) rather than holding a dead feed.
//!
//! A removed camera disappears from status, `cameras` and heartbeats at once. Its stored
//! video stays in the segment store and remains exportable by id until quota or retention
//! evicts it (the store knows nothing of cameras being added or removed; evidence a resident
//! may still need is not deleted by a configuration change). Adding a camera again under the
//! same id continues the same buffer.
//!
//! # Secrets
//!
//! Passwords are [`crate::secret::Secret`] from the API body to the RTSP client and never
//! appear in a response, a log line or an audit entry; URLs are kept without user info.

pub mod moves;
pub mod registry;
pub mod scanner;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::ingest::health::Health;
use crate::ingest::live::LiveFeed;
use crate::ingest::spec::CameraSpec;
use crate::ingest::CameraWorker;
use crate::ingest::IngestConfig;
use crate::shutdown::Shutdown;
use crate::store::Store;
use registry::{Registry, StoredCamera};

/// Where a camera's settings live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[cameras]]` in the configuration file: read-only through the API.
    Config,
    /// Added at run time by the resident; kept in the store.
    Added,
}

/// One camera as the rest of the daemon sees it.
#[derive(Clone)]
pub struct CameraHandle {
    /// Its validated settings.
    pub spec: CameraSpec,
    /// Its health, updated by its worker.
    pub health: Health,
    /// Its live broadcast.
    pub live: LiveFeed,
    /// Configuration file or added at run time.
    pub source: Source,
    /// What the registry holds for an added camera (ONVIF reference, approved address).
    pub stored: Option<StoredCamera>,
}

impl CameraHandle {
    fn new(spec: CameraSpec, source: Source, stored: Option<StoredCamera>) -> Self {
        CameraHandle {
            health: Health::new(&spec.id, &spec.name, spec.url.as_str()),
            live: LiveFeed::new(),
            spec,
            source,
            stored,
        }
    }
}

/// Why a change to the camera set was refused.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// No camera with this id.
    #[error("no camera {0:?}")]
    NotFound(String),
    /// The camera comes from the configuration file.
    #[error("camera {0:?} is managed by the configuration file; change it there and restart")]
    ConfigManaged(String),
    /// The id is taken.
    #[error("a camera with id {0:?} already exists")]
    Exists(String),
    /// The settings are not usable; every problem is listed.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The registry (sled) failed.
    #[error("camera registry: {0}")]
    Store(#[from] sled::Error),
}

/// What a worker needs besides its camera.
struct Runtime {
    store: Arc<Store>,
    ingest: IngestConfig,
    shutdown: Shutdown,
}

/// A running camera worker and how to stop it.
struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How long a stopping worker may take to store its open segment.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The current cameras and their workers.
pub struct CameraSet {
    current: RwLock<Arc<Vec<CameraHandle>>>,
    /// Serialises changes; holds the running workers.
    workers: tokio::sync::Mutex<HashMap<String, Worker>>,
    runtime: Runtime,
    registry: Registry,
}

impl CameraSet {
    /// The configuration file's cameras followed by the registry's (an added camera whose id
    /// the file also uses is skipped, with a warning). No worker runs until [`Self::start`].
    pub fn open(
        config: &[CameraSpec],
        registry: Registry,
        store: Arc<Store>,
        ingest: IngestConfig,
        shutdown: Shutdown,
    ) -> Arc<CameraSet> {
        let mut cams: Vec<CameraHandle> = config
            .iter()
            .map(|spec| CameraHandle::new(spec.clone(), Source::Config, None))
            .collect();
        for stored in registry.list() {
            if cams.iter().any(|c| c.spec.id == stored.id) {
                warn!(camera = %stored.id, "An added camera has the id of a camera in the configuration file; the file's camera is used");
                continue;
            }
            match stored.to_spec() {
                Ok(spec) => cams.push(CameraHandle::new(spec, Source::Added, Some(stored))),
                Err(problems) => {
                    warn!(camera = %stored.id, problems = %problems.join("; "), "An added camera is not usable; skipped")
                }
            }
        }
        Arc::new(CameraSet {
            current: RwLock::new(Arc::new(cams)),
            workers: tokio::sync::Mutex::new(HashMap::new()),
            runtime: Runtime {
                store,
                ingest,
                shutdown,
            },
            registry,
        })
    }

    /// Starts a worker for every camera.
    pub async fn start(&self) {
        let mut workers = self.workers.lock().await;
        for cam in self.snapshot().iter() {
            if !workers.contains_key(&cam.spec.id) {
                workers.insert(cam.spec.id.clone(), self.spawn_worker(cam));
            }
        }
    }

    /// The cameras now, in order (configuration file first, then added ones by id).
    pub fn snapshot(&self) -> Arc<Vec<CameraHandle>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The camera with this id.
    pub fn get(&self, id: &str) -> Option<CameraHandle> {
        self.snapshot().iter().find(|c| c.spec.id == id).cloned()
    }

    /// Whether a camera with this id exists now.
    pub fn contains(&self, id: &str) -> bool {
        self.snapshot().iter().any(|c| c.spec.id == id)
    }

    /// The live broadcast of a camera.
    pub fn live(&self, id: &str) -> Option<LiveFeed> {
        self.get(id).map(|c| c.live)
    }

    /// The ids now, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.snapshot().iter().map(|c| c.spec.id.clone()).collect();
        ids.sort();
        ids
    }

    /// The registry of added cameras.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn publish(&self, f: impl FnOnce(&mut Vec<CameraHandle>)) {
        let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**g).clone();
        f(&mut next);
        *g = Arc::new(next);
    }

    /// Adds a camera and starts streaming it.
    pub async fn add(&self, stored: StoredCamera) -> Result<CameraHandle, CameraError> {
        let spec = stored.to_spec().map_err(CameraError::Invalid)?;
        let mut workers = self.workers.lock().await;
        if self.contains(&spec.id) {
            return Err(CameraError::Exists(spec.id));
        }
        let reg = self.registry.clone();
        let s = stored.clone();
        blocking(move || reg.put(&s)).await?;
        let handle = CameraHandle::new(spec, Source::Added, Some(stored));
        self.publish(|v| v.push(handle.clone()));
        workers.insert(handle.spec.id.clone(), self.spawn_worker(&handle));
        info!(camera = %handle.spec.id, "Camera added; streaming starts");
        Ok(handle)
    }

    /// Stops and removes an added camera. Its stored video stays until evicted.
    pub async fn remove(&self, id: &str) -> Result<CameraHandle, CameraError> {
        let mut workers = self.workers.lock().await;
        let cam = self
            .get(id)
            .ok_or_else(|| CameraError::NotFound(id.to_owned()))?;
        if cam.source == Source::Config {
            return Err(CameraError::ConfigManaged(id.to_owned()));
        }
        if let Some(w) = workers.remove(id) {
            stop_worker(id, w).await;
        }
        let reg = self.registry.clone();
        let key = id.to_owned();
        if let Err(e) = blocking(move || reg.remove(&key)).await {
            // Put a worker back so the camera is not left listed but dead.
            workers.insert(id.to_owned(), self.spawn_worker(&cam));
            return Err(e);
        }
        self.publish(|v| v.retain(|c| c.spec.id != id));
        info!(camera = %id, "Camera removed; its stored video stays until evicted");
        Ok(cam)
    }

    /// Replaces an added camera's settings (same id) and restarts its worker.
    pub async fn replace(&self, stored: StoredCamera) -> Result<CameraHandle, CameraError> {
        let spec = stored.to_spec().map_err(CameraError::Invalid)?;
        let mut workers = self.workers.lock().await;
        let old = self
            .get(&spec.id)
            .ok_or_else(|| CameraError::NotFound(spec.id.clone()))?;
        if old.source == Source::Config {
            return Err(CameraError::ConfigManaged(spec.id));
        }
        let reg = self.registry.clone();
        let s = stored.clone();
        blocking(move || reg.put(&s)).await?;
        if let Some(w) = workers.remove(&spec.id) {
            stop_worker(&spec.id, w).await;
        }
        let handle = CameraHandle {
            health: Health::new(&spec.id, &spec.name, spec.url.as_str()),
            live: old.live.clone(),
            spec,
            source: Source::Added,
            stored: Some(stored),
        };
        let id = handle.spec.id.clone();
        self.publish(|v| {
            if let Some(slot) = v.iter_mut().find(|c| c.spec.id == id) {
                *slot = handle.clone();
            }
        });
        workers.insert(id.clone(), self.spawn_worker(&handle));
        info!(camera = %id, "Camera settings changed; its worker restarted");
        Ok(handle)
    }

    /// Updates what the registry holds for an added camera without touching its worker (e.g.
    /// a move waiting for the resident).
    pub async fn update_stored(&self, stored: StoredCamera) -> Result<(), CameraError> {
        let _workers = self.workers.lock().await;
        let id = stored.id.clone();
        match self.get(&id) {
            Some(c) if c.source == Source::Added => {}
            Some(_) => return Err(CameraError::ConfigManaged(id)),
            None => return Err(CameraError::NotFound(id)),
        }
        let reg = self.registry.clone();
        let s = stored.clone();
        blocking(move || reg.put(&s)).await?;
        self.publish(|v| {
            if let Some(slot) = v.iter_mut().find(|c| c.spec.id == id) {
                slot.stored = Some(stored);
            }
        });
        Ok(())
    }

    /// Waits for every worker to stop (they stop on the daemon's ingest shutdown signal, each
    /// storing its open segment).
    pub async fn join_all(&self) {
        let workers: Vec<(String, Worker)> = self.workers.lock().await.drain().collect();
        for (id, w) in workers {
            if tokio::time::timeout(STOP_TIMEOUT, w.task).await.is_err() {
                warn!(camera = %id, "Camera worker did not stop within {STOP_TIMEOUT:?}");
            }
        }
    }

    fn spawn_worker(&self, cam: &CameraHandle) -> Worker {
        let (stop, stopped) = oneshot::channel::<()>();
        let (trigger, own) = Shutdown::new();
        let global = self.runtime.shutdown.clone();
        let worker = CameraWorker::new(
            cam.spec.clone(),
            self.runtime.ingest.clone(),
            cam.health.clone(),
            cam.live.clone(),
            self.runtime.store.clone(),
            own,
        );
        let task = tokio::spawn(
            async move {
                let run = worker.run();
                tokio::pin!(run);
                tokio::select! {
                    biased;
                    _ = &mut run => return,
                    _ = global.wait() => {}
                    // Sent by remove/edit, or dropped with the set: stop either way.
                    _ = stopped => {}
                }
                trigger.trigger();
                run.await;
            }
            .instrument(tracing::info_span!("camera", id = %cam.spec.id)),
        );
        Worker { stop, task }
    }
}

async fn stop_worker(id: &str, w: Worker) {
    let _ = w.stop.send(());
    if tokio::time::timeout(STOP_TIMEOUT, w.task).await.is_err() {
        warn!(camera = %id, "Camera worker did not stop within {STOP_TIMEOUT:?}");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, sled::Error> + Send + 'static,
) -> Result<T, CameraError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CameraError::Store(sled::Error::ReportableBug(e.to_string())))?
        .map_err(CameraError::Store)
}

/// A camera id made from a display name (`Front Door` → `front-door`), or `fallback` when the
/// name gives none. Not checked for uniqueness (see [`unique_id`]).
pub fn id_from_name(name: Option<&str>, fallback: &str) -> String {
    let base: String = name
        .unwrap_or("camera")
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let base = base
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let id: String = base.chars().take(32).collect();
    let id = id.trim_end_matches('-').to_owned();
    if crate::ingest::spec::valid_camera_id(&id) {
        id
    } else {
        fallback.to_owned()
    }
}

/// `base`, or `base-2`, `base-3`… — the first not in `taken` (kept within 32 characters).
pub fn unique_id(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = 32usize.saturating_sub(suffix.len()).min(base.len());
            format!("{}{suffix}", &base[..keep])
        })
        .find(|c| !taken.iter().any(|t| t == c))
        .expect("an unused id exists")
}

/// The IP literal a URL names, when it names one.
pub fn url_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        // rtsp: is not a "special" scheme to the URL standard: IPv4 hosts come back as names.
        url::Host::Domain(d) => d.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str) -> StoredCamera {
        StoredCamera {
            id: id.into(),
            name: id.into(),
            // Nothing listens on port 1: the worker keeps failing and retrying, which is all
            // these tests need.
            url: "rtsp://127.0.0.1:1/x".into(),
            substream_url: None,
            username: None,
            password: None,
            record: crate::ingest::spec::Record::Main,
            audio: false,
            transport: crate::ingest::spec::Transport::Tcp,
            address: None,
            onvif: None,
            added_ms: 0,
        }
    }

    #[tokio::test]
    async fn set_changes_are_persisted_and_config_cameras_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(
            dir.path(),
            crate::store::StoreOptions {
                quota_bytes: 16 << 20,
                retention: Duration::from_secs(3600),
                cache_capacity: 1 << 20,
            },
        )
        .unwrap();
        let store = Arc::new(store);
        // A camera of the configuration file, as config validation hands it over.
        let porch = crate::ingest::spec::CameraSpec {
            id: "porch".into(),
            name: "porch".into(),
            url: "rtsp://127.0.0.1:1/p".parse().unwrap(),
            substream_url: None,
            credentials: None,
            record: crate::ingest::spec::Record::Main,
            audio: false,
            transport: crate::ingest::spec::Transport::Tcp,
        };
        let config_cameras = vec![porch];
        let (trigger, shutdown) = Shutdown::new();
        let open = |store: &Arc<Store>, shutdown: &Shutdown| {
            CameraSet::open(
                &config_cameras,
                Registry::open(store.db()).unwrap(),
                store.clone(),
                crate::ingest::IngestConfig::default(),
                shutdown.clone(),
            )
        };
        let set = open(&store, &shutdown);
        set.start().await;
        set.add(stored("garage")).await.unwrap();
        assert!(matches!(
            set.add(stored("garage")).await,
            Err(CameraError::Exists(_))
        ));
        assert!(matches!(
            set.add(stored("porch")).await,
            Err(CameraError::Exists(_))
        ));
        assert!(matches!(
            set.remove("porch").await,
            Err(CameraError::ConfigManaged(_))
        ));
        let mut bad = stored("shed");
        bad.url = "http://x/".into();
        assert!(matches!(set.add(bad).await, Err(CameraError::Invalid(_))));
        assert_eq!(set.ids(), ["garage", "porch"]);
        assert!(set.live("garage").is_some());
        let mut edited = stored("garage");
        edited.name = "Garage".into();
        set.replace(edited).await.unwrap();
        assert_eq!(set.get("garage").unwrap().spec.name, "Garage");
        set.add(stored("shed")).await.unwrap();
        set.remove("shed").await.unwrap();
        assert!(!set.contains("shed"));
        trigger.trigger();
        set.join_all().await;

        // Reopened: the file's camera plus what was added and not removed, as edited.
        let set = open(&store, &Shutdown::new().1);
        assert_eq!(set.ids(), ["garage", "porch"]);
        assert_eq!(set.get("garage").unwrap().spec.name, "Garage");
        assert_eq!(set.get("garage").unwrap().source, Source::Added);
        assert_eq!(set.get("porch").unwrap().source, Source::Config);
    }

    #[test]
    fn ids_from_names() {
        assert_eq!(id_from_name(Some("Front Door"), "x"), "front-door");
        assert_eq!(
            id_from_name(Some("AXIS M3106-L Mk II"), "x"),
            "axis-m3106-l-mk-ii"
        );
        assert_eq!(id_from_name(Some("日本"), "cam-abc"), "cam-abc");
        assert_eq!(id_from_name(None, "x"), "camera");
        assert!(crate::ingest::spec::valid_camera_id(&id_from_name(
            Some(&"x".repeat(80)),
            "f"
        )));
    }

    #[test]
    fn unique_ids_count_up_and_stay_short() {
        let taken = vec!["porch".to_owned(), "porch-2".to_owned()];
        assert_eq!(unique_id("porch", &taken), "porch-3");
        assert_eq!(unique_id("garage", &taken), "garage");
        let long = "a".repeat(32);
        let u = unique_id(&long, std::slice::from_ref(&long));
        assert_eq!(u.len(), 32);
        assert!(u.ends_with("-2"));
    }
}
