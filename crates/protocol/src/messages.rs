//! Payloads of wire protocol v1 (`docs/protocol.md`): status, heartbeat, events and replies.
//!
//! What leaves the house is chosen here field by field. The types have no field that could hold
//! a camera URL, address, name or credential: camera ids only (the resident chose them), state
//! words, stream parameters and counters.

use serde::{Deserialize, Serialize};

/// What the box's outbox does when a new message does not fit under its byte limit (reported
/// in the `outbox_full` event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse the new message (it is handed back to the caller); keep everything queued.
    #[default]
    RejectNew,
    /// Delete the oldest queued messages until the new one fits.
    DropOldest,
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
    /// `{"online":true,"ts":…,"version":…}`; `version` is the box's software version.
    pub fn online(ts: i64, version: &str) -> Status {
        Status {
            online: true,
            ts: Some(ts),
            version: Some(version.to_owned()),
        }
    }

    /// `{"online":false,"ts":…,"version":…}`, published at a graceful shutdown.
    pub fn offline(ts: i64, version: &str) -> Status {
        Status {
            online: false,
            ..Status::online(ts, version)
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

/// Where a camera's worker is, as heartbeats and events say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Opening the RTSP session.
    Connecting,
    /// Frames are arriving.
    Streaming,
    /// The last attempt failed; waiting to retry.
    Failed,
    /// The daemon is shutting down.
    Stopped,
    /// A word this version does not know (a newer box): shown, never guessed at.
    #[serde(other)]
    Unknown,
}

/// A camera's sharing mode for one kind of request, as heartbeats say it: deny by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharingMode {
    /// Denied without asking.
    #[default]
    Never,
    /// Waits for the resident.
    Ask,
    /// Granted within the resident's limits.
    Always,
    /// A word this version does not know (a newer box).
    #[serde(other)]
    Unknown,
}

macro_rules! words {
    ($t:ty { $($v:ident => $w:literal),* $(,)? }) => {
        impl $t {
            /// The word, as serialized.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $w),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            /// The known words only (not `unknown`).
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($w if $w != "unknown" => Ok(<$t>::$v),)*
                    other => Err(format!("unknown word {other:?}")),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

words!(CameraState {
    Connecting => "connecting",
    Streaming => "streaming",
    Failed => "failed",
    Stopped => "stopped",
    Unknown => "unknown",
});

words!(SharingMode {
    Never => "never",
    Ask => "ask",
    Always => "always",
    Unknown => "unknown",
});

/// Sharing modes of one camera: modes only, never limits, hours or schedules.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharingModes {
    /// Live video.
    pub live: SharingMode,
    /// Clips.
    pub clips: SharingMode,
}

/// One camera in a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CameraReport {
    /// Camera id.
    pub id: String,
    /// Where its worker is.
    pub state: CameraState,
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
    pub fn new(
        ts: i64,
        seq: u64,
        version: &str,
        uptime_s: u64,
        outbox: OutboxReport,
        h: HealthReport,
    ) -> Self {
        Heartbeat {
            ts,
            seq,
            version: version.to_owned(),
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
        /// Its state now (not `streaming`).
        state: CameraState,
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
        policy: WhenFull,
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

/// The `status` of a reply (`{root}/gw/{gw}/reply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// Waiting for the resident (`until`: when it expires unanswered).
    Pending,
    /// Granted (`until`: end of the grant).
    Granted,
    /// Refused by the resident's rules or the resident (`reason` says which rule).
    Denied,
    /// Not a valid request (bad signature, replayed, unknown camera, …; `reason`).
    Rejected,
    /// Unanswered in time, or the grant ran out.
    Expired,
    /// The resident (or the center, by a cancel) ended it.
    Revoked,
    /// A clip fully sent, or a cancel carried out.
    Completed,
    /// It could not be carried out (`reason`).
    Failed,
}

impl ReplyStatus {
    /// Every status.
    pub const ALL: [ReplyStatus; 8] = [
        ReplyStatus::Pending,
        ReplyStatus::Granted,
        ReplyStatus::Denied,
        ReplyStatus::Rejected,
        ReplyStatus::Expired,
        ReplyStatus::Revoked,
        ReplyStatus::Completed,
        ReplyStatus::Failed,
    ];

    /// The word, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Pending => "pending",
            ReplyStatus::Granted => "granted",
            ReplyStatus::Denied => "denied",
            ReplyStatus::Rejected => "rejected",
            ReplyStatus::Expired => "expired",
            ReplyStatus::Revoked => "revoked",
            ReplyStatus::Completed => "completed",
            ReplyStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReplyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A reply to the center.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// The request's `jti` (empty when it could not be read).
    pub request_id: String,
    /// What became of the request.
    pub status: ReplyStatus,
    /// Short snake_case reason, when there is one.
    pub reason: Option<String>,
    /// For `granted`: end of the grant; for `pending`: when it expires unanswered (UTC ms).
    pub until: Option<i64>,
    /// When the reply was made (UTC ms).
    pub ts: i64,
    /// Per-box reply sequence number.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_statuses_are_the_v1_words() {
        for st in ReplyStatus::ALL {
            assert_eq!(
                serde_json::to_value(st).unwrap(),
                serde_json::Value::String(st.as_str().to_owned())
            );
        }
        let r: Reply = serde_json::from_str(
            r#"{"request_id":"r","status":"granted","reason":null,"until":5,"ts":1,"seq":2}"#,
        )
        .unwrap();
        assert_eq!(r.status, ReplyStatus::Granted);
        assert!(serde_json::from_str::<ReplyStatus>("\"maybe\"").is_err());
    }

    #[test]
    fn state_and_mode_words_round_trip_and_unknown_words_do_not_break_a_heartbeat() {
        for s in [
            CameraState::Connecting,
            CameraState::Streaming,
            CameraState::Failed,
            CameraState::Stopped,
        ] {
            let j = serde_json::to_value(s).unwrap();
            assert_eq!(j, s.as_str());
            assert_eq!(serde_json::from_value::<CameraState>(j).unwrap(), s);
        }
        assert_eq!(
            serde_json::from_str::<CameraState>("\"rebooting\"").unwrap(),
            CameraState::Unknown
        );
        assert_eq!(
            serde_json::from_str::<SharingMode>("\"sometimes\"").unwrap(),
            SharingMode::Unknown
        );
        assert_eq!(SharingModes::default().live, SharingMode::Never);
        assert_eq!(format!("{:<8}|", SharingMode::Ask), "ask     |");
    }

    #[test]
    fn will_is_just_online_false() {
        assert_eq!(Status::will().to_json(), br#"{"online":false}"#);
        let on: serde_json::Value =
            serde_json::from_slice(&Status::online(5, "1.2.3").to_json()).unwrap();
        assert_eq!(on["online"], true);
        assert_eq!(on["ts"], 5);
        assert_eq!(on["version"], "1.2.3");
    }

    #[test]
    fn event_is_flat_json_with_kind() {
        let e = Event {
            seq: 3,
            ts: 10,
            kind: EventKind::CameraDown {
                camera: "c".into(),
                state: CameraState::Failed,
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
        let h = Heartbeat::new(
            1,
            2,
            "1.2.3",
            3,
            OutboxReport::default(),
            HealthReport::default(),
        );
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
