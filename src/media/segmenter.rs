//! GOP segmentation: frames in, GOP-aligned fMP4 fragments out. Pure: no I/O, no clock.
//!
//! # Use
//!
//! ```text
//! let mut seg = Segmenter::new(&info);                  // or with_config(&info, config)
//! store.init(seg.init_segment());                       // ftyp+moov for this StreamInfo
//! for frame in frames {                                 // both tracks, arrival order
//!     if let Some(s) = seg.push(frame) { store.put(s) }  // at most one segment per push
//! }
//! if let Some(s) = seg.change_stream(&new_info) { .. }  // new SPS/PPS: old segment out, new init
//! if let Some(s) = seg.flush() { .. }                   // end of session: emit what is buffered
//! ```
//!
//! # Segments
//!
//! A segment starts at a video frame and is one `moof`+`mdat` ([`super::mp4::fragment`]) with a
//! video run and, when there is audio, an audio run. Normally it starts at a keyframe and holds
//! everything up to, not including, the next keyframe (one GOP). With
//! [`SegmenterConfig::min_segment_ms`] short GOPs are merged until the segment lasts that long
//! (fewer, larger files on flash); the default 0 keeps one GOP per segment.
//!
//! Frames that arrive before the first keyframe (of the session, or after [`Segmenter::flush`])
//! are dropped and counted: nothing can decode them.
//!
//! **Overlong GOPs** (some battery and "smart codec" cameras send a keyframe every 30–60 s, some
//! only on request): when the open segment reaches [`SegmenterConfig::max_segment_ms`] of video
//! or [`SegmenterConfig::max_segment_bytes`], it is cut before the next video frame even though
//! that frame is not a keyframe, and the following segment has
//! [`Segment::starts_with_keyframe`] `false`. We chose this over dropping overlong GOPs because
//! dropping would lose all video of such cameras; the cost is that a continuation segment is
//! only decodable after the segments before it, back to one that starts with a keyframe (the
//! store keeps this flag in its index; a clip export must begin at a keyframe segment). Memory
//! stays bounded either way.
//!
//! **Audio** belongs to the segment that was open when it arrived. Audio frames that arrive
//! while no segment is open (before the first keyframe) are dropped and counted. Audio is capped
//! at twice `max_segment_bytes` per segment in case video stalls while audio flows.
//!
//! # Durations
//!
//! RTP gives timestamps, not durations. A frame whose `duration` is 0 is held back until the
//! next frame of its track gives it: `next.dts - dts`. A step that is not positive is clamped to
//! one tick and counted ([`SegmenterStats::non_monotonic_dts`]); a step longer than
//! [`SegmenterConfig::max_frame_gap_ms`] is a stall, not a frame, and takes the previous
//! duration (counted in [`SegmenterStats::stalls`]). When a segment is cut while an audio frame
//! is held, and when [`Segmenter::flush`] ends a session, the held frames take their track's
//! previous duration, or when there is none `timescale / assumed_fps` for video and
//! `assumed_audio_frame_ticks` (1024, one AAC frame) for audio. Frames that arrive with a
//! non-zero duration (ingest may fill durations itself) are used as they are, not held.
//!
//! # Time
//!
//! Each run's `tfdt` is the session `dts` of its first frame (negative values clamp to 0); later
//! samples follow by duration. The segment's wall-clock span comes from the frames: it starts at
//! the first video frame's `wall_ms` and ends that plus the video duration.
//!
//! # Stream changes
//!
//! A fragment only makes sense with the init segment it was written for.
//! [`Segmenter::change_stream`] flushes the open segment (returning it, still tied to the old
//! init) and switches to the new [`StreamInfo`]. Every [`Segment`] carries the init segment it
//! belongs to ([`Segment::init`], a cheap reference-counted handle), so the store can tell which
//! init to keep with it.

use bytes::Bytes;

use super::mp4::{self, TrackRun};
use super::{Frame, StreamInfo, TrackKind};

/// Tuning of the [`Segmenter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// A keyframe starts a new segment only once the open one has this much video. 0 (default):
    /// every keyframe starts a segment.
    pub min_segment_ms: u32,
    /// A segment that has this much video is cut before the next video frame, keyframe or not.
    pub max_segment_ms: u32,
    /// Likewise for its size in bytes (clamped to 512 MiB so every fragment stays writable).
    pub max_segment_bytes: usize,
    /// A dts step longer than this is a stall: the frame gets the previous duration.
    pub max_frame_gap_ms: u32,
    /// Frame rate assumed for the last video frame when no earlier duration is known.
    pub assumed_fps: u32,
    /// Duration assumed for the last audio frame when no earlier duration is known, in ticks.
    pub assumed_audio_frame_ticks: u32,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            min_segment_ms: 0,
            max_segment_ms: 10_000,
            max_segment_bytes: 32 << 20,
            max_frame_gap_ms: 5_000,
            assumed_fps: 25,
            assumed_audio_frame_ticks: 1024,
        }
    }
}

/// Upper bound of [`SegmenterConfig::max_segment_bytes`]: with audio allowed twice that, a
/// segment stays below [`mp4::MAX_FRAGMENT_BYTES`].
const MAX_SEGMENT_BYTES_LIMIT: usize = 512 << 20;

/// One finished segment: a fragment and what the store indexes it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The `mfhd` sequence number (counts from 1 per [`Segmenter`]).
    pub sequence: u32,
    /// The init segment this fragment needs (shared, not copied).
    pub init: Bytes,
    /// The fragment: `moof` + `mdat`.
    pub fragment: Bytes,
    /// UTC wall-clock ms of the first video frame.
    pub start_ms: i64,
    /// `start_ms` plus the video duration.
    pub end_ms: i64,
    /// Number of video frames.
    pub video_frames: u32,
    /// Number of audio frames.
    pub audio_frames: u32,
    /// `tfdt` of the video run (session dts of the first video frame, in video ticks).
    pub video_base_decode_time: u64,
    /// Sum of the video frames' durations, in video ticks.
    pub video_duration: u64,
    /// Timescale of the video ticks.
    pub video_timescale: u32,
    /// False for a segment cut from an overlong GOP (see the module doc): it can be decoded only
    /// after the segments before it.
    pub starts_with_keyframe: bool,
}

impl Segment {
    /// Size of the fragment in bytes.
    pub fn byte_len(&self) -> usize {
        self.fragment.len()
    }

    /// Wall-clock duration in ms.
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// Counters of everything the segmenter did not pass on unchanged. They accumulate over the
/// segmenter's life, across [`Segmenter::flush`] and [`Segmenter::change_stream`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmenterStats {
    /// Frames pushed.
    pub frames_in: u64,
    /// Segments emitted.
    pub segments: u64,
    /// Frames dropped because no segment was open (before the first keyframe).
    pub dropped_before_keyframe: u64,
    /// Audio frames pushed when the stream has no audio track.
    pub dropped_unexpected_track: u64,
    /// Audio frames dropped because the open segment hit twice the byte cap.
    pub dropped_over_cap: u64,
    /// Frames lost with a segment whose fragment could not be written.
    pub dropped_unwritable: u64,
    /// Frames whose dts did not advance past the previous one (duration clamped to one tick).
    pub non_monotonic_dts: u64,
    /// Frames followed by a gap longer than `max_frame_gap_ms` (previous duration used).
    pub stalls: u64,
    /// Segments cut without a keyframe because the GOP was too long or too large.
    pub overlong_cuts: u64,
}

/// Per-track state: the held-back frame and the frames of the open segment.
#[derive(Debug)]
struct Track {
    kind: TrackKind,
    held: Option<Frame>,
    last_duration: Option<u32>,
    /// Duration used when nothing better is known.
    fallback: u32,
    /// Steps longer than this are stalls.
    max_gap_ticks: i64,
    /// Frames of the open segment, durations filled. Reused between segments.
    frames: Vec<Frame>,
}

impl Track {
    fn new(kind: TrackKind, timescale: u32, fallback: u32, max_frame_gap_ms: u32) -> Self {
        Track {
            kind,
            held: None,
            last_duration: None,
            fallback: fallback.max(1),
            max_gap_ticks: (i64::from(max_frame_gap_ms) * i64::from(timescale) / 1000)
                .clamp(1, i64::from(u32::MAX)),
            frames: Vec::new(),
        }
    }

    /// Duration of a frame at `prev` followed by one at `next`.
    fn duration(&mut self, prev: i64, next: i64, stats: &mut SegmenterStats) -> u32 {
        let delta = next.saturating_sub(prev);
        if delta <= 0 {
            stats.non_monotonic_dts += 1;
            1
        } else if delta > self.max_gap_ticks {
            stats.stalls += 1;
            self.estimate()
        } else {
            // delta <= max_gap_ticks <= u32::MAX.
            let d = delta as u32;
            self.last_duration = Some(d);
            d
        }
    }

    /// Duration for a frame whose successor is unknown.
    fn estimate(&self) -> u32 {
        self.last_duration.unwrap_or(self.fallback)
    }

    /// `tfdt` of the open segment's run.
    fn base_decode_time(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.dts.max(0) as u64)
    }
}

#[derive(Clone, Copy, Debug)]
struct OpenSegment {
    start_ms: i64,
    starts_with_keyframe: bool,
}

/// Groups frames into GOP-aligned segments; see the module doc.
#[derive(Debug)]
pub struct Segmenter {
    info: StreamInfo,
    init: Bytes,
    config: SegmenterConfig,
    video_timescale: u32,
    min_ticks: u64,
    max_ticks: u64,
    max_bytes: usize,
    video: Track,
    audio: Option<Track>,
    open: Option<OpenSegment>,
    /// Bytes of the frames in the open segment (held frames not included).
    seg_bytes: usize,
    /// Video duration of the open segment (held frame not included).
    seg_video_ticks: u64,
    next_sequence: u32,
    stats: SegmenterStats,
}

fn ms_to_ticks(ms: u32, timescale: u32) -> u64 {
    u64::from(ms) * u64::from(timescale) / 1000
}

fn ticks_to_ms(ticks: u64, timescale: u32) -> i64 {
    let ts = u128::from(timescale.max(1));
    let ms = (u128::from(ticks) * 1000 + ts / 2) / ts;
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Segmenter {
    /// A segmenter for a stream with the default [`SegmenterConfig`]; builds its init segment.
    pub fn new(info: &StreamInfo) -> Self {
        Segmenter::with_config(info, SegmenterConfig::default())
    }

    /// A segmenter for a stream; builds its init segment.
    pub fn with_config(info: &StreamInfo, config: SegmenterConfig) -> Self {
        let video_timescale = info.video.timescale.max(1);
        let video = Track::new(
            TrackKind::Video,
            video_timescale,
            video_timescale / config.assumed_fps.max(1),
            config.max_frame_gap_ms,
        );
        let audio = info.audio.as_ref().map(|a| {
            Track::new(
                TrackKind::Audio,
                a.timescale,
                config.assumed_audio_frame_ticks,
                config.max_frame_gap_ms,
            )
        });
        Segmenter {
            init: mp4::init_segment(info),
            info: info.clone(),
            video_timescale,
            min_ticks: ms_to_ticks(config.min_segment_ms, video_timescale),
            max_ticks: ms_to_ticks(config.max_segment_ms, video_timescale).max(1),
            max_bytes: config.max_segment_bytes.clamp(1, MAX_SEGMENT_BYTES_LIMIT),
            config,
            video,
            audio,
            open: None,
            seg_bytes: 0,
            seg_video_ticks: 0,
            next_sequence: 1,
            stats: SegmenterStats::default(),
        }
    }

    /// The init segment (`ftyp`+`moov`) every segment from now on needs.
    pub fn init_segment(&self) -> &Bytes {
        &self.init
    }

    /// The stream the segmenter is writing.
    pub fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    /// Counters since creation.
    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// Takes the next frame (either track, arrival order). Returns a segment when this frame
    /// closes one: a video frame that starts the next segment. Audio never closes a segment.
    pub fn push(&mut self, frame: Frame) -> Option<Segment> {
        self.stats.frames_in += 1;
        match frame.track {
            TrackKind::Video => self.push_video(frame),
            TrackKind::Audio => {
                self.push_audio(frame);
                None
            }
        }
    }

    /// Ends the session: the held frames take estimated durations and the open segment, if any,
    /// is returned. The next segment starts at the next keyframe; the timeline may restart.
    pub fn flush(&mut self) -> Option<Segment> {
        if let Some(mut held) = self.video.held.take() {
            held.duration = self.video.estimate();
            self.append_video(held);
        }
        let out = self.cut();
        self.video.last_duration = None;
        if let Some(a) = &mut self.audio {
            a.last_duration = None;
        }
        out
    }

    /// Switches to new stream parameters. When they differ from the current ones, flushes (the
    /// returned segment belongs to the old [`Segmenter::init_segment`]) and builds the new init
    /// segment; sequence numbers and stats carry on. Unchanged parameters are a no-op.
    pub fn change_stream(&mut self, info: &StreamInfo) -> Option<Segment> {
        if *info == self.info {
            return None;
        }
        let out = self.flush();
        let stats = self.stats;
        let next_sequence = self.next_sequence;
        *self = Segmenter::with_config(info, self.config.clone());
        self.stats = stats;
        self.next_sequence = next_sequence;
        out
    }

    fn push_video(&mut self, frame: Frame) -> Option<Segment> {
        if let Some(mut held) = self.video.held.take() {
            held.duration = self.video.duration(held.dts, frame.dts, &mut self.stats);
            self.append_video(held);
        }
        let mut out = None;
        if self.open.is_some() {
            let over = self.seg_video_ticks >= self.max_ticks || self.seg_bytes >= self.max_bytes;
            let gop_done = frame.is_key && self.seg_video_ticks >= self.min_ticks;
            if over || gop_done {
                if !frame.is_key {
                    self.stats.overlong_cuts += 1;
                }
                out = self.cut();
                self.open = Some(OpenSegment {
                    start_ms: frame.wall_ms,
                    starts_with_keyframe: frame.is_key,
                });
            }
        } else if frame.is_key {
            self.open = Some(OpenSegment {
                start_ms: frame.wall_ms,
                starts_with_keyframe: true,
            });
        } else {
            self.stats.dropped_before_keyframe += 1;
            return None;
        }
        if frame.duration == 0 {
            self.video.held = Some(frame);
        } else {
            self.video.last_duration = Some(frame.duration);
            self.append_video(frame);
        }
        out
    }

    fn push_audio(&mut self, frame: Frame) {
        let Some(audio) = &mut self.audio else {
            self.stats.dropped_unexpected_track += 1;
            return;
        };
        if let Some(mut held) = audio.held.take() {
            held.duration = audio.duration(held.dts, frame.dts, &mut self.stats);
            self.append_audio(held);
        }
        if self.open.is_none() {
            self.stats.dropped_before_keyframe += 1;
            return;
        }
        let Some(audio) = &mut self.audio else {
            return;
        };
        if frame.duration == 0 {
            audio.held = Some(frame);
        } else {
            audio.last_duration = Some(frame.duration);
            self.append_audio(frame);
        }
    }

    fn append_video(&mut self, frame: Frame) {
        self.seg_bytes = self.seg_bytes.saturating_add(frame.data.len());
        self.seg_video_ticks += u64::from(frame.duration);
        self.video.frames.push(frame);
    }

    fn append_audio(&mut self, frame: Frame) {
        let Some(audio) = &mut self.audio else {
            return;
        };
        if self.seg_bytes.saturating_add(frame.data.len()) > 2 * self.max_bytes {
            self.stats.dropped_over_cap += 1;
            return;
        }
        self.seg_bytes += frame.data.len();
        audio.frames.push(frame);
    }

    /// Closes the open segment (if any) and returns it as a [`Segment`].
    fn cut(&mut self) -> Option<Segment> {
        let open = self.open.take()?;
        // A held audio frame arrived while this segment was open: it belongs here.
        if let Some(audio) = &mut self.audio {
            if let Some(mut held) = audio.held.take() {
                held.duration = audio.estimate();
                self.append_audio(held);
            }
        }
        let video_frames = self.video.frames.len();
        let audio_frames = self.audio.as_ref().map_or(0, |a| a.frames.len());
        let seg = if video_frames == 0 {
            // Unreachable in practice: a segment opens with a video frame, released before any cut.
            None
        } else {
            let sequence = self.next_sequence;
            self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
            let video_base = self.video.base_decode_time();
            let video_run = TrackRun::new(TrackKind::Video, video_base, &self.video.frames[..]);
            let result = match &self.audio {
                Some(a) => {
                    let audio_run = TrackRun::new(a.kind, a.base_decode_time(), &a.frames[..]);
                    mp4::fragment(sequence, &[video_run, audio_run])
                }
                None => mp4::fragment(sequence, &[video_run]),
            };
            match result {
                Ok(fragment) => {
                    self.stats.segments += 1;
                    Some(Segment {
                        sequence,
                        init: self.init.clone(),
                        fragment,
                        start_ms: open.start_ms,
                        end_ms: open.start_ms.saturating_add(ticks_to_ms(
                            self.seg_video_ticks,
                            self.video_timescale,
                        )),
                        video_frames: video_frames as u32,
                        audio_frames: audio_frames as u32,
                        video_base_decode_time: video_base,
                        video_duration: self.seg_video_ticks,
                        video_timescale: self.video_timescale,
                        starts_with_keyframe: open.starts_with_keyframe,
                    })
                }
                Err(error) => {
                    // Not reachable with the byte caps above; counted rather than panicking.
                    tracing::warn!(
                        %error,
                        video_frames,
                        audio_frames,
                        "Dropped a segment that could not be written"
                    );
                    self.stats.dropped_unwritable += (video_frames + audio_frames) as u64;
                    None
                }
            }
        };
        self.video.frames.clear();
        if let Some(a) = &mut self.audio {
            a.frames.clear();
        }
        self.seg_bytes = 0;
        self.seg_video_ticks = 0;
        seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mp4::tests::stream;
    use crate::media::mp4::{parse_fragment, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

    const V: TrackKind = TrackKind::Video;
    const A: TrackKind = TrackKind::Audio;

    /// A frame with unknown duration; wall clock = 1000 ms + dts at 90 kHz.
    fn f(track: TrackKind, dts: i64, key: bool) -> Frame {
        let wall_ms = match track {
            V => 1_000 + dts / 90,
            A => 1_000 + dts / 48,
        };
        Frame {
            track,
            dts,
            duration: 0,
            wall_ms,
            is_key: key,
            data: Bytes::from(vec![dts as u8; 10]),
        }
    }

    fn push_all(s: &mut Segmenter, frames: impl IntoIterator<Item = Frame>) -> Vec<Segment> {
        frames.into_iter().filter_map(|fr| s.push(fr)).collect()
    }

    /// (duration, sync) per sample of `track_id` in a segment.
    fn samples(seg: &Segment, track_id: u32) -> Vec<(u64, u32, bool)> {
        let p = parse_fragment(&seg.fragment).expect("segmenter output parses");
        p.tracks
            .iter()
            .filter(|t| t.track_id == track_id)
            .flat_map(|t| t.samples.iter())
            .map(|s| (s.decode_time, s.duration, s.is_sync()))
            .collect()
    }

    /// Video frames every 3600 ticks (25 fps); keyframes at the given indexes.
    fn video(n: i64, keys: &[i64]) -> Vec<Frame> {
        (0..n).map(|i| f(V, i * 3600, keys.contains(&i))).collect()
    }

    #[test]
    fn gop_boundaries_cut_before_each_keyframe() {
        let mut s = Segmenter::new(&stream(false));
        let segs = push_all(&mut s, video(10, &[0, 4, 7]));
        // The first GOP closes when its last frame gets a duration and keyframe 4 arrives.
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].video_frames, 4);
        assert_eq!(segs[1].video_frames, 3);
        assert_eq!(segs[1].video_base_decode_time, 4 * 3600);
        assert_eq!(segs[0].sequence, 1);
        assert_eq!(segs[1].sequence, 2);
        assert!(segs.iter().all(|s| s.starts_with_keyframe));
        let v = samples(&segs[1], VIDEO_TRACK_ID);
        assert_eq!(v[0], (4 * 3600, 3600, true));
        assert!(!v[1].2 && !v[2].2);
        let last = s.flush().expect("last GOP");
        assert_eq!(last.video_frames, 3);
        assert_eq!(s.stats().segments, 3);
        assert_eq!(last.init, *s.init_segment());
    }

    #[test]
    fn durations_filled_from_next_dts() {
        let mut s = Segmenter::new(&stream(false));
        let dts = [0i64, 3000, 6600, 9000, 12_000];
        let frames: Vec<Frame> = dts
            .iter()
            .map(|&d| f(V, d, d == 0 || d == 12_000))
            .collect();
        let seg = push_all(&mut s, frames).pop().expect("one segment");
        let durs: Vec<u32> = samples(&seg, VIDEO_TRACK_ID).iter().map(|s| s.1).collect();
        assert_eq!(durs, [3000, 3600, 2400, 3000]);
        assert_eq!(seg.video_duration, 12_000);
        assert_eq!(seg.start_ms, 1_000);
        assert_eq!(seg.end_ms, 1_000 + 12_000 / 90);
        assert_eq!(seg.byte_len(), seg.fragment.len());
    }

    #[test]
    fn frames_before_first_keyframe_are_dropped_and_counted() {
        let mut s = Segmenter::new(&stream(true));
        let mut frames = vec![
            f(V, 0, false),
            f(A, 0, true),
            f(V, 3600, false),
            f(A, 1024, true),
        ];
        frames.extend(video(6, &[2, 5]).into_iter().skip(2));
        let segs = push_all(&mut s, frames);
        assert_eq!(s.stats().dropped_before_keyframe, 4);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].video_base_decode_time, 2 * 3600);
        assert_eq!(segs[0].audio_frames, 0);
    }

    #[test]
    fn flush_emits_buffered_segment_with_previous_duration() {
        let mut s = Segmenter::new(&stream(false));
        assert!(push_all(&mut s, video(3, &[0])).is_empty());
        let seg = s.flush().expect("buffered GOP");
        let durs: Vec<u32> = samples(&seg, VIDEO_TRACK_ID).iter().map(|s| s.1).collect();
        assert_eq!(durs, [3600, 3600, 3600]);
        assert!(s.flush().is_none(), "nothing left");
        // After a flush the next session must start at a keyframe again.
        assert!(s.push(f(V, 0, false)).is_none());
        assert_eq!(s.stats().dropped_before_keyframe, 1);
    }

    #[test]
    fn flush_of_single_frame_uses_assumed_fps() {
        let config = SegmenterConfig {
            assumed_fps: 15,
            ..SegmenterConfig::default()
        };
        let mut s = Segmenter::with_config(&stream(true), config);
        s.push(f(V, 0, true));
        s.push(f(A, 0, true));
        let seg = s.flush().expect("one frame");
        assert_eq!(samples(&seg, VIDEO_TRACK_ID), [(0, 6000, true)]);
        assert_eq!(samples(&seg, AUDIO_TRACK_ID), [(0, 1024, true)]);
        assert_eq!(seg.end_ms - seg.start_ms, 67);
    }

    #[test]
    fn flush_without_keyframe_emits_nothing() {
        let mut s = Segmenter::new(&stream(false));
        push_all(&mut s, video(3, &[]));
        assert!(s.flush().is_none());
        assert_eq!(s.stats().dropped_before_keyframe, 3);
    }

    #[test]
    fn non_monotonic_dts_clamped_to_one_tick_and_counted() {
        let mut s = Segmenter::new(&stream(false));
        let frames = [
            (0, true),
            (3600, false),
            (3600, false),
            (1000, false),
            (7200, true),
        ]
        .map(|(d, k)| f(V, d, k));
        let seg = push_all(&mut s, frames).pop().expect("segment");
        let durs: Vec<u32> = samples(&seg, VIDEO_TRACK_ID).iter().map(|s| s.1).collect();
        assert_eq!(durs, [3600, 1, 1, 6200]);
        assert_eq!(s.stats().non_monotonic_dts, 2);
    }

    #[test]
    fn stall_takes_previous_duration() {
        let mut s = Segmenter::new(&stream(false));
        // 3600, then a 60 s hole.
        let frames = [
            (0, true),
            (3600, false),
            (3600 + 60 * 90_000, false),
            (3600 + 60 * 90_000 + 3600, true),
        ]
        .map(|(d, k)| f(V, d, k));
        let seg = push_all(&mut s, frames).pop().expect("segment");
        let durs: Vec<u32> = samples(&seg, VIDEO_TRACK_ID).iter().map(|s| s.1).collect();
        assert_eq!(durs, [3600, 3600, 3600]);
        assert_eq!(s.stats().stalls, 1);
    }

    #[test]
    fn overlong_gop_is_cut_by_duration_and_continues_without_keyframe() {
        let config = SegmenterConfig {
            max_segment_ms: 400, // 10 frames at 25 fps
            ..SegmenterConfig::default()
        };
        let mut s = Segmenter::with_config(&stream(false), config);
        let segs = push_all(&mut s, video(25, &[0]));
        assert_eq!(segs.len(), 2);
        assert_eq!(
            segs.iter().map(|s| s.video_frames).collect::<Vec<_>>(),
            [10, 10]
        );
        assert!(segs[0].starts_with_keyframe);
        assert!(!segs[1].starts_with_keyframe);
        assert_eq!(segs[1].start_ms, segs[0].end_ms);
        assert!(!samples(&segs[1], VIDEO_TRACK_ID)[0].2);
        assert_eq!(s.stats().overlong_cuts, 2);
        let last = s.flush().expect("rest");
        assert_eq!(last.video_frames, 5);
        assert!(!last.starts_with_keyframe);
    }

    #[test]
    fn overlong_gop_is_cut_by_bytes() {
        let config = SegmenterConfig {
            max_segment_bytes: 35, // frames are 10 bytes: cut after 4
            ..SegmenterConfig::default()
        };
        let mut s = Segmenter::with_config(&stream(false), config);
        let segs = push_all(&mut s, video(9, &[0]));
        assert_eq!(
            segs.iter().map(|s| s.video_frames).collect::<Vec<_>>(),
            [4, 4]
        );
    }

    #[test]
    fn min_segment_ms_merges_short_gops() {
        let config = SegmenterConfig {
            min_segment_ms: 300, // 7.5 frames
            ..SegmenterConfig::default()
        };
        let mut s = Segmenter::with_config(&stream(false), config);
        let segs = push_all(&mut s, video(20, &[0, 3, 6, 9, 12, 15, 18]));
        assert_eq!(
            segs.iter().map(|s| s.video_frames).collect::<Vec<_>>(),
            [9, 9]
        );
        let v = samples(&segs[0], VIDEO_TRACK_ID);
        assert_eq!(
            v.iter().filter(|s| s.2).count(),
            3,
            "inner keyframes stay sync samples"
        );
    }

    #[test]
    fn audio_goes_to_the_segment_open_when_it_arrived() {
        let mut s = Segmenter::new(&stream(true));
        // Audio every 1920 ticks at 48 kHz (40 ms) interleaved with 25 fps video.
        let mut frames = Vec::new();
        for i in 0..8i64 {
            frames.push(f(V, i * 3600, i % 4 == 0));
            frames.push(f(A, i * 1920, true));
        }
        let segs = push_all(&mut s, frames);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].audio_frames, 4);
        // The audio frame held at the cut got the track's previous duration.
        let a = samples(&segs[0], AUDIO_TRACK_ID);
        assert_eq!(a.iter().map(|s| s.1).collect::<Vec<_>>(), [1920; 4]);
        let last = s.flush().expect("second GOP");
        assert_eq!(last.audio_frames, 4);
        assert_eq!(samples(&last, AUDIO_TRACK_ID)[0].0, 4 * 1920);
    }

    #[test]
    fn audio_without_audio_track_is_counted() {
        let mut s = Segmenter::new(&stream(false));
        s.push(f(V, 0, true));
        s.push(f(A, 0, true));
        assert_eq!(s.stats().dropped_unexpected_track, 1);
        assert_eq!(s.flush().expect("segment").audio_frames, 0);
    }

    #[test]
    fn audio_is_capped_when_video_stalls() {
        let config = SegmenterConfig {
            max_segment_bytes: 30,
            ..SegmenterConfig::default()
        };
        let mut s = Segmenter::with_config(&stream(true), config);
        s.push(f(V, 0, true));
        for i in 0..20 {
            s.push(f(A, i * 1024, true));
        }
        let seg = s.flush().expect("segment");
        // 6 * 10 audio bytes = 2 * cap (the keyframe is held back, not yet counted).
        assert_eq!(seg.audio_frames, 6);
        assert_eq!(s.stats().dropped_over_cap, 14);
    }

    #[test]
    fn prefilled_durations_are_used_as_is() {
        let mut s = Segmenter::new(&stream(true));
        let mut frames = video(5, &[0, 4]);
        for fr in &mut frames {
            fr.duration = 3000;
        }
        let mut a = f(A, 0, true);
        a.duration = 960;
        frames.insert(1, a);
        let segs = push_all(&mut s, frames);
        // Nothing is held back: the keyframe closes the GOP on arrival.
        assert_eq!(segs.len(), 1);
        let v = samples(&segs[0], VIDEO_TRACK_ID);
        assert_eq!(v.iter().map(|s| s.1).collect::<Vec<_>>(), [3000; 4]);
        assert_eq!(samples(&segs[0], AUDIO_TRACK_ID), [(0, 960, true)]);
    }

    #[test]
    fn change_stream_flushes_and_switches_init() {
        let mut s = Segmenter::new(&stream(false));
        let old_init = s.init_segment().clone();
        push_all(&mut s, video(3, &[0]));
        assert!(
            s.change_stream(&stream(false)).is_none(),
            "same parameters: no-op"
        );
        let mut new = stream(false);
        new.video.width = 640;
        let seg = s.change_stream(&new).expect("old GOP flushed");
        assert_eq!(seg.init, old_init);
        assert_eq!(seg.video_frames, 3);
        assert_ne!(*s.init_segment(), old_init);
        assert_eq!(s.stream_info(), &new);
        push_all(&mut s, video(2, &[0]));
        let seg = s.flush().expect("new GOP");
        assert_eq!(seg.sequence, 2, "sequence numbers carry on");
        assert_eq!(seg.init, *s.init_segment());
        assert_eq!(s.stats().segments, 2);
    }

    #[test]
    fn negative_dts_clamps_base_decode_time() {
        let mut s = Segmenter::new(&stream(false));
        push_all(&mut s, [f(V, -3600, true), f(V, 0, false)]);
        let seg = s.flush().expect("segment");
        assert_eq!(seg.video_base_decode_time, 0);
        assert_eq!(seg.video_duration, 7200);
    }
}
