//! Low-latency live fragments: the same fMP4 writer as the stored segments, cut per video
//! frame instead of per GOP.
//!
//! [`LiveFragmenter`] turns the camera's live frames (complete, from `ingest::live`) into one
//! `moof`+`mdat` per video frame, carrying the audio frames that arrived since the previous
//! video frame. Stored segments stay GOP-aligned; only what leaves the box live is cut finer,
//! so the latency added by fragmenting is one frame interval instead of a GOP. The first
//! fragment starts at a keyframe (frames before it are dropped), so a receiver decodes from the
//! first picture it gets.

use bytes::Bytes;

use super::mp4::{self, Mp4Error, TrackRun};
use super::{Frame, StreamInfo, TrackKind};

/// A live fragment ready for framing.
#[derive(Clone, Debug)]
pub struct LiveFragment {
    /// `moof`+`mdat`.
    pub bytes: Bytes,
    /// UTC ms of the fragment's first sample.
    pub wall_ms: i64,
    /// Whether the fragment starts with a video keyframe.
    pub keyframe: bool,
}

/// Cuts live frames into one fragment per video frame.
#[derive(Debug)]
pub struct LiveFragmenter {
    init: Bytes,
    has_audio: bool,
    sequence: u32,
    started: bool,
    audio: Vec<Frame>,
    /// Frames dropped while waiting for the first keyframe.
    pub dropped_before_keyframe: u64,
}

impl LiveFragmenter {
    /// A fragmenter for a stream with these parameters.
    pub fn new(info: &StreamInfo) -> Self {
        LiveFragmenter {
            init: mp4::init_segment(info),
            has_audio: info.audio.is_some(),
            sequence: 0,
            started: false,
            audio: Vec::new(),
            dropped_before_keyframe: 0,
        }
    }

    /// The init segment (`ftyp`+`moov`) to send first.
    pub fn init_segment(&self) -> &Bytes {
        &self.init
    }

    /// Takes one frame (duration known); returns a fragment when a video frame completes one.
    pub fn push(&mut self, frame: &Frame) -> Result<Option<LiveFragment>, Mp4Error> {
        match frame.track {
            TrackKind::Audio => {
                if self.started && self.has_audio {
                    self.audio.push(frame.clone());
                }
                Ok(None)
            }
            TrackKind::Video => {
                if !self.started {
                    if !frame.is_key {
                        self.dropped_before_keyframe += 1;
                        return Ok(None);
                    }
                    self.started = true;
                }
                let video = std::slice::from_ref(frame);
                let audio_base = self.audio.first().map_or(0, |a| a.dts.max(0) as u64);
                let runs = [
                    TrackRun::new(TrackKind::Video, frame.dts.max(0) as u64, video),
                    TrackRun::new(TrackKind::Audio, audio_base, &self.audio[..]),
                ];
                self.sequence = self.sequence.wrapping_add(1);
                let bytes = mp4::fragment(self.sequence, &runs)?;
                let wall_ms = self
                    .audio
                    .first()
                    .map_or(frame.wall_ms, |a| a.wall_ms.min(frame.wall_ms));
                self.audio.clear();
                Ok(Some(LiveFragment {
                    bytes,
                    wall_ms,
                    keyframe: frame.is_key,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackInfo;

    fn info(audio: bool) -> StreamInfo {
        let track = |kind, timescale| TrackInfo {
            kind,
            timescale,
            sample_entry: vec![0, 0, 0, 8, b'a', b'v', b'c', b'1'],
            width: 64,
            height: 64,
        };
        StreamInfo {
            video: track(TrackKind::Video, 90_000),
            audio: audio.then(|| TrackInfo {
                sample_entry: vec![0, 0, 0, 8, b'm', b'p', b'4', b'a'],
                ..track(TrackKind::Audio, 16_000)
            }),
        }
    }

    fn frame(track: TrackKind, dts: i64, key: bool) -> Frame {
        Frame {
            track,
            dts,
            duration: if track == TrackKind::Video {
                6000
            } else {
                1024
            },
            wall_ms: 1_000 + dts / 90,
            is_key: key,
            data: Bytes::from(vec![7u8; 10]),
        }
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut l = LiveFragmenter::new(&info(false));
        assert!(l
            .push(&frame(TrackKind::Video, 0, false))
            .unwrap()
            .is_none());
        let f = l
            .push(&frame(TrackKind::Video, 6000, true))
            .unwrap()
            .unwrap();
        assert!(f.keyframe);
        assert_eq!(l.dropped_before_keyframe, 1);
        let parsed = mp4::parse_fragment(&f.bytes).unwrap();
        assert_eq!(parsed.tracks.len(), 1);
        assert!(parsed.tracks[0].samples[0].is_sync());
    }

    #[test]
    fn one_fragment_per_video_frame_carrying_the_audio_since_the_last() {
        let mut l = LiveFragmenter::new(&info(true));
        l.push(&frame(TrackKind::Video, 0, true)).unwrap().unwrap();
        assert!(l.push(&frame(TrackKind::Audio, 0, true)).unwrap().is_none());
        assert!(l
            .push(&frame(TrackKind::Audio, 1024, true))
            .unwrap()
            .is_none());
        let f = l
            .push(&frame(TrackKind::Video, 6000, false))
            .unwrap()
            .unwrap();
        let parsed = mp4::parse_fragment(&f.bytes).unwrap();
        let counts: Vec<(u32, usize)> = parsed
            .tracks
            .iter()
            .map(|t| (t.track_id, t.samples.len()))
            .collect();
        assert_eq!(counts, [(1, 1), (2, 2)]);
        assert_eq!(parsed.sequence, 2);
        assert!(!f.keyframe);
    }
}
