//! Frame durations: RTP gives each frame a timestamp, not a duration. The duration of a frame is
//! the distance to the next frame of the same track, so each track holds one frame back.

use crate::media::{Frame, TrackKind};

/// A gap longer than this between two frames of a track is a stall, not a frame duration; the
/// previous duration is used instead so one frame does not claim seconds of playback.
const MAX_FRAME_SECS: i64 = 5;

/// Holds one frame per track back until the next one gives its duration.
#[derive(Debug, Default)]
pub struct DurationFiller {
    video: Track,
    audio: Track,
    /// Frames whose timestamp did not advance (clamped to one tick).
    pub non_monotonic: u64,
}

#[derive(Debug, Default)]
struct Track {
    pending: Option<Frame>,
    last_duration: u32,
}

impl DurationFiller {
    /// Takes a frame with `duration` unknown; returns the previous frame of its track, complete.
    pub fn push(&mut self, frame: Frame, timescale: u32) -> Option<Frame> {
        let non_monotonic = &mut self.non_monotonic;
        let track = match frame.track {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        };
        let mut prev = track.pending.replace(frame)?;
        let next_dts = track.pending.as_ref().map_or(prev.dts, |f| f.dts);
        let delta = next_dts - prev.dts;
        let duration = if delta <= 0 {
            *non_monotonic += 1;
            1
        } else if delta > MAX_FRAME_SECS * i64::from(timescale) {
            track.last_duration.max(1)
        } else {
            delta as u32
        };
        track.last_duration = duration;
        prev.duration = duration;
        Some(prev)
    }

    /// A duration to use for a frame of `track` before the next one has arrived: the last
    /// measured one, or a guess (15 fps video, 1024-sample AAC frames). The live path uses it
    /// so a frame goes out on arrival instead of a frame interval later; the stored segments
    /// get the measured durations.
    pub fn estimate(&self, track: TrackKind, timescale: u32) -> u32 {
        let t = match track {
            TrackKind::Video => &self.video,
            TrackKind::Audio => &self.audio,
        };
        match (t.last_duration, track) {
            (0, TrackKind::Video) => (timescale / 15).max(1),
            (0, TrackKind::Audio) => 1024,
            (d, _) => d,
        }
    }

    /// At the end of a session: the held-back frames, with the last known durations.
    pub fn finish(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        for track in [&mut self.video, &mut self.audio] {
            if let Some(mut f) = track.pending.take() {
                f.duration = track.last_duration.max(1);
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(track: TrackKind, dts: i64) -> Frame {
        Frame {
            track,
            dts,
            duration: 0,
            wall_ms: 0,
            is_key: false,
            data: bytes::Bytes::new(),
        }
    }

    #[test]
    fn duration_is_the_distance_to_the_next_frame_of_the_same_track() {
        let mut d = DurationFiller::default();
        assert!(d.push(f(TrackKind::Video, 0), 90_000).is_none());
        assert!(d.push(f(TrackKind::Audio, 0), 48_000).is_none());
        let v = d.push(f(TrackKind::Video, 3000), 90_000).unwrap();
        assert_eq!((v.dts, v.duration), (0, 3000));
        let a = d.push(f(TrackKind::Audio, 1024), 48_000).unwrap();
        assert_eq!((a.dts, a.duration), (0, 1024));
        assert_eq!(d.estimate(TrackKind::Video, 90_000), 3000);
        let rest = d.finish();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].duration, 3000);
    }

    #[test]
    fn estimates_before_any_measurement_are_plausible_guesses() {
        let d = DurationFiller::default();
        assert_eq!(d.estimate(TrackKind::Video, 90_000), 6000);
        assert_eq!(d.estimate(TrackKind::Audio, 16_000), 1024);
    }

    #[test]
    fn non_monotonic_timestamps_are_clamped_and_counted() {
        let mut d = DurationFiller::default();
        d.push(f(TrackKind::Video, 6000), 90_000);
        let v = d.push(f(TrackKind::Video, 3000), 90_000).unwrap();
        assert_eq!(v.duration, 1);
        assert_eq!(d.non_monotonic, 1);
    }

    #[test]
    fn a_stall_reuses_the_previous_duration() {
        let mut d = DurationFiller::default();
        d.push(f(TrackKind::Video, 0), 90_000);
        d.push(f(TrackKind::Video, 3000), 90_000);
        let v = d
            .push(f(TrackKind::Video, 3000 + 90_000 * 60), 90_000)
            .unwrap();
        assert_eq!(v.duration, 3000);
    }
}
