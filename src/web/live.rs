//! `GET /api/v1/cameras/{id}/live.mp4`: the camera's live feed for the resident's browser, as
//! one endless fragmented MP4 (init segment, then one `moof`+`mdat` per video frame), cut by
//! the same [`LiveFragmenter`] the city feeds use. No transcoding: the browser plays the
//! camera's H.264/H.265 as is (Media Source Extensions, or a plain `<video>`).
//!
//! The stream starts at the last keyframe (the feed's pre-roll), so a picture shows at once.
//! It ends when the camera's session ends or changes parameters (a new init segment would be
//! needed; the page reconnects), when the daemon shuts down, or when the browser goes away. A
//! browser that falls behind skips to the next keyframe rather than holding up the camera.
//! This is the resident's own view on the LAN: it never touches consent, grants or the uplink.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::api::{ApiError, AppState};
use crate::ingest::live::{LiveEvent, LiveFeed};
use crate::media::live::LiveFragmenter;
use crate::media::{Frame, StreamInfo, TrackKind};
use crate::shutdown::Shutdown;

/// Most previews open at once (each costs a subscription and a fragment per frame).
pub const MAX_PREVIEWS: usize = 8;
/// How long a request waits for a camera that is (re)connecting.
const WAIT_FOR_PARAMS: Duration = Duration::from_secs(10);

/// Counts open previews.
#[derive(Debug, Default)]
pub struct Previews(AtomicUsize);

struct Slot(Arc<Previews>);

impl Drop for Slot {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The handler; `previews` and `shutdown` come from the web state.
pub async fn live_mp4(
    State(state): State<AppState>,
    Path(id): Path<String>,
    previews: Arc<Previews>,
    shutdown: Shutdown,
) -> Result<Response, ApiError> {
    let feed: LiveFeed = state
        .camera(&id)
        .map(|c| c.live.clone())
        .ok_or_else(|| ApiError::NotFound(format!("no camera {id:?}")))?;
    if previews.0.fetch_add(1, Ordering::SeqCst) >= MAX_PREVIEWS {
        previews.0.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::Unavailable(format!(
            "at most {MAX_PREVIEWS} live previews at once; close one"
        )));
    }
    let slot = Slot(previews);
    let mut sub = feed.subscribe();
    let info = match sub.params.take() {
        Some(i) => i,
        None => {
            let wait = async {
                loop {
                    match sub.events.recv().await {
                        Ok(LiveEvent::Params(i)) => return Some(i),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            };
            match tokio::time::timeout(WAIT_FOR_PARAMS, wait).await {
                Ok(Some(i)) => i,
                _ => {
                    return Err(ApiError::Unavailable(format!(
                        "camera {id:?} is not streaming"
                    )))
                }
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let preroll = std::mem::take(&mut sub.preroll);
    tokio::spawn(async move {
        let _slot = slot;
        pump(info, preroll, sub.events, tx, shutdown).await;
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// Fragments frames into the channel until the feed ends, the receiver is gone or shutdown.
async fn pump(
    info: Arc<StreamInfo>,
    preroll: Vec<Arc<Frame>>,
    mut events: broadcast::Receiver<LiveEvent>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    shutdown: Shutdown,
) {
    let mut fragmenter = LiveFragmenter::new(&info);
    if tx
        .send(Ok(fragmenter.init_segment().clone()))
        .await
        .is_err()
    {
        return;
    }
    let mut skipping = false;
    for f in &preroll {
        if !send_frame(&mut fragmenter, f, &tx, &mut skipping) {
            return;
        }
    }
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tx.closed() => return,
            ev = events.recv() => match ev {
                Ok(LiveEvent::Frame(f)) => {
                    if !send_frame(&mut fragmenter, &f, &tx, &mut skipping) {
                        return;
                    }
                }
                Ok(LiveEvent::Params(_)) | Ok(LiveEvent::Lost) => return,
                Err(broadcast::error::RecvError::Lagged(_)) => skipping = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Returns false when the browser is gone.
fn send_frame(
    fragmenter: &mut LiveFragmenter,
    frame: &Frame,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    skipping: &mut bool,
) -> bool {
    if *skipping && frame.track == TrackKind::Video {
        if !frame.is_key {
            return true;
        }
        *skipping = false;
    }
    match fragmenter.push(frame) {
        Ok(Some(frag)) => match tx.try_send(Ok(frag.bytes)) {
            Ok(()) => true,
            // The browser reads slower than the camera sends: skip to the next keyframe.
            Err(mpsc::error::TrySendError::Full(_)) => {
                *skipping = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        },
        Ok(None) => true,
        Err(e) => {
            tracing::debug!(error = %e, "Preview fragment not written");
            *skipping = true;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{mp4, TrackInfo};

    fn info() -> Arc<StreamInfo> {
        Arc::new(StreamInfo {
            video: TrackInfo {
                kind: TrackKind::Video,
                timescale: 90_000,
                sample_entry: vec![0, 0, 0, 8, b'a', b'v', b'c', b'1'],
                width: 64,
                height: 64,
            },
            audio: None,
        })
    }

    fn frame(dts: i64, key: bool) -> Arc<Frame> {
        Arc::new(Frame {
            track: TrackKind::Video,
            dts,
            duration: 6000,
            wall_ms: 1_000 + dts / 90,
            is_key: key,
            data: Bytes::from_static(b"frame"),
        })
    }

    #[tokio::test]
    async fn preview_is_init_then_a_fragment_per_frame_and_ends_with_the_camera() {
        let feed = LiveFeed::new();
        feed.params(info());
        feed.frame(frame(0, true));
        let mut sub = feed.subscribe();
        let (tx, mut rx) = mpsc::channel(64);
        let (_trigger, shutdown) = Shutdown::new();
        let preroll = std::mem::take(&mut sub.preroll);
        let task = tokio::spawn(pump(
            sub.params.take().unwrap(),
            preroll,
            sub.events,
            tx,
            shutdown,
        ));
        let init = rx.recv().await.unwrap().unwrap();
        assert_eq!(&init[4..8], b"ftyp");
        let first = rx.recv().await.unwrap().unwrap();
        assert!(mp4::parse_fragment(&first).unwrap().tracks[0].samples[0].is_sync());
        feed.frame(frame(6000, false));
        let second = rx.recv().await.unwrap().unwrap();
        assert_eq!(mp4::parse_fragment(&second).unwrap().tracks.len(), 1);
        feed.lost();
        task.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends with the camera");
    }

    #[tokio::test]
    async fn a_slow_browser_skips_to_the_next_keyframe() {
        let mut fr = LiveFragmenter::new(&info());
        let (tx, mut rx) = mpsc::channel(1);
        let mut skipping = false;
        assert!(send_frame(&mut fr, &frame(0, true), &tx, &mut skipping));
        // The channel is full: this frame is dropped and skipping starts.
        assert!(send_frame(&mut fr, &frame(6000, false), &tx, &mut skipping));
        assert!(skipping);
        rx.recv().await.unwrap().unwrap();
        // Room again, but a delta frame would not decode: still skipped.
        assert!(send_frame(
            &mut fr,
            &frame(12000, false),
            &tx,
            &mut skipping
        ));
        assert!(rx.try_recv().is_err());
        assert!(send_frame(&mut fr, &frame(18000, true), &tx, &mut skipping));
        assert!(!skipping);
        let f = rx.recv().await.unwrap().unwrap();
        assert!(mp4::parse_fragment(&f).unwrap().tracks[0].samples[0].is_sync());
        drop(rx);
        assert!(!send_frame(
            &mut fr,
            &frame(24000, false),
            &tx,
            &mut skipping
        ));
    }
}
