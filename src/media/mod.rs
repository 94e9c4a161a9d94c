//! Media: fragmented-MP4 writing, GOP segmentation and the progressive MP4 layout. No I/O, no
//! network.
//!
//! Ingest hands this module [`Frame`]s (already in MP4 framing: length-prefixed NAL units for
//! H.264/H.265, raw AAC access units) plus the sample entries retina builds for each track.
//! From them:
//! - [`mp4`] writes the init segment (`ftyp`+`moov` with `mvex`) and fragments
//!   (`moof`+`mdat`). The same writer serves stored GOP-aligned segments and, later, sub-GOP
//!   live fragments.
//! - [`segmenter`] groups frames into GOP-aligned segments, one fragment per GOP, each mapped to
//!   wall-clock time.
//! - [`live`] cuts the live path finer: one fragment per video frame, for low latency.
//! - [`progressive`] turns an init segment and a run of stored fragments into one progressive
//!   MP4 ([`crate::export`] chooses the fragments).
//!
//! Timestamps: every track has its own timescale (90 kHz for video from RTP, the sample rate for
//! AAC). `dts` values are in that timescale, counted from the start of the RTSP session.
//! Cameras almost never send B-frames, so presentation time equals decode time (no `ctts`).

pub mod live;
pub mod mp4;
pub mod progressive;
pub mod segmenter;

use bytes::Bytes;

/// Which track of a camera stream a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// The video track (track id 1 in everything we write).
    Video,
    /// The AAC audio track (track id 2), present only when audio is enabled and offered.
    Audio,
}

/// One coded frame (video) or access unit (audio), ready for an MP4 `mdat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Track this frame belongs to.
    pub track: TrackKind,
    /// Decode (= presentation) time in the track's timescale, from the start of the session.
    pub dts: i64,
    /// Duration in the track's timescale. Known once the next frame has arrived.
    pub duration: u32,
    /// UTC wall-clock time of this frame in milliseconds since the Unix epoch.
    pub wall_ms: i64,
    /// True for a sync sample (IDR / IRAP for video; every AAC frame).
    pub is_key: bool,
    /// The sample bytes in MP4 framing.
    pub data: Bytes,
}

/// Description of one track for the init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// Video or audio.
    pub kind: TrackKind,
    /// Ticks per second of this track's timestamps.
    pub timescale: u32,
    /// The complete sample entry box (`avc1`/`hvc1`/`hev1`/`mp4a`) as retina builds it.
    pub sample_entry: Vec<u8>,
    /// Display width in pixels (0 for audio).
    pub width: u32,
    /// Display height in pixels (0 for audio).
    pub height: u32,
}

/// Parameters of one stream: the video track and an optional audio track. A change of any of
/// these (new SPS/PPS, new resolution) starts a new init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The video track.
    pub video: TrackInfo,
    /// The audio track, when enabled and offered by the camera.
    pub audio: Option<TrackInfo>,
}
