//! Camera health: the state each camera worker publishes for `porchlight cameras`, and the
//! translation of RTSP failures into words a resident understands.
//!
//! The status is local only (it holds the camera's address); what leaves the house is chosen
//! elsewhere, field by field.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

pub use crate::protocol::messages::CameraState;

/// A snapshot of one camera's health.
#[derive(Clone, Debug, Serialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The ingested URL; its type has no way to hold credentials.
    pub url: crate::secret::RedactedUrl,
    /// Current state.
    pub state: CameraState,
    /// The last failure in plain words.
    pub last_error: Option<String>,
    /// When the last failure happened (UTC ms).
    pub last_error_ms: Option<i64>,
    /// `h264`, `h265`…
    pub codec: Option<String>,
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub codec_string: Option<String>,
    /// Pixels.
    pub width: Option<u32>,
    /// Pixels.
    pub height: Option<u32>,
    /// Measured frames per second over the last few seconds.
    pub fps: Option<f64>,
    /// Measured video bitrate over the last few seconds.
    pub bitrate_bps: Option<u64>,
    /// Audio codec when audio is ingested.
    pub audio: Option<String>,
    /// Wall time of the newest frame (UTC ms).
    pub last_frame_ms: Option<i64>,
    /// Sessions opened after the first.
    pub reconnects: u64,
    /// Video frames received since start.
    pub frames: u64,
    /// RTP packets the camera's stream lost (counted, never fatal).
    pub lost_packets: u64,
    /// Segments written to the store.
    pub segments_written: u64,
    /// Segments that could not be stored (disk full, I/O error…).
    pub segments_failed: u64,
}

/// Shared, cheaply updated health of one camera.
#[derive(Clone, Debug)]
pub struct Health(Arc<Mutex<Inner>>);

#[derive(Debug)]
struct Inner {
    status: CameraStatus,
    window_start: Option<Instant>,
    window_frames: u64,
    window_bytes: u64,
}

/// Length of the window over which fps and bitrate are measured.
const RATE_WINDOW_SECS: f64 = 4.0;

impl Health {
    /// Health for a camera that has not connected yet.
    pub fn new(id: &str, name: &str, url: &str) -> Self {
        Health(Arc::new(Mutex::new(Inner {
            status: CameraStatus {
                id: id.to_owned(),
                name: name.to_owned(),
                url: crate::secret::RedactedUrl::new(url),
                state: CameraState::Connecting,
                last_error: None,
                last_error_ms: None,
                codec: None,
                codec_string: None,
                width: None,
                height: None,
                fps: None,
                bitrate_bps: None,
                audio: None,
                last_frame_ms: None,
                reconnects: 0,
                frames: 0,
                lost_packets: 0,
                segments_written: 0,
                segments_failed: 0,
            },
            window_start: None,
            window_frames: 0,
            window_bytes: 0,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding this lock cannot leave the status inconsistent in a way that
        // matters (it is a display snapshot), so poisoning is ignored.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> CameraStatus {
        self.with(|i| i.status.clone())
    }

    /// A new session attempt begins.
    pub fn connecting(&self, is_retry: bool) {
        self.with(|i| {
            i.status.state = CameraState::Connecting;
            if is_retry {
                i.status.reconnects += 1;
            }
            i.window_start = None;
            i.status.fps = None;
            i.status.bitrate_bps = None;
        })
    }

    /// Parameters of the video (and audio) track are known.
    pub fn stream_info(
        &self,
        codec: &str,
        codec_string: &str,
        width: u32,
        height: u32,
        audio: Option<&str>,
    ) {
        self.with(|i| {
            i.status.codec = Some(codec.to_owned());
            i.status.codec_string = Some(codec_string.to_owned());
            i.status.width = Some(width);
            i.status.height = Some(height);
            i.status.audio = audio.map(str::to_owned);
        })
    }

    /// A video frame arrived.
    pub fn frame(&self, wall_ms: i64, bytes: usize, lost: u16, now: Instant) {
        self.with(|i| {
            let s = &mut i.status;
            s.state = CameraState::Streaming;
            s.frames += 1;
            s.lost_packets += u64::from(lost);
            s.last_frame_ms = Some(wall_ms);
            let start = *i.window_start.get_or_insert(now);
            i.window_frames += 1;
            i.window_bytes += bytes as u64;
            let secs = now.duration_since(start).as_secs_f64();
            if secs >= RATE_WINDOW_SECS {
                s.fps = Some((i.window_frames as f64 / secs * 100.0).round() / 100.0);
                s.bitrate_bps = Some((i.window_bytes as f64 * 8.0 / secs) as u64);
                i.window_start = Some(now);
                i.window_frames = 0;
                i.window_bytes = 0;
            }
        })
    }

    /// Packets were lost on a non-video stream.
    pub fn lost(&self, lost: u16) {
        self.with(|i| i.status.lost_packets += u64::from(lost))
    }

    /// A session failed.
    pub fn failed(&self, reason: String, now_ms: i64) {
        self.with(|i| {
            i.status.state = CameraState::Failed;
            i.status.last_error = Some(reason);
            i.status.last_error_ms = Some(now_ms);
            i.status.fps = None;
            i.status.bitrate_bps = None;
        })
    }

    /// A segment was stored, or could not be.
    pub fn segment(&self, ok: bool) {
        self.with(|i| {
            if ok {
                i.status.segments_written += 1
            } else {
                i.status.segments_failed += 1
            }
        })
    }

    /// The worker has stopped for shutdown.
    pub fn stopped(&self) {
        self.with(|i| i.status.state = CameraState::Stopped)
    }
}

/// Plain words for an RTSP failure reported by retina.
///
/// retina's errors are detailed (enough to find the packet in a capture) but opaque; the
/// resident needs the gist first. The full text still goes to the log.
pub fn plain_reason(error: &retina::Error) -> String {
    if let Some(status) = error.status_code() {
        return match status {
            401 => "401 unauthorized: wrong username or password".to_owned(),
            403 => "403 forbidden: this user may not view the stream".to_owned(),
            404 => "404 not found: the camera has no stream at that path".to_owned(),
            454 => "454 session not found: the camera dropped the session".to_owned(),
            s => format!("the camera refused the request (RTSP status {s})"),
        };
    }
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    if let Some(io) = first.strip_prefix("Unable to connect to RTSP server: ") {
        return format!("unreachable: {io}");
    }
    if first.starts_with("RTSP framing error") {
        return format!("not RTSP: the device at that address does not speak RTSP ({first})");
    }
    if let Some(what) = first.strip_prefix("Unsupported: ") {
        return format!("unsupported: {what}");
    }
    if first.starts_with("Error reading from RTSP peer") {
        return format!("connection lost: {first}");
    }
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_and_bitrate_are_measured_over_a_window() {
        let h = Health::new("c", "C", "rtsp://x/");
        let t0 = Instant::now();
        for n in 0..=40u64 {
            h.frame(
                n as i64 * 100,
                1000,
                0,
                t0 + std::time::Duration::from_millis(n * 100),
            );
        }
        let s = h.snapshot();
        assert_eq!(s.state, CameraState::Streaming);
        assert_eq!(s.frames, 41);
        assert_eq!(s.fps, Some(10.25));
        assert_eq!(s.bitrate_bps, Some(82_000));
    }

    #[test]
    fn failure_keeps_the_reason_and_counts_reconnects() {
        let h = Health::new("c", "C", "rtsp://x/");
        h.connecting(false);
        h.failed("unreachable: Connection refused".into(), 5);
        h.connecting(true);
        let s = h.snapshot();
        assert_eq!(s.reconnects, 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("unreachable: Connection refused")
        );
        assert_eq!(s.state, CameraState::Connecting);
    }
}
