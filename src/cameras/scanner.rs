//! The daemon's periodic discovery: which cameras are on the LAN now, whether each is already
//! added, and following added cameras whose address changed.
//!
//! One run is [`crate::discovery::discover`] (WS-Discovery + mDNS, plus the configured unicast
//! hosts and ranges) on a blocking thread. Runs happen at start, every `[discovery] interval`,
//! and when the resident asks (`POST /api/v1/discovery/scan`). Only one run is in flight at a
//! time; a request that arrives during a run waits for it and shares its result, and a request
//! within [`MIN_GAP`] of the last run gets that run's result, so the resident pressing "scan"
//! ten times sends one probe, not ten.
//!
//! The latest result is kept in memory only (it holds addresses of devices in the home; it is
//! never persisted, logged above debug level, or sent to the center).
//!
//! After each run, every added camera with an ONVIF endpoint reference is looked for in the
//! result; one found at another address is followed or marked pending by the rule in
//! [`super::moves`].

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, info, warn};

use super::moves::{self, MoveDecision, SerialCheck, Subnet};
use super::registry::{PendingMove, StoredCamera};
use super::{url_ip, CameraSet, Source};
use crate::clock::now_ms;
use crate::discovery::onvif::{self, DeviceReport, OnvifError};
use crate::discovery::{self, DiscoveredCamera};
use crate::shutdown::Shutdown;

/// `[discovery]` after validation.
#[derive(Clone, Debug)]
pub struct DiscoverySettings {
    /// Periodic discovery on.
    pub enabled: bool,
    /// Between runs.
    pub interval: Duration,
    /// Listening window of one run.
    pub timeout: Duration,
    /// What one run does.
    pub options: crate::discovery::DiscoverOptions,
}

/// Least time between the end of one run and the start of the next.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// Time allowed for each ONVIF request made by discovery and adding.
pub const ONVIF_TIMEOUT: Duration = Duration::from_secs(10);

/// One discovery run's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScanResult {
    /// When the run started (UTC ms).
    pub started_ms: i64,
    /// When it ended (UTC ms).
    pub finished_ms: i64,
    /// Why it could not run, in plain words (e.g. no usable interface).
    pub error: Option<String>,
    /// What answered.
    pub cameras: Vec<DiscoveredCamera>,
}

/// Periodic and on-demand discovery.
pub struct Scanner {
    settings: DiscoverySettings,
    cameras: Arc<CameraSet>,
    latest: Mutex<Option<ScanResult>>,
    running: tokio::sync::Mutex<()>,
}

impl Scanner {
    /// A scanner for `cameras` with `settings`.
    pub fn new(settings: DiscoverySettings, cameras: Arc<CameraSet>) -> Arc<Scanner> {
        Arc::new(Scanner {
            settings,
            cameras,
            latest: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether periodic discovery is on.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The latest result, if any run finished.
    pub fn latest(&self) -> Option<ScanResult> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs discovery now, or waits for the run in flight and returns its result. A run that
    /// ended less than [`MIN_GAP`] ago is returned as is: asking in a loop never makes the box
    /// probe the network back to back.
    pub async fn scan(&self) -> ScanResult {
        let asked = now_ms();
        let _running = self.running.lock().await;
        if let Some(r) = self.latest() {
            let gap = i64::try_from(MIN_GAP.as_millis()).unwrap_or(i64::MAX);
            if r.started_ms >= asked || r.finished_ms.saturating_add(gap) > now_ms() {
                return r;
            }
        }
        let opts = self.settings.options.clone();
        let started_ms = now_ms();
        let found = tokio::task::spawn_blocking(move || discovery::discover(&opts)).await;
        let (cameras, error) = match found {
            Ok(Ok(c)) => (c, None),
            Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
            Err(e) => (Vec::new(), Some(format!("discovery panicked: {e}"))),
        };
        debug!(found = cameras.len(), error = ?error, "Discovery run finished.");
        let result = ScanResult {
            started_ms,
            finished_ms: now_ms(),
            error,
            cameras,
        };
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
        if result.error.is_none() {
            self.follow_moves(&result.cameras).await;
        }
        result
    }

    /// Discovery at start and every interval, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        if !self.settings.enabled {
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                r = self.scan() => {
                    if let Some(e) = r.error {
                        warn!(error = %e, "Camera discovery could not run");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// The discovered camera with this short id in the latest result.
    pub fn find(&self, discovery_id: &str) -> Option<DiscoveredCamera> {
        self.latest()?
            .cameras
            .into_iter()
            .find(|c| c.id == discovery_id)
    }

    /// Which camera (id) a discovered device already is: by ONVIF endpoint reference, else by
    /// the address in a camera's URL.
    pub fn added_as(&self, d: &DiscoveredCamera) -> Option<String> {
        let cams = self.cameras.snapshot();
        cams.iter()
            .find(|c| {
                c.stored
                    .as_ref()
                    .and_then(|s| s.onvif.as_ref())
                    .is_some_and(|o| o.endpoint == d.key)
            })
            .or_else(|| {
                cams.iter().find(|c| {
                    url_ip(&c.spec.url) == Some(d.address)
                        || c.stored.as_ref().and_then(|s| s.address) == Some(d.address)
                })
            })
            .map(|c| c.spec.id.clone())
    }

    async fn follow_moves(&self, found: &[DiscoveredCamera]) {
        let subnets: Vec<Subnet> = discovery::net::interfaces(true, &[])
            .unwrap_or_default()
            .into_iter()
            .map(|i| Subnet {
                addr: i.addr,
                netmask: i.netmask,
            })
            .collect();
        for cam in self.cameras.snapshot().iter() {
            if cam.source != Source::Added {
                continue;
            }
            let Some(stored) = cam.stored.clone() else {
                continue;
            };
            let (Some(onvif_ref), Some(approved)) = (stored.onvif.clone(), stored.address) else {
                continue;
            };
            let Some(seen) = found.iter().find(|d| d.key == onvif_ref.endpoint) else {
                continue;
            };
            if seen.address == approved {
                if onvif_ref.pending_move.is_some() {
                    let mut s = stored.clone();
                    if let Some(o) = s.onvif.as_mut() {
                        o.pending_move = None;
                    }
                    let _ = self.cameras.update_stored(s).await;
                }
                continue;
            }
            let decision = self
                .judge_move(&stored, approved, seen.clone(), &subnets)
                .await;
            let id = cam.spec.id.clone();
            match decision {
                MoveDecision::Unchanged => {}
                MoveDecision::Repoint => {
                    info!(camera = %id, "Camera answered at a new address on the same network with the same serial number; following it");
                    match repoint(&self.cameras, stored.clone(), seen).await {
                        Ok(()) => {}
                        Err(e) => {
                            warn!(camera = %id, error = %e, "Could not follow the camera to its new address; waiting for the resident");
                            mark_pending(&self.cameras, stored, seen, "probe_failed").await;
                        }
                    }
                }
                MoveDecision::Pending(reason) => {
                    info!(camera = %id, reason = reason.as_str(), "Camera answers at a new address; the resident must approve it");
                    mark_pending(&self.cameras, stored, seen, reason.as_str()).await;
                }
            }
        }
    }

    async fn judge_move(
        &self,
        stored: &StoredCamera,
        approved: IpAddr,
        seen: DiscoveredCamera,
        subnets: &[Subnet],
    ) -> MoveDecision {
        let old_url = stored
            .onvif
            .as_ref()
            .map(|o| o.device_url.clone())
            .unwrap_or_default();
        let subnets = subnets.to_vec();
        let recorded = stored.onvif.as_ref().and_then(|o| o.serial.clone());
        tokio::task::spawn_blocking(move || {
            // The old address is approved: asking it (without credentials) is allowed.
            let old_answers = onvif::answers(&old_url, approved, Duration::from_secs(2));
            match moves::precheck(approved, seen.address, &subnets, old_answers) {
                MoveDecision::Repoint => {}
                other => return other,
            }
            let mut serial = SerialCheck::Unverified("no device address answered".into());
            for url in seen.device_urls() {
                match onvif::identify(&url, seen.address, ONVIF_TIMEOUT) {
                    Ok(info) => {
                        serial = moves::check_serial(recorded.as_deref(), info.serial.as_deref());
                        break;
                    }
                    Err(e) => serial = SerialCheck::Unverified(e.to_string()),
                }
            }
            moves::decide(approved, seen.address, &subnets, old_answers, &serial)
        })
        .await
        .unwrap_or(MoveDecision::Unchanged)
    }
}

async fn mark_pending(
    cams: &CameraSet,
    mut stored: StoredCamera,
    seen: &DiscoveredCamera,
    reason: &str,
) {
    let Some(o) = stored.onvif.as_mut() else {
        return;
    };
    let device_url = seen.device_urls().into_iter().next().unwrap_or_default();
    if o.pending_move
        .as_ref()
        .is_some_and(|p| p.address == seen.address && p.reason == reason)
    {
        return;
    }
    o.pending_move = Some(PendingMove {
        address: seen.address,
        device_url,
        seen_ms: now_ms(),
        reason: reason.to_owned(),
    });
    if let Err(e) = cams.update_stored(stored).await {
        warn!(error = %e, "Could not record a camera's pending move");
    }
}

/// Asks the camera at its new (now approved) address for its streams with the stored
/// credentials, and restarts it there.
pub async fn repoint(
    cams: &CameraSet,
    stored: StoredCamera,
    seen: &DiscoveredCamera,
) -> Result<(), String> {
    let urls = seen.device_urls();
    repoint_to(cams, stored, seen.address, urls).await
}

/// [`repoint`] to an address the resident approved (`approve_move`).
pub async fn repoint_to(
    cams: &CameraSet,
    mut stored: StoredCamera,
    address: IpAddr,
    device_urls: Vec<String>,
) -> Result<(), String> {
    let username = stored.username.clone().unwrap_or_default();
    let password = stored
        .password
        .clone()
        .unwrap_or_else(|| crate::secret::Secret::new(""));
    let (report, device_url) = tokio::task::spawn_blocking(move || {
        onvif::probe_first(&device_urls, address, &username, &password, ONVIF_TIMEOUT)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    apply_report(&mut stored, &report, address, device_url);
    cams.replace(stored).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes what a probe learned into a stored camera (its URLs, approved address, serial).
pub fn apply_report(
    stored: &mut StoredCamera,
    report: &DeviceReport,
    address: IpAddr,
    device_url: String,
) {
    if let Some(u) = report.main() {
        stored.url = u.to_string();
    }
    stored.substream_url = report.sub().map(|u| u.to_string());
    if stored.substream_url.is_none() && stored.record == crate::ingest::spec::Record::Sub {
        stored.record = crate::ingest::spec::Record::Main;
    }
    stored.address = Some(address);
    if let Some(o) = stored.onvif.as_mut() {
        o.device_url = device_url;
        o.pending_move = None;
        if report.info.serial.is_some() {
            o.serial = report.info.serial.clone();
        }
        o.manufacturer = report.info.manufacturer.clone().or(o.manufacturer.take());
        o.model = report.info.model.clone().or(o.model.take());
    }
}

/// Probes a discovered camera with the resident's credentials (blocking work off the runtime).
pub async fn probe_discovered(
    d: &DiscoveredCamera,
    username: &str,
    password: &crate::secret::Secret,
) -> Result<(DeviceReport, String), OnvifError> {
    let urls = d.device_urls();
    let addr = d.address;
    let (u, p) = (username.to_owned(), password.clone());
    tokio::task::spawn_blocking(move || onvif::probe_first(&urls, addr, &u, &p, ONVIF_TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(OnvifError::NoStream(format!("probe panicked: {e}"))))
}
