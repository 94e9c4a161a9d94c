//! Export: a time range of one camera as one MP4.
//!
//! [`plan`] picks the stored segments that overlap the range and says what the resident gets:
//! the span actually covered (whole GOPs: export starts at the keyframe at or before `from`, so
//! the first frame decodes), gaps where nothing was recorded (camera down, daemon stopped), and
//! whether the range reaches outside the buffer. Segments of one export must share one init
//! segment (stream parameters); if the camera changed resolution inside the range, the export
//! stops at the change and says so.
//!
//! [`stream`] then produces the MP4 without holding the whole clip in memory: a first pass
//! reads each segment to build the `moov` (sample tables), a second streams the samples.
//! Segments in a gap are simply adjacent in the output: playback time runs continuously and the
//! gap is reported to the resident instead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{SegmentMeta, Store, StoreError};

/// A hole in the recording longer than this is reported as a gap.
pub const GAP_TOLERANCE_MS: i64 = 1_000;

/// Why an export cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No camera with this id.
    #[error("no camera {0:?}")]
    UnknownCamera(String),
    /// The range is empty or reversed.
    #[error("bad range: {0}")]
    BadRange(String),
    /// Nothing is buffered in the range.
    #[error("nothing is buffered for camera {camera:?} between {from} and {to}; {buffer}")]
    NothingInRange {
        /// Camera id.
        camera: String,
        /// Requested start, RFC 3339.
        from: String,
        /// Requested end, RFC 3339.
        to: String,
        /// What the buffer holds, in words.
        buffer: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored segment could not be read as MP4.
    #[error("a stored segment is damaged: {0}")]
    Media(#[from] crate::media::export::ExportError),
    /// Writing the output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A gap in the recording inside an export.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    /// Last recorded time before the gap (UTC ms).
    pub from_ms: i64,
    /// First recorded time after it (UTC ms).
    pub to_ms: i64,
}

/// What an export will contain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportPlan {
    /// Camera id.
    pub camera: String,
    /// Requested start (UTC ms).
    pub requested_from_ms: i64,
    /// Requested end (UTC ms).
    pub requested_to_ms: i64,
    /// Start of the first segment (a keyframe at or before the requested start).
    pub from_ms: i64,
    /// End of the last segment.
    pub to_ms: i64,
    /// Number of segments.
    pub segments: usize,
    /// Bytes of segment data (the MP4 is a little larger).
    pub bytes: u64,
    /// Video frames in the export.
    pub video_frames: u64,
    /// Holes in the recording inside the range.
    pub gaps: Vec<Gap>,
    /// Set when the stream parameters changed inside the range: the export stops here.
    pub stopped_at_parameter_change_ms: Option<i64>,
    /// The stored segments, in order (not serialised).
    #[serde(skip)]
    pub parts: Vec<SegmentMeta>,
}

impl ExportPlan {
    /// Sentences for the resident about what the export does not cover.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let f = |ms| crate::cli::fmt_ms(Some(ms));
        if self.from_ms > self.requested_from_ms + GAP_TOLERANCE_MS {
            out.push(format!(
                "nothing buffered from {} to {}: the export starts at {}",
                f(self.requested_from_ms),
                f(self.from_ms),
                f(self.from_ms)
            ));
        }
        if self.to_ms + GAP_TOLERANCE_MS < self.requested_to_ms {
            out.push(format!(
                "nothing buffered from {} to {}: the export ends at {}",
                f(self.to_ms),
                f(self.requested_to_ms),
                f(self.to_ms)
            ));
        }
        for g in &self.gaps {
            out.push(format!(
                "gap of {:.1} s with no recording from {} to {} (the MP4 plays through it)",
                (g.to_ms - g.from_ms) as f64 / 1000.0,
                f(g.from_ms),
                f(g.to_ms)
            ));
        }
        if let Some(at) = self.stopped_at_parameter_change_ms {
            out.push(format!(
                "the camera changed its stream parameters at {}: export again from there for the rest",
                f(at)
            ));
        }
        out
    }
}

/// Chooses the segments for `[from_ms, to_ms)` of `camera`.
pub fn plan(store: &Store, camera: &str, from_ms: i64, to_ms: i64) -> Result<ExportPlan, ExportError> {
    if to_ms <= from_ms {
        return Err(ExportError::BadRange("the end must be after the start".into()));
    }
    let found = store.segments(camera, from_ms, to_ms)?;
    let Some(first) = found.first() else {
        let usage = store.usage();
        let buffer = match usage.cameras.get(camera) {
            Some(s) => format!(
                "the buffer holds {} to {}",
                crate::cli::fmt_ms(Some(s.first_ms)),
                crate::cli::fmt_ms(Some(s.last_ms))
            ),
            None => "the buffer holds nothing for this camera yet".to_owned(),
        };
        return Err(ExportError::NothingInRange {
            camera: camera.to_owned(),
            from: crate::cli::fmt_ms(Some(from_ms)),
            to: crate::cli::fmt_ms(Some(to_ms)),
            buffer,
        });
    };
    let init = first.init;
    let mut parts: Vec<SegmentMeta> = Vec::new();
    let mut gaps = Vec::new();
    let mut stopped = None;
    for seg in found {
        if seg.init != init {
            stopped = Some(seg.start_ms);
            break;
        }
        if let Some(prev) = parts.last() {
            if seg.start_ms - prev.end_ms > GAP_TOLERANCE_MS {
                gaps.push(Gap {
                    from_ms: prev.end_ms,
                    to_ms: seg.start_ms,
                });
            }
        }
        parts.push(seg);
    }
    Ok(ExportPlan {
        camera: camera.to_owned(),
        requested_from_ms: from_ms,
        requested_to_ms: to_ms,
        from_ms: parts[0].start_ms,
        to_ms: parts.last().map_or(0, |s| s.end_ms),
        segments: parts.len(),
        bytes: parts.iter().map(|s| s.bytes).sum(),
        video_frames: parts.iter().map(|s| u64::from(s.video_frames)).sum(),
        gaps,
        stopped_at_parameter_change_ms: stopped,
        parts,
    })
}

/// Bytes of the MP4 handed to the HTTP layer at a time.
const CHUNK: usize = 256 * 1024;

/// The MP4 of `plan`, as a stream of chunks. The sample tables are built before this returns
/// (so a damaged init segment is an error the caller can still report as such); the media then
/// flows from the segment files, one segment in memory at a time.
pub async fn stream(
    store: Arc<Store>,
    plan: ExportPlan,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>, ExportError> {
    let st = store.clone();
    let parts = plan.parts.clone();
    let camera = plan.camera.clone();
    let mp4_plan = tokio::task::spawn_blocking(move || -> Result<_, ExportError> {
        let init = st.read_init(&camera, parts[0].init)?;
        let mut builder = crate::media::export::ExportBuilder::new(&init)?;
        for part in &parts {
            let bytes = st.read_segment(part)?;
            if let Err(e) = builder.add_fragment(&bytes) {
                // Skip it like a gap; the rest of the clip is still evidence.
                tracing::warn!(camera = %camera, start_ms = part.start_ms, error = %e, "Damaged segment left out of the export");
            }
        }
        Ok(builder.finish()?)
    })
    .await
    .map_err(|e| ExportError::Io(std::io::Error::other(e)))??;

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let parts = plan.parts;
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = mp4_plan
            .write_with(&mut out, |i| {
                store
                    .read_segment(&parts[i])
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|_| std::io::Write::flush(&mut out));
        if let Err(e) = result {
            tracing::warn!(error = %e, "Export stream failed");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(rx)
}

/// An `io::Write` that sends fixed-size chunks into a channel (blocking: used on the blocking
/// pool), so a slow reader of the export applies backpressure instead of filling memory.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "export reader went away"))
    }
}
