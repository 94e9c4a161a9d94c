//! Ingest: one worker per camera pulls its RTSP stream with retina, never transcoding.
//!
//! A [`CameraWorker`] is a noun with [`CameraWorker::run`], which retries
//! [`session::run_once`] forever with capped, jittered backoff until shutdown. A session:
//! DESCRIBE → SETUP (video, plus AAC audio when enabled) → PLAY → frames, each wait bounded by
//! the read timeout (retina has none: a camera that stops sending would hang us forever).
//! Packet loss is counted, never fatal. New parameters (SPS/PPS, resolution) start a new init
//! segment.
//!
//! Frames go three ways: [`duration::DurationFiller`] completes their durations, then they go
//! to the camera's [`live::LiveFeed`] (in memory, for sharing later) and to the segmenter,
//! whose GOP-aligned segments a per-camera writer task hands to the store. The writer has a
//! bounded queue: a disk slower than the camera costs segments (counted in the camera's
//! health), never the RTSP session.

pub mod duration;
pub mod health;
pub mod live;
pub mod session;
pub mod spec;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use serde::Deserialize;
use url::Url;

use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::ingest::spec::{CameraSpec, Record};
use crate::protocol::units::Dur;
use crate::shutdown::Shutdown;
use crate::store::Store;
use health::Health;
use live::LiveFeed;

/// `[ingest]`: RTSP session behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// With no frame for this long the session is dropped and reconnected.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    /// Time allowed for connect + DESCRIBE + SETUP + PLAY.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// First reconnect delay; doubles on each failure.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: Dur,
    /// Cap on the reconnect delay (a random jitter of up to 25 % is added).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

fn default_read_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(15))
}
fn default_backoff_initial() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_backoff_max() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            read_timeout: default_read_timeout(),
            connect_timeout: default_connect_timeout(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// retina reported an RTSP or RTP failure.
    #[error("{reason}")]
    Rtsp {
        /// Plain words for the resident.
        reason: String,
        /// retina's full description, for the log.
        detail: String,
    },
    /// Connect + DESCRIBE + SETUP + PLAY took too long.
    #[error("timed out connecting after {0:?}")]
    ConnectTimeout(Duration),
    /// No frame arrived within the read timeout.
    #[error("no video for {0:?}: the camera stopped sending")]
    ReadTimeout(Duration),
    /// The camera offers no H.264 or H.265 video.
    #[error("unsupported codec: the camera offers {offered} (need H.264 or H.265)")]
    UnsupportedCodec {
        /// What the SDP listed.
        offered: String,
    },
    /// The camera closed the stream.
    #[error("the camera ended the stream")]
    StreamEnded,
    /// Parameters could not be turned into an MP4 sample entry.
    #[error("cannot record this stream: {0}")]
    Parameters(String),
}

impl IngestError {
    /// From a retina error: plain words plus the full text.
    pub fn rtsp(error: &retina::Error) -> Self {
        IngestError::Rtsp {
            reason: health::plain_reason(error),
            detail: error.to_string(),
        }
    }
}

/// A session that streamed at least this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Keeps one camera streaming.
pub struct CameraWorker {
    spec: CameraSpec,
    opts: IngestConfig,
    health: Health,
    live: LiveFeed,
    store: Arc<Store>,
    shutdown: Shutdown,
}

impl CameraWorker {
    /// A worker for `spec`, reporting into `health` and `live`.
    pub fn new(
        spec: CameraSpec,
        opts: IngestConfig,
        health: Health,
        live: LiveFeed,
        store: Arc<Store>,
        shutdown: Shutdown,
    ) -> Self {
        CameraWorker {
            spec,
            opts,
            health,
            live,
            store,
            shutdown,
        }
    }

    /// Runs sessions until shutdown, reconnecting forever.
    ///
    /// With `record = "sub"` two sessions run side by side: the main stream feeds the live
    /// path (full quality for sharing, pre-roll in memory) and the substream feeds the store
    /// (fewer bytes on the SD card). The camera's health shows the main stream; the
    /// substream's failures are logged and its segments counted in the same health.
    pub async fn run(self) {
        let record = self.spec.record != Record::Off;
        let (writer, writer_task) = writer::SegmentWriter::spawn(
            self.spec.id.clone(),
            self.store.clone(),
            self.health.clone(),
            record,
        );
        match (&self.spec.record, &self.spec.substream_url) {
            (Record::Sub, Some(sub_url)) => {
                let (no_writer, _) = writer::SegmentWriter::spawn(
                    self.spec.id.clone(),
                    self.store.clone(),
                    self.health.clone(),
                    false,
                );
                let sub_health = Health::new(&self.spec.id, &self.spec.name, sub_url.as_str());
                // Nobody subscribes to the substream's live feed; it only feeds the writer.
                let sub_live = LiveFeed::new();
                tokio::join!(
                    self.session_loop(&self.spec.url, &self.health, &self.live, &no_writer),
                    self.session_loop(sub_url, &sub_health, &sub_live, &writer),
                );
            }
            _ => {
                self.session_loop(&self.spec.url, &self.health, &self.live, &writer)
                    .await
            }
        }
        drop(writer);
        // The writer drains what the session handed it (the final, flushed segment included).
        let _ = writer_task.await;
        self.health.stopped();
        info!(camera = %self.spec.id, "Camera worker stopped");
    }

    async fn session_loop(
        &self,
        url: &Url,
        health: &Health,
        live: &LiveFeed,
        writer: &writer::SegmentWriter,
    ) {
        let mut backoff = Backoff::new(self.opts.backoff_initial.0, self.opts.backoff_max.0);
        let mut attempt = 0u64;
        loop {
            health.connecting(attempt > 0);
            attempt += 1;
            let started = Instant::now();
            let result = session::run_once(
                &self.spec,
                url,
                &self.opts,
                health,
                live,
                writer,
                &self.shutdown,
            )
            .await;
            live.lost();
            if self.shutdown.is_triggered() {
                break;
            }
            if started.elapsed() >= HEALTHY_SESSION {
                backoff.reset();
            }
            let delay = backoff.next_delay(fastrand::f64());
            let url = crate::secret::redact_url(url.as_str());
            match &result {
                Ok(()) => {}
                Err(IngestError::Rtsp { reason, detail }) => {
                    warn!(camera = %self.spec.id, %url, %reason, %detail, retry_in = ?delay, "Camera session failed");
                }
                Err(e) => {
                    warn!(camera = %self.spec.id, %url, error = %e, retry_in = ?delay, "Camera session failed")
                }
            }
            let reason = match result {
                Ok(()) => IngestError::StreamEnded.to_string(),
                Err(e) => e.to_string(),
            };
            health.failed(reason, now_ms());
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
