//! The daemon: opens the store, starts one worker per camera (through
//! [`crate::cameras::CameraSet`], which also adds, edits and removes cameras at run time), the
//! camera discovery, the retention sweeper and the control API, and shuts them down in a fixed
//! order.
//!
//! Shutdown (SIGINT or SIGTERM): ingest stops first (each camera closes and stores its open
//! segment), then the store is flushed, then the city uplink publishes its offline status and
//! drains its outbox until `uplink.drain_timeout`, then the control API stops. A second signal exits at
//! once; everything acknowledged is already durable, so that loses at most the open segment.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::shutdown::Shutdown;
use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

use crate::cameras::CameraSet;
use crate::config::Validated;
use crate::protocol::messages::{
    CameraReport, EventKind, HealthReport, SharingModes, StorageReport,
};
use crate::sharing::Sharing;
use crate::store::{Store, StoreOptions};
use crate::uplink::HealthSource;

/// The daemon's contribution to heartbeats: camera health and storage, nothing that names an
/// address (ids, state words and stream parameters only).
struct DaemonHealth {
    store: Arc<Store>,
    cameras: Arc<CameraSet>,
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
                .snapshot()
                .iter()
                .map(|c| {
                    let s = c.health.snapshot();
                    CameraReport {
                        id: s.id,
                        state: s.state.as_str().to_owned(),
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
                                live: r.live.as_str().to_owned(),
                                clips: r.clips.as_str().to_owned(),
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
                    crate::protocol::messages::AuditAnchor {
                        seq: head.seq,
                        hash: head.hash,
                    }
                })
                .unwrap_or_default(),
            grants_active: sharing.map_or(0, |s| s.grants_active()),
        }
    }
}

/// Watches camera health and storage once a second and queues an event on each change:
/// `camera_up` / `camera_down` when a camera starts or stops streaming, `storage_full` when the
/// store reaches its quota (and evicts from then on).
async fn event_watcher(
    link: Arc<crate::pairing::link::CityLink>,
    cameras: Arc<CameraSet>,
    store: Arc<Store>,
    shutdown: Shutdown,
) {
    use crate::ingest::health::CameraState;
    // By id: cameras come and go at run time. A removed camera sends no event (it is gone
    // from the heartbeat); an added one sends camera_up once it streams.
    let mut streaming: std::collections::HashMap<String, bool> = Default::default();
    let mut full = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let mut events = Vec::new();
        let current = cameras.snapshot();
        streaming.retain(|id, _| current.iter().any(|c| &c.spec.id == id));
        for c in current.iter() {
            let s = c.health.snapshot();
            let now = s.state == CameraState::Streaming;
            let was = streaming.entry(s.id.clone()).or_insert(false);
            if now != *was {
                *was = now;
                events.push(if now {
                    EventKind::CameraUp { camera: s.id }
                } else {
                    EventKind::CameraDown {
                        camera: s.id,
                        state: s.state.as_str().to_owned(),
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
        // Not paired: nobody to tell.
        let Some(up) = link.uplink() else { continue };
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

/// Creates the data directory (0700) and a fresh API token (0600, written durably).
fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<String> {
    crate::fsutil::create_private_dir(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let token = crate::secret::random_token();
    crate::fsutil::write_atomic(&crate::api::token_path(data_dir), token.as_bytes(), 0o600)?;
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

    let registry = crate::cameras::registry::Registry::open(store.db())
        .context("cannot open the camera registry")?;
    let cameras = CameraSet::open(
        &cfg.cameras,
        registry,
        store.clone(),
        cfg.ingest.clone(),
        ingest_shutdown.clone(),
    );
    let scanner = crate::cameras::scanner::Scanner::new(cfg.discovery.clone(), cameras.clone());
    let sharing_cell = Arc::new(std::sync::OnceLock::new());
    let health = Arc::new(DaemonHealth {
        store: store.clone(),
        cameras: cameras.clone(),
        sharing: sharing_cell.clone(),
    });
    let sharing = open_sharing(&store, &cameras, cfg.sharing.clone())?;
    let _ = sharing_cell.set(sharing.clone());
    let link = crate::pairing::link::CityLink::new(
        cfg.data_dir.clone(),
        store.clone(),
        health,
        sharing.clone(),
        cfg.uplink_tunables.clone(),
        cfg.pairing.clone(),
        cfg.uplink
            .clone()
            .map(|settings| crate::pairing::link::Configured {
                settings,
                request_key: cfg.center_request_key.clone(),
            }),
    );
    link.start_at_boot().await?;
    sharing
        .end_stale_live_grants()
        .context("cannot end the live grants of the previous run")?;
    let leftovers = sharing.clean_held();
    if leftovers > 0 {
        info!(
            files = leftovers,
            "Deleted clip pieces no queued message needs"
        );
    }
    let state = Arc::new(crate::api::ApiState {
        store: store.clone(),
        cameras: cameras.clone(),
        discovery: scanner.clone(),
        started: Instant::now(),
        api_token: token,
        link: link.clone(),
        sharing: sharing.clone(),
    });

    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the control API", cfg.api_listen))?;
    let api_addr: SocketAddr = listener.local_addr()?;
    let mut api_task = tokio::spawn(
        crate::api::serve(listener, state.clone(), api_shutdown.clone())
            .instrument(tracing::info_span!("api")),
    );
    // The resident web UI (LAN); stops with the control API, last.
    let web_task =
        crate::web::spawn(cfg.web.as_ref(), &cfg.data_dir, state.clone(), api_shutdown).await;

    let mut ingest = JoinSet::new();
    cameras.start().await;
    ingest.spawn(
        scanner
            .clone()
            .run(ingest_shutdown.clone())
            .instrument(tracing::info_span!("discovery")),
    );
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
    ingest.spawn(
        event_watcher(
            link.clone(),
            cameras.clone(),
            store.clone(),
            ingest_shutdown.clone(),
        )
        .instrument(tracing::info_span!("events")),
    );
    info!(api = %api_addr, cameras = cameras.snapshot().len(), version = env!("CARGO_PKG_VERSION"), "Porchlight running");
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
    let drain = async {
        cameras.join_all().await;
        while ingest.join_next().await.is_some() {}
    };
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
    tokio::select! {
        _ = link.shutdown() => {}
        r = wait_for_signal() => {
            r?;
            warn!("Second signal: exiting at once");
            std::process::exit(130);
        }
    }
    api_trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    if let Some(web) = web_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), web).await;
    }
    watchdog.abort();
    info!("Stopped");
    Ok(())
}

/// Opens the audit log (marking a fresh or rebuilt chain) and the sharing service.
fn open_sharing(
    store: &Arc<Store>,
    cameras: &Arc<CameraSet>,
    options: crate::sharing::SharingOptions,
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
            let next = format!("audit.{}", crate::clock::now_ms());
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
                    crate::clock::now_ms(),
                    AuditKind::LogStarted,
                    Actor::Gateway,
                )
                .detail(start_reason),
            )
            .context("cannot start the audit log")?;
    }
    let feeds = cameras.clone();
    Sharing::open(store.clone(), audit, feeds, options).context("cannot open the consent state")
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
        let now = crate::clock::now_ms();
        match tokio::task::spawn_blocking(move || s.enforce_retention(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(evicted = n, "Retention removed old segments"),
            Ok(Err(e)) => warn!(error = %e, "Retention sweep failed"),
            Err(e) => warn!(error = %e, "Retention sweep panicked"),
        }
    }
}
