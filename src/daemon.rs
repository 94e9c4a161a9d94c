//! The daemon: opens the store, starts one worker per camera, the retention sweeper and the
//! control API, and shuts them down in a fixed order.
//!
//! Shutdown (SIGINT or SIGTERM): ingest stops first (each camera closes and stores its open
//! segment), then the store is flushed, then the control API stops. A second signal exits at
//! once; everything acknowledged is already durable, so that loses at most the open segment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

use crate::config::{CameraSpec, Validated};
use crate::ingest::health::Health;
use crate::ingest::live::LiveFeed;
use crate::ingest::CameraWorker;
use crate::store::{Store, StoreOptions};

/// A signal that long-lived tasks race every await against.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the trigger was dropped, which also means: stop.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

impl ShutdownTrigger {
    /// Tells every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// One camera as the rest of the daemon sees it.
#[derive(Clone)]
pub struct CameraHandle {
    /// Its validated configuration.
    pub spec: CameraSpec,
    /// Its health, updated by its worker.
    pub health: Health,
    /// Its live broadcast.
    pub live: LiveFeed,
}

/// State shared by the control API and the daemon's tasks.
pub struct DaemonState {
    /// The segment store.
    pub store: Arc<Store>,
    /// The cameras, in configuration order.
    pub cameras: Vec<CameraHandle>,
    /// When the daemon started.
    pub started: Instant,
    /// The token every API request must carry.
    pub api_token: String,
}

impl DaemonState {
    /// The camera with this id.
    pub fn camera(&self, id: &str) -> Option<&CameraHandle> {
        self.cameras.iter().find(|c| c.spec.id == id)
    }
}

/// Path of the API token file inside the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

/// Creates the data directory (0700) and a fresh API token (0600).
fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("cannot read /dev/urandom for the API token")?;
    let token = hex::encode(raw);
    let path = token_path(data_dir);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: Validated) -> anyhow::Result<()> {
    let token = prepare_data_dir(&cfg.data_dir)?;
    let store_dir = cfg.data_dir.clone();
    let opts = StoreOptions {
        quota_bytes: cfg.quota_bytes,
        retention: cfg.retention,
        cache_capacity: cfg.index_cache_bytes,
    };
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&store_dir, opts))
        .await
        .context("store open panicked")?
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    if report.is_clean() {
        info!(data_dir = %cfg.data_dir.display(), segments = report.segments, used_bytes = report.used_bytes, "Store open");
    } else {
        warn!(data_dir = %cfg.data_dir.display(), report = ?report, "Store open after repairs");
    }
    let store = Arc::new(store);

    let (ingest_trigger, ingest_shutdown) = Shutdown::new();
    let (api_trigger, api_shutdown) = Shutdown::new();

    let cameras: Vec<CameraHandle> = cfg
        .cameras
        .iter()
        .map(|spec| CameraHandle {
            health: Health::new(&spec.id, &spec.name, spec.url.as_str()),
            live: LiveFeed::new(),
            spec: spec.clone(),
        })
        .collect();
    let state = Arc::new(DaemonState {
        store: store.clone(),
        cameras: cameras.clone(),
        started: Instant::now(),
        api_token: token,
    });

    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the control API", cfg.api_listen))?;
    let api_addr: SocketAddr = listener.local_addr()?;
    let mut api_task = tokio::spawn(
        crate::api::serve(listener, state.clone(), api_shutdown)
            .instrument(tracing::info_span!("api")),
    );

    let mut ingest = JoinSet::new();
    for cam in &cameras {
        let worker = CameraWorker::new(
            cam.spec.clone(),
            cfg.ingest.clone(),
            cam.health.clone(),
            cam.live.clone(),
            store.clone(),
            ingest_shutdown.clone(),
        );
        ingest.spawn(
            worker
                .run()
                .instrument(tracing::info_span!("camera", id = %cam.spec.id)),
        );
    }
    ingest.spawn(
        retention_sweeper(store.clone(), ingest_shutdown.clone())
            .instrument(tracing::info_span!("retention")),
    );
    info!(api = %api_addr, cameras = cameras.len(), version = env!("CARGO_PKG_VERSION"), "Porchlight running");

    tokio::select! {
        r = wait_for_signal() => r?,
        r = &mut api_task => {
            error!(result = ?r, "Control API stopped unexpectedly");
        }
    }
    info!("Shutting down: stopping ingest");
    ingest_trigger.trigger();
    let drain = async { while ingest.join_next().await.is_some() {} };
    tokio::select! {
        _ = drain => {}
        r = wait_for_signal() => {
            r?;
            warn!("Second signal: exiting at once");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(Duration::from_secs(20)) => warn!("Ingest did not stop within 20s"),
    }
    let s = store.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || s.flush()).await? {
        error!(error = %e, "Store flush failed at shutdown");
    }
    api_trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    info!("Stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Deletes segments past retention once a minute.
async fn retention_sweeper(store: Arc<Store>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let now = crate::ingest::now_ms();
        match tokio::task::spawn_blocking(move || s.enforce_retention(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(evicted = n, "Retention removed old segments"),
            Ok(Err(e)) => warn!(error = %e, "Retention sweep failed"),
            Err(e) => warn!(error = %e, "Retention sweep panicked"),
        }
    }
}
