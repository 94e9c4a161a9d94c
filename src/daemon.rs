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
use crate::sharing::Sharing;
use crate::store::{Store, StoreOptions};

/// Logs a task that panicked (or was cancelled) while the daemon waited for it to finish.
fn log_task_end(group: &str, r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            error!(group, error = %e, "A task panicked");
        } else {
            warn!(group, error = %e, "A task was cancelled");
        }
    }
}

/// Creates the data directory (0700) and a fresh API token (0600, written durably).
///
/// The directory holds camera passwords (in sled), keys and the token: it is made 0700 even if
/// someone else created it wider, and everything the daemon creates from now on is private
/// (umask 077), whoever started it and with whatever umask.
fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    crate::fsutil::create_private_dir(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let mode = std::fs::metadata(data_dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        warn!(data_dir = %data_dir.display(), mode = format!("{mode:o}"), "Data directory was open to others; made 0700");
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", data_dir.display()))?;
    }
    tighten_existing(data_dir);
    let token = crate::secret::random_token();
    crate::fsutil::write_atomic(&crate::api::token_path(data_dir), token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Files an older run (or another tool) left readable by others under the data directory are
/// made private (directories 0700, files without group/other bits): the sled index (camera
/// passwords), identity, tokens. The segment tree is not walked (tens of thousands of files on
/// a full card; the 0700 data directory already closes it).
fn tighten_existing(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let private = if m.is_dir() { 0o700 } else { mode & 0o700 };
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(private));
        }
        if m.is_dir() && e.file_name() != "segments" {
            tighten_existing(&e.path());
        }
    }
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
    let health = Arc::new(crate::reporting::BoxHealth {
        store: store.clone(),
        cameras: cameras.clone(),
        sharing: sharing_cell.clone(),
    });
    let mut sharing_options = cfg.sharing.clone();
    if report.index_moved_to.is_some() {
        // The replay record went with the damaged index: a request issued before now may have
        // been seen already, so none is accepted (the center asks again with a fresh one).
        sharing_options.reject_issued_before = Some(crate::clock::now_ms() / 1000);
        warn!("Replay record lost with the index; requests issued before now will be refused");
    }
    let sharing = open_sharing(&store, &cameras, sharing_options)?;
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
    // Descriptors: the soft limit raised to the hard one, the listeners' budgets sized so the
    // store, cameras (at least 16 counted) and the city link keep theirs.
    let nofile = crate::api::listen::raise_nofile_limit();
    let listeners = Arc::new(crate::api::listen::Listeners::new(
        nofile,
        cameras.snapshot().len().max(16),
    ));
    info!(nofile, budgets = ?listeners.budgets, "Connection budgets");
    let state = Arc::new(crate::api::ApiState {
        store: store.clone(),
        cameras: cameras.clone(),
        discovery: scanner.clone(),
        started: Instant::now(),
        api_token: token,
        link: link.clone(),
        sharing: sharing.clone(),
        listeners: listeners.clone(),
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
        crate::reporting::run_event_watcher(
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
        while let Some(r) = sharing_tasks.join_next().await {
            log_task_end("sharing", r);
        }
    })
    .await;
    ingest_trigger.trigger();
    let drain = async {
        cameras.join_all().await;
        while let Some(r) = ingest.join_next().await {
            log_task_end("ingest", r);
        }
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
    let audit = crate::audit::AuditLog::open_current(store.db(), crate::clock::now_ms())
        .context("cannot open the audit log")?;
    let audit = Arc::new(audit);
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
