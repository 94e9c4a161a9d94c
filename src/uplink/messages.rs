//! Payloads of wire protocol v1 (`docs/protocol.md`): topics, status, heartbeat and events.
//!
//! What leaves the house is chosen here field by field. The types have no field that could hold
//! a camera URL, address, name or credential: camera ids only (the resident chose them), state
//! words, stream parameters and counters.

use serde::{Deserialize, Serialize};

/// The topics of one gateway under a topic root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics for gateway `gw` under `root` (e.g. `porchlight/v1`).
    pub fn new(root: &str, gw: &str) -> Topics {
        Topics {
            base: format!("{}/gw/{gw}", root.trim_end_matches('/')),
        }
    }

    /// `{root}/gw/{gw}/status` — retained, QoS 1; also the last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// `{root}/gw/{gw}/heartbeat` — QoS 0.
    pub fn heartbeat(&self) -> String {
        format!("{}/heartbeat", self.base)
    }

    /// `{root}/gw/{gw}/event` — QoS 1 via the outbox.
    pub fn event(&self) -> String {
        format!("{}/event", self.base)
    }

    /// `{root}/gw/{gw}/request` — center to box, QoS 1.
    pub fn request(&self) -> String {
        format!("{}/request", self.base)
    }

    /// `{root}/gw/{gw}/csr` — a renewal CSR (QoS 1 via the outbox; `docs/protocol.md`).
    pub fn csr(&self) -> String {
        format!("{}/csr", self.base)
    }

    /// `{root}/gw/{gw}/cert` — the center's answer to a renewal CSR (subscribed, QoS 1).
    pub fn cert(&self) -> String {
        format!("{}/cert", self.base)
    }

    /// `{root}/gw/{gw}/reply` — QoS 1 via the outbox.
    pub fn reply(&self) -> String {
        format!("{}/reply", self.base)
    }

    /// `{root}/gw/{gw}/audit` — QoS 1 via the outbox.
    pub fn audit(&self) -> String {
        format!("{}/audit", self.base)
    }

    /// `{root}/gw/{gw}/live/{request_id}` — QoS 0, PLM1-framed. `request_id` has been checked
    /// against `[A-Za-z0-9_-]{1,64}` (it becomes a topic level).
    pub fn live(&self, request_id: &str) -> String {
        format!("{}/live/{request_id}", self.base)
    }

    /// `{root}/gw/{gw}/clip/{request_id}` — QoS 1 via the outbox, PLM1-framed.
    pub fn clip(&self, request_id: &str) -> String {
        format!("{}/clip/{request_id}", self.base)
    }
}

/// The retained status message (and, with `online: false`, the last will).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Whether the box is connected.
    pub online: bool,
    /// UTC milliseconds; absent in the last will (the broker sends it at an unknown time).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ts: Option<i64>,
    /// Daemon version; absent in the last will.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
}

impl Status {
    /// `{"online":true,"ts":…,"version":…}`.
    pub fn online(ts: i64) -> Status {
        Status {
            online: true,
            ts: Some(ts),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    /// `{"online":false,"ts":…,"version":…}`, published at a graceful shutdown.
    pub fn offline(ts: i64) -> Status {
        Status {
            online: false,
            ..Status::online(ts)
        }
    }

    /// `{"online":false}`: the last will.
    pub fn will() -> Status {
        Status {
            online: false,
            ts: None,
            version: None,
        }
    }

    /// JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("status serialises")
    }
}

/// Sharing modes of one camera (`never` / `ask` / `always`): modes only, no limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharingModes {
    /// Live video.
    pub live: String,
    /// Clips.
    pub clips: String,
}

impl Default for SharingModes {
    /// Deny by default: until the consent engine exists nothing is shared.
    fn default() -> Self {
        SharingModes {
            live: "never".into(),
            clips: "never".into(),
        }
    }
}

/// One camera in a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CameraReport {
    /// Camera id.
    pub id: String,
    /// `connecting`, `streaming`, `failed`, `stopped`.
    pub state: String,
    /// `h264`, `h265`, or null.
    pub codec: Option<String>,
    /// Pixels.
    pub width: Option<u32>,
    /// Pixels.
    pub height: Option<u32>,
    /// Measured frames per second.
    pub fps: Option<f64>,
    /// Measured bitrate.
    pub bitrate_bps: Option<u64>,
    /// Newest frame, UTC ms.
    pub last_frame_ts: Option<i64>,
    /// Sharing modes.
    pub sharing: SharingModes,
}

/// Storage in a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StorageReport {
    /// Bytes of stored video.
    pub used_bytes: u64,
    /// The quota.
    pub quota_bytes: u64,
    /// Oldest buffered time, UTC ms.
    pub oldest_ts: Option<i64>,
}

/// Outbox depth in a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxReport {
    /// Queued messages.
    pub messages: u64,
    /// Queued bytes.
    pub bytes: u64,
}

/// The audit anchor in a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditAnchor {
    /// Latest audit entry seq (0: no audit log yet).
    pub seq: u64,
    /// Its hash, lowercase hex ("" while there is no audit log).
    pub hash: String,
}

/// What the rest of the daemon contributes to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    /// All sharing paused by the resident.
    pub paused: bool,
    /// Cameras, in configuration order.
    pub cameras: Vec<CameraReport>,
    /// Storage use.
    pub storage: StorageReport,
    /// Audit anchor.
    pub audit: AuditAnchor,
    /// Grants currently running.
    pub grants_active: u64,
}

/// The heartbeat message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// UTC ms.
    pub ts: i64,
    /// Heartbeat counter since the daemon started (QoS 0: gaps are normal).
    pub seq: u64,
    /// Daemon version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Sharing paused.
    pub paused: bool,
    /// Cameras.
    pub cameras: Vec<CameraReport>,
    /// Storage.
    pub storage: StorageReport,
    /// Outbox depth.
    pub outbox: OutboxReport,
    /// Audit anchor.
    pub audit: AuditAnchor,
    /// Grants running.
    pub grants_active: u64,
}

impl Heartbeat {
    /// Assembles a heartbeat.
    pub fn new(ts: i64, seq: u64, uptime_s: u64, outbox: OutboxReport, h: HealthReport) -> Self {
        Heartbeat {
            ts,
            seq,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s,
            paused: h.paused,
            cameras: h.cameras,
            storage: h.storage,
            outbox,
            audit: h.audit,
            grants_active: h.grants_active,
        }
    }
}

/// What an event reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A camera started streaming.
    CameraUp {
        /// Camera id.
        camera: String,
    },
    /// A camera stopped streaming; `state` is its state word (never the raw error, which can
    /// name addresses).
    CameraDown {
        /// Camera id.
        camera: String,
        /// `connecting`, `failed`, `stopped`.
        state: String,
    },
    /// The video store reached its quota: the oldest video is now being evicted.
    StorageFull {
        /// Bytes stored.
        used_bytes: u64,
        /// The quota.
        quota_bytes: u64,
    },
    /// The outbox was full and messages were refused or dropped.
    OutboxFull {
        /// How many.
        lost: u64,
        /// `reject_new` or `drop_oldest`.
        policy: super::outbox::WhenFull,
    },
    /// The gateway started (daemon start).
    Started {
        /// Version.
        version: String,
    },
    /// Free-form event for tests and tools: a name and a number.
    Test {
        /// Name.
        name: String,
        /// Number.
        n: u64,
    },
}

/// An event message: `{"seq":…,"ts":…,"kind":…, …}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Per-box sequence number, from 1, persisted; the center drops duplicates by it.
    pub seq: u64,
    /// UTC ms when it happened.
    pub ts: i64,
    /// The event.
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_protocol_v1() {
        let t = Topics::new("porchlight/v1/", "gw-1");
        assert_eq!(t.status(), "porchlight/v1/gw/gw-1/status");
        assert_eq!(t.heartbeat(), "porchlight/v1/gw/gw-1/heartbeat");
        assert_eq!(t.event(), "porchlight/v1/gw/gw-1/event");
    }

    #[test]
    fn will_is_just_online_false() {
        assert_eq!(Status::will().to_json(), br#"{"online":false}"#);
        let on: serde_json::Value = serde_json::from_slice(&Status::online(5).to_json()).unwrap();
        assert_eq!(on["online"], true);
        assert_eq!(on["ts"], 5);
    }

    #[test]
    fn event_is_flat_json_with_kind() {
        let e = Event {
            seq: 3,
            ts: 10,
            kind: EventKind::CameraDown {
                camera: "c".into(),
                state: "failed".into(),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":3,"ts":10,"kind":"camera_down","camera":"c","state":"failed"})
        );
    }

    #[test]
    fn heartbeat_has_every_field_of_the_design() {
        let h = Heartbeat::new(1, 2, 3, OutboxReport::default(), HealthReport::default());
        let v = serde_json::to_value(&h).unwrap();
        for k in [
            "ts",
            "seq",
            "version",
            "uptime_s",
            "paused",
            "cameras",
            "storage",
            "outbox",
            "audit",
            "grants_active",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
