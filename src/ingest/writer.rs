//! The per-camera segment writer: a task between the RTSP session and the store.
//!
//! The session hands it frames without waiting ([`SegmentWriter::frame`] never blocks); the
//! task runs the GOP segmenter and writes finished segments to the store on the blocking pool
//! (write, fsync, rename, index). Its queue is bounded: when the disk falls behind, frames are
//! dropped until the next keyframe (a segment must start decodable), the loss is counted in
//! the camera's health, and the RTSP session is never held up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use super::health::Health;
use crate::media::segmenter::{Segment, Segmenter};
use crate::media::{Frame, StreamInfo, TrackKind};
use crate::store::{InitId, NewSegment, Store};

/// Frames queued between session and disk (about 20 s at 30 fps with audio).
const QUEUE_FRAMES: usize = 1024;

enum Msg {
    Params(Arc<StreamInfo>),
    Frame(Arc<Frame>),
    /// Frames were dropped or the session ended: close the open segment.
    Cut,
}

/// The session's handle on the writer task.
pub struct SegmentWriter {
    tx: Option<mpsc::Sender<Msg>>,
    skipping: AtomicBool,
    health: Health,
}

impl SegmentWriter {
    /// Starts the writer task for `camera`. With `record = false` nothing is written.
    pub fn spawn(
        camera: String,
        store: Arc<Store>,
        health: Health,
        record: bool,
    ) -> (SegmentWriter, JoinHandle<()>) {
        if !record {
            let handle = tokio::spawn(async {});
            let w = SegmentWriter {
                tx: None,
                skipping: AtomicBool::new(false),
                health,
            };
            return (w, handle);
        }
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let task = WriterTask {
            camera,
            store,
            health: health.clone(),
            segmenter: None,
            init: None,
        };
        let handle = tokio::spawn(task.run(rx));
        let w = SegmentWriter {
            tx: Some(tx),
            skipping: AtomicBool::new(false),
            health,
        };
        (w, handle)
    }

    /// New stream parameters: the open segment is closed and a new init segment stored.
    pub fn params(&self, info: Arc<StreamInfo>) {
        self.send(Msg::Params(info));
    }

    /// A frame with its duration known.
    pub fn frame(&self, frame: Arc<Frame>) {
        if self.skipping.load(Ordering::Relaxed) {
            if !(frame.track == TrackKind::Video && frame.is_key) {
                return;
            }
            // Resume at this keyframe, after closing whatever was open.
            if !self.send(Msg::Cut) {
                return;
            }
            self.skipping.store(false, Ordering::Relaxed);
        }
        self.send(Msg::Frame(frame));
    }

    /// The session ended: close the open segment.
    pub fn end_of_session(&self) {
        self.send(Msg::Cut);
    }

    fn send(&self, msg: Msg) -> bool {
        let Some(tx) = &self.tx else { return true };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.skipping.swap(true, Ordering::Relaxed) {
                    warn!("Disk is behind the camera: dropping frames until the next keyframe");
                    self.health.segment(false);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

struct WriterTask {
    camera: String,
    store: Arc<Store>,
    health: Health,
    segmenter: Option<Segmenter>,
    init: Option<InitId>,
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Params(info) => {
                    self.cut().await;
                    let segmenter = Segmenter::new(&info);
                    let bytes = segmenter.init_segment().clone();
                    let (store, camera) = (self.store.clone(), self.camera.clone());
                    match tokio::task::spawn_blocking(move || store.put_init(&camera, &bytes)).await
                    {
                        Ok(Ok(id)) => {
                            self.init = Some(id);
                            self.segmenter = Some(segmenter);
                        }
                        Ok(Err(e)) => {
                            error!(error = %e, "Cannot store the init segment; not recording until the next parameters");
                            self.init = None;
                            self.segmenter = None;
                        }
                        Err(e) => error!(error = %e, "Init segment write panicked"),
                    }
                }
                Msg::Frame(frame) => {
                    let Some(seg) = self.segmenter.as_mut() else {
                        continue;
                    };
                    if let Some(done) = seg.push((*frame).clone()) {
                        self.store_segment(done).await;
                    }
                }
                Msg::Cut => self.cut().await,
            }
        }
        self.cut().await;
    }

    /// Flushes the segmenter; it stays usable for frames that follow.
    async fn cut(&mut self) {
        if let Some(done) = self.segmenter.as_mut().and_then(Segmenter::flush) {
            self.store_segment(done).await;
        }
    }

    async fn store_segment(&mut self, seg: Segment) {
        let Some(init) = self.init else { return };
        let (store, camera) = (self.store.clone(), self.camera.clone());
        let result = tokio::task::spawn_blocking(move || {
            store.put_segment(
                &camera,
                NewSegment {
                    init,
                    start_ms: seg.start_ms,
                    end_ms: seg.end_ms,
                    video_frames: seg.video_frames,
                    audio_frames: seg.audio_frames,
                    bytes: seg.fragment,
                },
            )
        })
        .await;
        match result {
            Ok(Ok(meta)) => {
                debug!(
                    start_ms = meta.start_ms,
                    bytes = meta.bytes,
                    "Segment stored"
                );
                self.health.segment(true);
            }
            Ok(Err(e)) => {
                warn!(error = %e, "Segment not stored");
                self.health.segment(false);
            }
            Err(e) => {
                error!(error = %e, "Segment write panicked");
                self.health.segment(false);
            }
        }
    }
}
