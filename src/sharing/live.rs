//! A live feed to the center: the camera's live frames, cut per video frame, PLM1-framed,
//! published at QoS 0 on `{root}/gw/{gw}/live/{request_id}` — for as long as consent allows.
//!
//! [`run_live`] starts from the pre-roll (the frames since the last keyframe), so the center's
//! first picture comes at once, then follows the camera. Before **every** fragment it asks the
//! gate (the consent engine's send-time check) whether this grant still covers this camera and
//! this moment; the first refusal ends the feed with an end message carrying the reason. Revoke
//! and pause wake the loop at once through `stop`, so a feed stops within one frame interval.
//!
//! A slow uplink degrades the feed instead of stalling it: a per-feed [`BitrateCap`] and the
//! uplink's own drop-when-behind both make the feed skip to the next keyframe, since a
//! decoder cannot use fragments after a dropped one until then.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::ingest::live::{LiveEvent, LiveFeed};
use crate::media::live::LiveFragmenter;
use crate::media::{Frame, StreamInfo, TrackKind};
use crate::protocol::framing::{self, Kind};
use crate::uplink::{LiveRefused, UplinkHandle};

/// Why a live feed ended (the `reason` of its end message).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The grant ran out.
    Expired,
    /// The resident revoked the grant.
    Revoked,
    /// The resident paused all sharing.
    Paused,
    /// The center cancelled its request.
    Cancelled,
    /// The camera's stream ended or changed parameters.
    CameraLost,
    /// The daemon is shutting down.
    Shutdown,
    /// Consent refused for another reason (the text says which).
    Refused(String),
}

impl EndReason {
    /// The word used in the end message.
    pub fn as_str(&self) -> &str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::Paused => "paused",
            EndReason::Cancelled => "cancelled",
            EndReason::CameraLost => "camera_lost",
            EndReason::Shutdown => "shutdown",
            EndReason::Refused(r) => r,
        }
    }
}

/// What a feed sent, for the audit log (`bytes_sent`) and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveReport {
    /// Messages published (init, fragments, end).
    pub messages: u64,
    /// Payload bytes published.
    pub bytes: u64,
    /// Fragments not sent (cap or link behind), with the frames skipped up to a keyframe.
    pub dropped: u64,
}

/// A token bucket over bytes per second, in whole fragments.
#[derive(Clone, Debug)]
pub struct BitrateCap {
    rate_bytes_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl BitrateCap {
    /// A cap of `bits_per_s`, allowing bursts of two seconds' worth (a keyframe is large).
    pub fn new(bits_per_s: u64) -> Self {
        let rate = bits_per_s as f64 / 8.0;
        BitrateCap {
            rate_bytes_per_s: rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: None,
        }
    }

    /// Whether `bytes` may go now; takes them from the bucket if so.
    pub fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_bytes_per_s).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// How long a feed waits for a camera that has no parameters yet.
const WAIT_FOR_CAMERA: std::time::Duration = std::time::Duration::from_secs(10);

/// Streams `feed` to the center until the gate refuses, `stop` carries a reason, or the camera
/// is lost. `gate(now_ms)` is the consent engine's send-time check for this grant.
pub async fn run_live(
    feed: &LiveFeed,
    uplink: &UplinkHandle,
    request_id: &str,
    cap_bits_per_s: u64,
    clock: &crate::clock::Clock,
    gate: impl Fn(i64) -> Result<(), EndReason>,
    mut stop: watch::Receiver<Option<EndReason>>,
) -> (EndReason, LiveReport) {
    let topic = uplink.topics().live(request_id);
    let mut out = Publisher {
        uplink,
        topic,
        seq: 0,
        report: LiveReport::default(),
        cap: BitrateCap::new(cap_bits_per_s),
        skipping: false,
    };
    let now_gate = || gate(clock.now_ms());
    let reason = stream(feed, &mut out, &now_gate, &mut stop).await;
    let body = serde_json::json!({ "reason": reason.as_str() }).to_string();
    out.send(Kind::End, 0, body.as_bytes(), true);
    (reason, out.report)
}

async fn stream(
    feed: &LiveFeed,
    out: &mut Publisher<'_>,
    gate: &impl Fn() -> Result<(), EndReason>,
    stop: &mut watch::Receiver<Option<EndReason>>,
) -> EndReason {
    let mut sub = feed.subscribe();
    let info: Arc<StreamInfo> = match sub.params.take() {
        Some(i) => i,
        None => {
            // Wait for the camera to (re)connect.
            let deadline = tokio::time::Instant::now() + WAIT_FOR_CAMERA;
            loop {
                tokio::select! {
                    biased;
                    r = stop.changed() => return stopped(r, stop),
                    _ = tokio::time::sleep_until(deadline) => return EndReason::CameraLost,
                    ev = sub.events.recv() => match ev {
                        Ok(LiveEvent::Params(i)) => break i,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return EndReason::CameraLost,
                    },
                }
            }
        }
    };
    if let Err(r) = gate() {
        return r;
    }
    let mut fragmenter = LiveFragmenter::new(&info);
    out.send(Kind::Init, 0, fragmenter.init_segment(), true);
    for f in &sub.preroll {
        if let Some(r) = out.frame(&mut fragmenter, f, gate) {
            return r;
        }
    }
    loop {
        tokio::select! {
            biased;
            r = stop.changed() => return stopped(r, stop),
            ev = sub.events.recv() => match ev {
                Ok(LiveEvent::Frame(f)) => {
                    if let Some(r) = out.frame(&mut fragmenter, &f, gate) {
                        return r;
                    }
                }
                // New parameters would need a new init segment mid-feed, which the framing
                // does not allow: end, and let the center ask again.
                Ok(LiveEvent::Params(_)) | Ok(LiveEvent::Lost) => return EndReason::CameraLost,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    out.report.dropped += n;
                    out.skipping = true;
                }
                Err(broadcast::error::RecvError::Closed) => return EndReason::CameraLost,
            },
        }
    }
}

fn stopped(
    r: Result<(), watch::error::RecvError>,
    stop: &watch::Receiver<Option<EndReason>>,
) -> EndReason {
    match r {
        Ok(()) => stop.borrow().clone().unwrap_or(EndReason::Shutdown),
        Err(_) => EndReason::Shutdown,
    }
}

struct Publisher<'a> {
    uplink: &'a UplinkHandle,
    topic: String,
    seq: u32,
    report: LiveReport,
    cap: BitrateCap,
    /// Dropping until the next video keyframe.
    skipping: bool,
}

impl Publisher<'_> {
    /// Gate, fragment, cap and publish one frame. Returns a reason to end the feed.
    fn frame(
        &mut self,
        fragmenter: &mut LiveFragmenter,
        frame: &Frame,
        gate: &impl Fn() -> Result<(), EndReason>,
    ) -> Option<EndReason> {
        if let Err(r) = gate() {
            return Some(r);
        }
        let key = frame.track == TrackKind::Video && frame.is_key;
        if self.skipping && frame.track == TrackKind::Video {
            if !key {
                self.report.dropped += 1;
                return None;
            }
            self.skipping = false;
        }
        match fragmenter.push(frame) {
            Ok(Some(frag)) => {
                let len = frag.bytes.len() + framing::HEADER_LEN;
                if !self.cap.admit(len, Instant::now()) {
                    self.report.dropped += 1;
                    self.skipping = true;
                    return None;
                }
                if !self.send(
                    Kind::Fragment,
                    frag.wall_ms.max(0) as u64,
                    &frag.bytes,
                    false,
                ) {
                    self.skipping = true;
                }
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "Live fragment not written");
                self.report.dropped += 1;
                self.skipping = true;
                None
            }
        }
    }

    /// Publishes one framed message; false when it was dropped.
    fn send(&mut self, kind: Kind, ts: u64, body: &[u8], important: bool) -> bool {
        let payload = framing::encode(kind, self.seq, ts, body);
        let len = payload.len() as u64;
        match self.uplink.publish_live(self.topic.clone(), payload) {
            Ok(()) => {
                self.seq += 1;
                self.report.messages += 1;
                self.report.bytes += len;
                true
            }
            Err(e) => {
                if important {
                    tracing::debug!(error = %e, ?kind, "Live control message dropped");
                }
                if e != LiveRefused::Down {
                    self.report.dropped += 1;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cap_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut cap = BitrateCap::new(80_000); // 10 kB/s, 20 kB burst
        assert!(cap.admit(15_000, t0));
        assert!(!cap.admit(10_000, t0));
        assert!(cap.admit(5_000, t0));
        assert!(!cap.admit(5_000, t0 + Duration::from_millis(100)));
        assert!(cap.admit(5_000, t0 + Duration::from_millis(600)));
        // The bucket never holds more than the burst.
        assert!(!cap.admit(25_000, t0 + Duration::from_secs(60)));
    }
}
