//! The live path: every camera's frames in memory, for sharing to pick up later.
//!
//! A [`LiveFeed`] is a `tokio::sync::broadcast` of frames plus a pre-roll: the frames since the
//! last video keyframe, so a new subscriber can start with a picture at once instead of waiting
//! up to a GOP. Slow subscribers lag (and are told how many frames they missed); they never
//! hold up ingest or the store.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::media::{Frame, StreamInfo, TrackKind};

/// What a subscriber receives.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// New stream parameters: an init segment must be (re)sent before the next frames.
    Params(Arc<StreamInfo>),
    /// A frame with its duration filled in.
    Frame(Arc<Frame>),
    /// The camera's session ended (the next event will be `Params` when it is back).
    Lost,
}

/// Upper bound on the pre-roll, in frames: a camera with a very long GOP must not make the
/// pre-roll grow without limit (at 30 fps this is 20 s).
const MAX_PREROLL_FRAMES: usize = 600;

/// A subscription: where to start, then the stream of events.
pub struct Subscription {
    /// Current parameters, if the camera is streaming.
    pub params: Option<Arc<StreamInfo>>,
    /// Frames since the last keyframe, oldest first, starting with that keyframe.
    pub preroll: Vec<Arc<Frame>>,
    /// Everything after the pre-roll.
    pub events: broadcast::Receiver<LiveEvent>,
}

/// The live broadcast of one camera.
#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<LiveEvent>,
    state: Arc<Mutex<PreRoll>>,
}

#[derive(Default)]
struct PreRoll {
    params: Option<Arc<StreamInfo>>,
    frames: Vec<Arc<Frame>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    /// A feed with room for a few seconds of lag per subscriber.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(256);
        LiveFeed {
            tx,
            state: Arc::new(Mutex::new(PreRoll::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PreRoll> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New parameters from the camera.
    pub fn params(&self, info: Arc<StreamInfo>) {
        let mut st = self.lock();
        st.params = Some(info.clone());
        st.frames.clear();
        let _ = self.tx.send(LiveEvent::Params(info));
    }

    /// A frame whose duration is known.
    pub fn frame(&self, frame: Arc<Frame>) {
        let mut st = self.lock();
        if frame.track == TrackKind::Video && frame.is_key {
            st.frames.clear();
        }
        if st.frames.len() < MAX_PREROLL_FRAMES
            && (!st.frames.is_empty() || (frame.track == TrackKind::Video && frame.is_key))
        {
            st.frames.push(frame.clone());
        }
        // Sent under the lock so a subscriber never sees a frame both in its pre-roll and on
        // its receiver.
        let _ = self.tx.send(LiveEvent::Frame(frame));
    }

    /// The camera's session ended.
    pub fn lost(&self) {
        let mut st = self.lock();
        st.params = None;
        st.frames.clear();
        let _ = self.tx.send(LiveEvent::Lost);
    }

    /// Starts watching: the current parameters and pre-roll, then live events.
    pub fn subscribe(&self) -> Subscription {
        let st = self.lock();
        Subscription {
            params: st.params.clone(),
            preroll: st.frames.clone(),
            events: self.tx.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackInfo;

    fn frame(dts: i64, key: bool) -> Arc<Frame> {
        Arc::new(Frame {
            track: TrackKind::Video,
            dts,
            duration: 3000,
            wall_ms: dts / 90,
            is_key: key,
            data: bytes::Bytes::from_static(b"x"),
        })
    }

    fn info() -> Arc<StreamInfo> {
        Arc::new(StreamInfo {
            video: TrackInfo {
                kind: TrackKind::Video,
                timescale: 90_000,
                sample_entry: vec![],
                width: 2,
                height: 2,
            },
            audio: None,
        })
    }

    #[test]
    fn preroll_starts_at_the_last_keyframe() {
        let feed = LiveFeed::new();
        feed.params(info());
        feed.frame(frame(0, false)); // before any keyframe: not in the pre-roll
        feed.frame(frame(3000, true));
        feed.frame(frame(6000, false));
        feed.frame(frame(9000, true));
        feed.frame(frame(12000, false));
        let sub = feed.subscribe();
        let dts: Vec<i64> = sub.preroll.iter().map(|f| f.dts).collect();
        assert_eq!(dts, [9000, 12000]);
        assert!(sub.params.is_some());
    }

    #[tokio::test]
    async fn subscribers_get_frames_after_the_preroll_without_overlap() {
        let feed = LiveFeed::new();
        feed.params(info());
        feed.frame(frame(0, true));
        let mut sub = feed.subscribe();
        feed.frame(frame(3000, false));
        match sub.events.recv().await.unwrap() {
            LiveEvent::Frame(f) => assert_eq!(f.dts, 3000),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sub.preroll.len(), 1);
    }

    #[test]
    fn lost_clears_parameters_and_preroll() {
        let feed = LiveFeed::new();
        feed.params(info());
        feed.frame(frame(0, true));
        feed.lost();
        let sub = feed.subscribe();
        assert!(sub.params.is_none());
        assert!(sub.preroll.is_empty());
    }
}
