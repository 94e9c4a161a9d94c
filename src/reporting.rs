//! What the box tells the city about itself, besides video: its part of every heartbeat
//! ([`BoxHealth`]) and the events it raises when something changes ([`EventWatcher`]).
//!
//! Both carry ids, state words, stream parameters and counters only: nothing that names an
//! address, a URL, a camera's name or a credential (the message types in
//! [`crate::protocol::messages`] have no field that could hold one).
//!
//! # Events
//!
//! Once a second the watcher takes a [`Snapshot`] (each camera's state, the store's use) and
//! [`EventWatcher::step`] decides, without I/O:
//! - `camera_up` when a camera starts streaming, `camera_down` (with its state word) when it
//!   stops; a camera added at run time says `camera_up` once it streams, a removed one says
//!   nothing (it is gone from the heartbeat);
//! - `storage_full` when the store reaches 98 % of its quota (eviction keeps it just under the
//!   quota, so "full" is "within 2 %"), once, re-armed when it falls below 90 %.
//!
//! Unpaired, the events are dropped: there is nobody to tell.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::cameras::CameraSet;
use crate::ingest::health::CameraState;
use crate::protocol::messages::{
    AuditAnchor, CameraReport, EventKind, HealthReport, SharingMode, SharingModes, StorageReport,
};
use crate::sharing::Sharing;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::uplink::HealthSource;

/// The box's contribution to heartbeats: camera health, storage, sharing modes, the audit
/// anchor.
pub struct BoxHealth {
    /// The segment store.
    pub store: Arc<Store>,
    /// The current cameras.
    pub cameras: Arc<CameraSet>,
    /// Set once sharing is open (it needs the uplink, which needs this).
    pub sharing: Arc<std::sync::OnceLock<Arc<Sharing>>>,
}

impl HealthSource for BoxHealth {
    fn report(&self) -> HealthReport {
        let usage = self.store.usage();
        let sharing = self.sharing.get();
        let rules: HashMap<String, crate::consent::CameraRules> = sharing
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
                        state: s.state,
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
                                live: wire_mode(r.live),
                                clips: wire_mode(r.clips),
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
                    AuditAnchor {
                        seq: head.seq,
                        hash: head.hash,
                    }
                })
                .unwrap_or_default(),
            grants_active: sharing.map_or(0, |s| s.grants_active()),
        }
    }
}

/// The consent engine's mode as the heartbeat says it.
fn wire_mode(m: crate::consent::Mode) -> SharingMode {
    match m {
        crate::consent::Mode::Never => SharingMode::Never,
        crate::consent::Mode::Ask => SharingMode::Ask,
        crate::consent::Mode::Always => SharingMode::Always,
    }
}

/// What the watcher looks at, once a tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every current camera and its state.
    pub cameras: Vec<(String, CameraState)>,
    /// Bytes of stored video.
    pub used_bytes: u64,
    /// The store's quota.
    pub quota_bytes: u64,
}

/// Decides which events a change of state raises (pure; see the module doc).
#[derive(Debug, Default)]
pub struct EventWatcher {
    /// By camera id: whether it was streaming at the last step.
    streaming: HashMap<String, bool>,
    /// Whether `storage_full` was raised and not yet re-armed.
    full: bool,
}

impl EventWatcher {
    /// The events `now` raises, given what the previous steps saw.
    pub fn step(&mut self, now: &Snapshot) -> Vec<EventKind> {
        let mut events = Vec::new();
        self.streaming
            .retain(|id, _| now.cameras.iter().any(|(c, _)| c == id));
        for (id, state) in &now.cameras {
            let is = *state == CameraState::Streaming;
            let was = self.streaming.entry(id.clone()).or_insert(false);
            if is != *was {
                *was = is;
                events.push(if is {
                    EventKind::CameraUp { camera: id.clone() }
                } else {
                    EventKind::CameraDown {
                        camera: id.clone(),
                        state: *state,
                    }
                });
            }
        }
        // 98 % because eviction keeps the store just under the quota; 90 % re-arms.
        let now_full = now.used_bytes >= now.quota_bytes / 50 * 49;
        if now_full && !self.full {
            events.push(EventKind::StorageFull {
                used_bytes: now.used_bytes,
                quota_bytes: now.quota_bytes,
            });
        }
        self.full = if self.full {
            now.used_bytes >= now.quota_bytes / 10 * 9
        } else {
            now_full
        };
        events
    }
}

/// Watches camera health and storage once a second until `shutdown` and queues each event
/// [`EventWatcher::step`] raises on the current city link.
pub async fn run_event_watcher(
    link: Arc<crate::pairing::link::CityLink>,
    cameras: Arc<CameraSet>,
    store: Arc<Store>,
    shutdown: Shutdown,
) {
    let mut watcher = EventWatcher::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let st = store.clone();
        let usage = match tokio::task::spawn_blocking(move || st.usage()).await {
            Ok(u) => u,
            Err(_) => continue,
        };
        let snapshot = Snapshot {
            cameras: cameras
                .snapshot()
                .iter()
                .map(|c| (c.spec.id.clone(), c.health.snapshot().state))
                .collect(),
            used_bytes: usage.used_bytes,
            quota_bytes: usage.quota_bytes,
        };
        let events = watcher.step(&snapshot);
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

#[cfg(test)]
mod tests {
    use super::*;
    use CameraState::*;

    fn snap(cameras: &[(&str, CameraState)], used: u64, quota: u64) -> Snapshot {
        Snapshot {
            cameras: cameras.iter().map(|(c, s)| (c.to_string(), *s)).collect(),
            used_bytes: used,
            quota_bytes: quota,
        }
    }

    fn up(c: &str) -> EventKind {
        EventKind::CameraUp { camera: c.into() }
    }

    fn down(c: &str, state: CameraState) -> EventKind {
        EventKind::CameraDown {
            camera: c.into(),
            state,
        }
    }

    fn full(used: u64) -> EventKind {
        EventKind::StorageFull {
            used_bytes: used,
            quota_bytes: 1000,
        }
    }

    /// Each row: the snapshot of one tick and the events it must raise, in order.
    #[test]
    fn camera_up_down_and_storage_full_table() {
        let rows: Vec<(&str, Snapshot, Vec<EventKind>)> = vec![
            (
                "connecting at start: nothing",
                snap(&[("a", Connecting)], 0, 1000),
                vec![],
            ),
            (
                "streams: up",
                snap(&[("a", Streaming)], 0, 1000),
                vec![up("a")],
            ),
            (
                "still streaming: nothing",
                snap(&[("a", Streaming)], 10, 1000),
                vec![],
            ),
            (
                "fails: down with its state word",
                snap(&[("a", Failed)], 10, 1000),
                vec![down("a", Failed)],
            ),
            (
                "retrying: nothing more",
                snap(&[("a", Connecting)], 10, 1000),
                vec![],
            ),
            (
                "back, and a new camera that streams at once",
                snap(&[("a", Streaming), ("b", Streaming)], 10, 1000),
                vec![up("a"), up("b")],
            ),
            (
                "b removed: nothing",
                snap(&[("a", Streaming)], 10, 1000),
                vec![],
            ),
            (
                "b added again, streaming: up again",
                snap(&[("a", Streaming), ("b", Streaming)], 10, 1000),
                vec![up("b")],
            ),
            (
                "97 %: not full",
                snap(&[("a", Streaming)], 970, 1000),
                vec![],
            ),
            (
                "98 %: full",
                snap(&[("a", Streaming)], 980, 1000),
                vec![full(980)],
            ),
            (
                "still full: once only",
                snap(&[("a", Streaming)], 999, 1000),
                vec![],
            ),
            (
                "95 %: not re-armed",
                snap(&[("a", Streaming)], 950, 1000),
                vec![],
            ),
            (
                "98 % again: still once",
                snap(&[("a", Streaming)], 985, 1000),
                vec![],
            ),
            (
                "89 %: re-armed",
                snap(&[("a", Streaming)], 890, 1000),
                vec![],
            ),
            (
                "full again: raised again",
                snap(&[("a", Streaming)], 990, 1000),
                vec![full(990)],
            ),
            (
                "shutdown: stopped is down",
                snap(&[("a", Stopped)], 990, 1000),
                vec![down("a", Stopped)],
            ),
        ];
        let mut w = EventWatcher::default();
        for (what, s, want) in rows {
            assert_eq!(w.step(&s), want, "{what}");
        }
    }

    #[test]
    fn a_camera_that_never_streams_raises_nothing() {
        let mut w = EventWatcher::default();
        for state in [Connecting, Failed, Connecting, Failed] {
            assert!(w.step(&snap(&[("a", state)], 0, 1000)).is_empty());
        }
    }

    #[test]
    fn a_zero_quota_is_full_once_and_not_a_panic() {
        let mut w = EventWatcher::default();
        assert_eq!(
            w.step(&snap(&[], 0, 0)),
            vec![EventKind::StorageFull {
                used_bytes: 0,
                quota_bytes: 0
            }]
        );
        assert!(w.step(&snap(&[], 0, 0)).is_empty());
    }
}
