//! The daemon: opens the store, starts one worker per camera, the retention sweeper and the
//! control API, and shuts them down in a fixed order.
//!
//! Shutdown (SIGINT or SIGTERM): ingest stops first (each camera closes and stores its open
//! segment), then the store is flushed, then the city uplink publishes its offline status and
//! drains its outbox until `uplink.drain_timeout`, then the control API stops. A second signal exits at
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
use crate::sharing::Sharing;
use crate::store::{Store, StoreOptions};
use crate::uplink::messages::{CameraReport, EventKind, HealthReport, SharingModes, StorageReport};
use crate::uplink::{HealthSource, Uplink, UplinkHandle};

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
    /// The city link, when `[uplink]` is configured.
    pub uplink: Option<UplinkHandle>,
    /// Consent, requests, grants and the audit log.
    pub sharing: Arc<Sharing>,
}

/// The daemon's contribution to heartbeats: camera health and storage, nothing that names an
/// address (ids, state words and stream parameters only).
struct DaemonHealth {
    store: Arc<Store>,
    cameras: Vec<CameraHandle>,
    /// Set once sharing is open (it needs the uplink, which needs this).
    sharing: Arc<std::sync::OnceLock<Arc<Sharing>>>,
}

impl HealthSource for DaemonHealth {
    fn report(&self) -> HealthReport {
        let usage = self.store.usage();
        let sharing = self.sharing.get();
        let rules: std::collections::HashMap<String, crate::consent::CameraRules> = sharing
            .map(|s| s.rules().into_iter().collect())
            .unwrap_or_default();
        HealthReport {
            paused: sharing.is_some_and(|s| s.is_paused()),
            cameras: self
                .cameras
                .iter()
                .map(|c| {
                    let s = c.health.snapshot();
                    CameraReport {
                        id: s.id,
                        state: state_word(s.state),
                        codec: s.codec,
                        width: s.width,
                        height: s.height,
                        fps: s.fps,
                        bitrate_bps: s.bitrate_bps,
                        last_frame_ts: s.last_frame_ms,
                        // The modes only: never limits, hours or schedules.
                        sharing: rules
                            .get(&c.spec.id)
                            .map(|r| SharingModes {
                                live: mode_word(r.live),
                                clips: mode_word(r.clips),
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect(),
            storage: StorageReport {
                used_bytes: usage.used_bytes,
                quota_bytes: usage.quota_bytes,
                oldest_ts: usage.oldest_ms,
            },
            audit: sharing
                .map(|s| {
                    let head = s.audit().latest();
                    crate::uplink::messages::AuditAnchor {
                        seq: head.seq,
                        hash: head.hash,
                    }
                })
                .unwrap_or_default(),
            grants_active: sharing.map_or(0, |s| s.grants_active()),
        }
    }
}

fn mode_word(m: crate::consent::Mode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn state_word(s: crate::ingest::health::CameraState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Watches camera health and storage once a second and queues an event on each change:
/// `camera_up` / `camera_down` when a camera starts or stops streaming, `storage_full` when the
/// store reaches its quota (and evicts from then on).
async fn event_watcher(
    uplink: UplinkHandle,
    cameras: Vec<CameraHandle>,
    store: Arc<Store>,
    shutdown: Shutdown,
) {
    use crate::ingest::health::CameraState;
    let mut streaming: Vec<bool> = vec![false; cameras.len()];
    let mut full = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let mut events = Vec::new();
        for (i, c) in cameras.iter().enumerate() {
            let s = c.health.snapshot();
            let now = s.state == CameraState::Streaming;
            if now != streaming[i] {
                streaming[i] = now;
                events.push(if now {
                    EventKind::CameraUp { camera: s.id }
                } else {
                    EventKind::CameraDown {
                        camera: s.id,
                        state: state_word(s.state),
                    }
                });
            }
        }
        let st = store.clone();
        let usage = match tokio::task::spawn_blocking(move || st.usage()).await {
            Ok(u) => u,
            Err(_) => continue,
        };
        // 98 % because eviction keeps the store just under the quota; 90 % re-arms.
        let now_full = usage.used_bytes >= usage.quota_bytes / 50 * 49;
        if now_full && !full {
            events.push(EventKind::StorageFull {
                used_bytes: usage.used_bytes,
                quota_bytes: usage.quota_bytes,
            });
        }
        full = if full {
            usage.used_bytes >= usage.quota_bytes / 10 * 9
        } else {
            now_full
        };
        if events.is_empty() {
            continue;
        }
        let up = uplink.clone();
        let r = tokio::task::spawn_blocking(move || {
            for e in events {
                if let Err(err) = up.event(e) {
                    warn!(error = %err, "Could not queue an event for the city");
                }
            }
        })
        .await;
        if let Err(e) = r {
            warn!(error = %e, "Event queueing panicked");
        }
    }
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
    let (uplink_trigger, uplink_shutdown) = Shutdown::new();
    let mut uplink_task = None;
    let mut uplink_handle = None;
    let sharing_cell = Arc::new(std::sync::OnceLock::new());
    if let Some(settings) = cfg.uplink.clone() {
        let health = Arc::new(DaemonHealth {
            store: store.clone(),
            cameras: cameras.clone(),
            sharing: sharing_cell.clone(),
        });
        let (uplink, handle) =
            Uplink::open(settings, store.db(), health).context("cannot start the city uplink")?;
        info!(gateway = %handle.gateway_id(), "City uplink configured");
        // Tells the center the box (re)started; queued like every event, so it arrives
        // whenever the link comes up. A short blocking sled flush at startup.
        if let Err(e) = handle.event(EventKind::Started {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }) {
            warn!(error = %e, "Could not queue the started event");
        }
        uplink_task = Some(tokio::spawn(
            uplink
                .run(uplink_shutdown)
                .instrument(tracing::info_span!("uplink")),
        ));
        uplink_handle = Some(handle);
    }
    let sharing = open_sharing(&cfg, &store, &cameras, uplink_handle.clone())?;
    let _ = sharing_cell.set(sharing.clone());
    let state = Arc::new(DaemonState {
        store: store.clone(),
        cameras: cameras.clone(),
        started: Instant::now(),
        api_token: token,
        uplink: uplink_handle.clone(),
        sharing: sharing.clone(),
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
    let (sharing_trigger, sharing_shutdown) = Shutdown::new();
    let mut sharing_tasks = JoinSet::new();
    sharing_tasks.spawn(
        sharing
            .clone()
            .run_intake(sharing_shutdown.clone())
            .instrument(tracing::info_span!("requests")),
    );
    sharing_tasks.spawn(
        sharing_ticker(sharing.clone(), sharing_shutdown)
            .instrument(tracing::info_span!("consent")),
    );
    if let Some(handle) = uplink_handle.clone() {
        ingest.spawn(
            event_watcher(
                handle,
                cameras.clone(),
                store.clone(),
                ingest_shutdown.clone(),
            )
            .instrument(tracing::info_span!("events")),
        );
    }
    info!(api = %api_addr, cameras = cameras.len(), version = env!("CARGO_PKG_VERSION"), "Porchlight running");
    crate::systemd::notify("READY=1");
    let watchdog = tokio::spawn(crate::systemd::watchdog());

    tokio::select! {
        r = wait_for_signal() => r?,
        r = &mut api_task => {
            error!(result = ?r, "Control API stopped unexpectedly");
        }
    }
    crate::systemd::notify("STOPPING=1");
    info!("Shutting down: ending live feeds, stopping ingest");
    sharing.stop_all();
    sharing_trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while sharing_tasks.join_next().await.is_some() {}
    })
    .await;
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
    if let (Some(task), Some(settings)) = (uplink_task, cfg.uplink.as_ref()) {
        info!("Shutting down: draining the city uplink");
        uplink_trigger.trigger();
        let deadline = settings.drain_timeout + Duration::from_secs(3);
        tokio::select! {
            r = tokio::time::timeout(deadline, task) => if r.is_err() {
                warn!("City uplink did not stop within {deadline:?}");
            },
            r = wait_for_signal() => {
                r?;
                warn!("Second signal: exiting at once");
                std::process::exit(130);
            }
        }
    }
    api_trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    watchdog.abort();
    info!("Stopped");
    Ok(())
}

/// Opens the audit log (marking a fresh or rebuilt chain) and the sharing service.
fn open_sharing(
    cfg: &Validated,
    store: &Arc<Store>,
    cameras: &[CameraHandle],
    uplink: Option<UplinkHandle>,
) -> anyhow::Result<Arc<Sharing>> {
    use crate::audit::{Actor, AuditKind, AuditLog, NewEntry};
    // Which tree holds the current chain: `audit`, or a newer one started because an older
    // chain could not be read (kept untouched for forensics — never a crash loop).
    let meta = store.db().open_tree("audit.meta")?;
    let current = meta
        .get("current")?
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
        .unwrap_or_else(|| "audit".to_owned());
    let (audit, start_reason) = match AuditLog::open(store.db().open_tree(&current)?) {
        // Empty: first start, or the store rebuilt a damaged index (the old chain is kept in
        // the moved-aside index for offline checks).
        Ok(a) => (a, serde_json::json!({"reason": "new"})),
        Err(e) => {
            let next = format!("audit.{}", crate::ingest::now_ms());
            error!(tree = %current, error = %e, new_tree = %next, "Audit chain unreadable; kept as is, starting a new chain");
            meta.insert("current", next.as_bytes())?;
            meta.flush()?;
            let a = AuditLog::open(store.db().open_tree(&next)?)
                .context("cannot start a new audit chain")?;
            let why = serde_json::json!({
                "reason": "previous_chain_unreadable",
                "previous_tree": current,
                "error": e.to_string(),
            });
            (a, why)
        }
    };
    let audit = Arc::new(audit);
    if audit.is_empty() {
        audit
            .append(
                NewEntry::new(
                    crate::ingest::now_ms(),
                    AuditKind::LogStarted,
                    Actor::Gateway,
                )
                .detail(start_reason),
            )
            .context("cannot start the audit log")?;
    }
    let verifier = match (&cfg.center_request_key, &uplink) {
        (Some(pem), Some(up)) => Some(
            crate::sharing::request::RequestVerifier::from_pem(
                pem,
                up.gateway_id(),
                Default::default(),
            )
            .context("center request key")?,
        ),
        _ => None,
    };
    let feeds = cameras
        .iter()
        .map(|c| (c.spec.id.clone(), c.live.clone()))
        .collect();
    let box_key = cfg.uplink.as_ref().map(|u| u.key_file.clone());
    Sharing::open(
        store.clone(),
        box_key,
        audit,
        uplink,
        verifier,
        feeds,
        cfg.sharing.clone(),
    )
    .context("cannot open the consent state")
}

/// Expires pending requests and grants on time, once a second.
async fn sharing_ticker(sharing: Arc<Sharing>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let s = sharing.clone();
        match tokio::task::spawn_blocking(move || s.tick()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "Consent expiry failed"),
            Err(e) => warn!(error = %e, "Consent expiry panicked"),
        }
    }
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
