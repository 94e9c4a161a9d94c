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
    /// The stored segment starting at `start_ms` is not a readable fragment.
    #[error("the stored segment at {} is damaged: {source}", crate::clock::fmt_ms(Some(*start_ms)))]
    Damaged {
        /// Its start (UTC ms).
        start_ms: i64,
        /// What the MP4 parser found.
        source: crate::media::mp4::Mp4Error,
    },
    /// A stored segment could not be laid out as MP4.
    #[error("a stored segment is damaged: {0}")]
    Media(#[from] crate::media::progressive::LayoutError),
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
        let f = |ms| crate::clock::fmt_ms(Some(ms));
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
pub fn plan(
    store: &Store,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<ExportPlan, ExportError> {
    if to_ms <= from_ms {
        return Err(ExportError::BadRange(
            "the end must be after the start".into(),
        ));
    }
    let found = store.segments(camera, from_ms, to_ms)?;
    let Some(first) = found.first() else {
        let usage = store.usage();
        let buffer = match usage.cameras.get(camera) {
            Some(s) => format!(
                "the buffer holds {} to {}",
                crate::clock::fmt_ms(Some(s.first_ms)),
                crate::clock::fmt_ms(Some(s.last_ms))
            ),
            None => "the buffer holds nothing for this camera yet".to_owned(),
        };
        return Err(ExportError::NothingInRange {
            camera: camera.to_owned(),
            from: crate::clock::fmt_ms(Some(from_ms)),
            to: crate::clock::fmt_ms(Some(to_ms)),
            buffer,
        });
    };
    let init = first.init;
    let lead_in = keyframe_lead_in(store, first)?;
    let mut parts: Vec<SegmentMeta> = lead_in;
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

/// At most this many earlier segments are prepended to reach a keyframe.
const MAX_LEAD_IN: usize = 32;

/// The segments to prepend so the export starts with a keyframe.
///
/// Segments normally start at a keyframe, but a camera with an overlong GOP gets its GOP cut
/// into continuation segments that do not (see `media::segmenter`). Such a segment decodes only
/// after the ones before it, back to the keyframe: read the first sample's flags and walk back
/// through contiguous segments of the same init until one starts with a sync sample.
fn keyframe_lead_in(store: &Store, first: &SegmentMeta) -> Result<Vec<SegmentMeta>, ExportError> {
    let mut lead = Vec::new();
    let mut cur = first.clone();
    while !starts_with_keyframe(store, &cur)? && lead.len() < MAX_LEAD_IN {
        let prev = store
            .segments(&cur.camera, cur.start_ms - GAP_TOLERANCE_MS, cur.start_ms)?
            .into_iter()
            .rfind(|s| s.start_ms < cur.start_ms && s.init == cur.init);
        match prev {
            Some(p) => {
                lead.push(p.clone());
                cur = p;
            }
            // The keyframe was evicted: export what there is; players start at the next one.
            None => break,
        }
    }
    lead.reverse();
    Ok(lead)
}

fn starts_with_keyframe(store: &Store, seg: &SegmentMeta) -> Result<bool, ExportError> {
    let bytes = store.read_segment(seg)?;
    let parsed =
        crate::media::mp4::parse_fragment(&bytes).map_err(|source| ExportError::Damaged {
            start_ms: seg.start_ms,
            source,
        })?;
    Ok(parsed
        .tracks
        .iter()
        .find(|t| t.track_id == crate::media::mp4::VIDEO_TRACK_ID)
        .and_then(|t| t.samples.first())
        .is_none_or(|s| s.is_sync()))
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
        let mut builder = crate::media::progressive::ProgressiveBuilder::new(&init)?;
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
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "export reader went away")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::segmenter::{Segmenter, SegmenterConfig};
    use crate::media::{Frame, StreamInfo, TrackInfo, TrackKind};
    use crate::store::{NewSegment, StoreOptions};

    const T0: i64 = 1_790_000_000_000;

    /// A store holding 12 s of 25 fps video with a keyframe every 4 s, cut into 1 s segments:
    /// only every fourth segment starts with a keyframe (a camera with an overlong GOP).
    fn long_gop_store(dir: &std::path::Path) -> Store {
        let (store, _) = Store::open(
            dir,
            StoreOptions::new(1 << 30, std::time::Duration::from_secs(86_400)),
        )
        .unwrap();
        let info = StreamInfo {
            video: TrackInfo {
                kind: TrackKind::Video,
                timescale: 90_000,
                // A bare sample entry box is enough: nothing here decodes the pictures.
                sample_entry: vec![0, 0, 0, 8, b'a', b'v', b'c', b'1'],
                width: 64,
                height: 64,
            },
            audio: None,
        };
        let config = SegmenterConfig {
            max_segment_ms: 1_000,
            ..SegmenterConfig::default()
        };
        let mut seg = Segmenter::with_config(&info, config);
        let init = store.put_init("cam", seg.init_segment()).unwrap();
        let put = |s: crate::media::segmenter::Segment| {
            store
                .put_segment(
                    "cam",
                    NewSegment {
                        init,
                        start_ms: s.start_ms,
                        end_ms: s.end_ms,
                        video_frames: s.video_frames,
                        audio_frames: s.audio_frames,
                        bytes: s.fragment,
                    },
                )
                .unwrap();
        };
        for n in 0..300i64 {
            let f = Frame {
                track: TrackKind::Video,
                dts: n * 3600,
                duration: 3600,
                wall_ms: T0 + n * 40,
                is_key: n % 100 == 0,
                data: bytes::Bytes::from(vec![0u8; 100]),
            };
            if let Some(s) = seg.push(f) {
                put(s);
            }
        }
        if let Some(s) = seg.flush() {
            put(s);
        }
        store
    }

    #[test]
    fn export_inside_an_overlong_gop_starts_at_its_keyframe() {
        let dir = tempfile::tempdir().unwrap();
        let store = long_gop_store(dir.path());
        // 6.5 s is inside the GOP that starts at 4 s, in its third continuation segment.
        let plan = plan(&store, "cam", T0 + 6_500, T0 + 7_000).unwrap();
        assert_eq!(plan.from_ms, T0 + 4_000, "{plan:?}");
        assert!(starts_with_keyframe(&store, &plan.parts[0]).unwrap());
        assert_eq!(plan.segments, 3, "4-5 s, 5-6 s and 6-7 s");
        assert!(plan.gaps.is_empty());
    }

    #[test]
    fn export_at_a_keyframe_segment_needs_no_lead_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = long_gop_store(dir.path());
        let plan = plan(&store, "cam", T0 + 8_000, T0 + 8_500).unwrap();
        assert_eq!(plan.from_ms, T0 + 8_000);
        assert_eq!(plan.segments, 1);
    }

    #[test]
    fn nothing_in_range_names_what_the_buffer_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = long_gop_store(dir.path());
        let err = plan(&store, "cam", T0 - 60_000, T0 - 30_000).unwrap_err();
        assert!(err.to_string().contains("the buffer holds"), "{err}");
        let err = plan(&store, "cam", T0 + 5, T0).unwrap_err();
        assert!(matches!(err, ExportError::BadRange(_)));
    }
}
