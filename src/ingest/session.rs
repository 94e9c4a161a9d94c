//! One RTSP session with retina: DESCRIBE → SETUP → PLAY → frames until error, timeout or
//! shutdown.
//!
//! Quirks handled here:
//! - retina has no read timeout: every wait for the next item is bounded by
//!   `ingest.read_timeout`, and connect + setup by `ingest.connect_timeout`.
//! - Parameters may be missing until the first frame and may change mid-stream
//!   (`has_new_parameters`); each change yields a new [`StreamInfo`] and so a new init segment.
//! - Wall clock: the first video frame of a session is pinned to the local clock; later frames
//!   are placed by their RTP timestamp distance from it, so a stalled network does not bunch
//!   frames together in time. Audio uses the same anchor with its own clock rate.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TeardownPolicy, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tracing::{debug, info};
use url::Url;

use super::duration::DurationFiller;
use super::health::Health;
use super::live::LiveFeed;
use super::writer::SegmentWriter;
use super::IngestError;
use crate::clock::now_ms;
use crate::ingest::spec::{self, CameraSpec};
use crate::ingest::IngestConfig;
use crate::media::{Frame, StreamInfo, TrackInfo, TrackKind};
use crate::shutdown::Shutdown;

/// Runs one session. `Ok(())` means shutdown was requested; the stream ending is an error.
pub async fn run_once(
    spec: &CameraSpec,
    url: &Url,
    opts: &IngestConfig,
    health: &Health,
    live: &LiveFeed,
    writer: &SegmentWriter,
    shutdown: &Shutdown,
) -> Result<(), IngestError> {
    let connect = async {
        let creds = spec.credentials.as_ref().map(|c| Credentials {
            username: c.username.clone(),
            password: c.password.expose().to_owned(),
        });
        let session_opts = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("porchlight/{}", env!("CARGO_PKG_VERSION")))
            .teardown(TeardownPolicy::Auto);
        let mut session = Session::describe(url.clone(), session_opts)
            .await
            .map_err(|e| IngestError::rtsp(&e))?;
        let streams = session.streams();
        let video_i = streams
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| IngestError::UnsupportedCodec {
                offered: offered(streams),
            })?;
        let audio_i = if spec.audio {
            streams
                .iter()
                .position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic")
        } else {
            None
        };
        let transport = match spec.transport {
            spec::Transport::Tcp => Transport::default(),
            spec::Transport::Udp => "udp".parse().expect("retina knows udp"),
        };
        for i in std::iter::once(video_i).chain(audio_i) {
            session
                .setup(
                    i,
                    SetupOptions::default()
                        .transport(transport.clone())
                        .frame_format(FrameFormat::MP4),
                )
                .await
                .map_err(|e| IngestError::rtsp(&e))?;
        }
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| IngestError::rtsp(&e))?;
        let demuxed = playing.demuxed().map_err(|e| IngestError::rtsp(&e))?;
        Ok::<_, IngestError>((demuxed, video_i, audio_i))
    };
    let (mut demuxed, video_i, audio_i) = tokio::select! {
        biased;
        _ = shutdown.wait() => return Ok(()),
        r = tokio::time::timeout(opts.connect_timeout.0, connect) => match r {
            Ok(r) => r?,
            Err(_) => return Err(IngestError::ConnectTimeout(opts.connect_timeout.0)),
        },
    };
    info!(camera = %spec.id, url = %crate::secret::redact_url(url.as_str()), "Camera session playing");

    let mut info: Option<Arc<StreamInfo>> = None;
    let mut audio_track: Option<TrackInfo> = None;
    let mut filler = DurationFiller::default();
    // (local wall ms, video elapsed ticks) of the first video frame of the session.
    let mut anchor: Option<(i64, i64)> = None;
    let read_timeout = opts.read_timeout.0;

    let result = loop {
        let item = tokio::select! {
            biased;
            _ = shutdown.wait() => break Ok(()),
            r = tokio::time::timeout(read_timeout, demuxed.next()) => match r {
                Err(_) => break Err(IngestError::ReadTimeout(read_timeout)),
                Ok(None) => break Err(IngestError::StreamEnded),
                Ok(Some(Err(e))) => break Err(IngestError::rtsp(&e)),
                Ok(Some(Ok(item))) => item,
            },
        };
        match item {
            CodecItem::VideoFrame(frame) if frame.stream_id() == video_i => {
                if info.is_none() || frame.has_new_parameters() {
                    let streams = demuxed.streams();
                    if audio_track.is_none() {
                        audio_track = audio_i.and_then(|i| audio_track_info(&streams[i]));
                    }
                    let Some(ParametersRef::Video(vp)) = streams[video_i].parameters() else {
                        break Err(IngestError::Parameters(
                            "video parameters missing after a frame".into(),
                        ));
                    };
                    let sample_entry = match vp.mp4_sample_entry().build() {
                        Ok(b) => b,
                        Err(e) => break Err(IngestError::Parameters(e.to_string())),
                    };
                    let (width, height) = vp.pixel_dimensions();
                    let codec = streams[video_i].encoding_name().to_owned();
                    health.stream_info(
                        &codec,
                        vp.rfc6381_codec(),
                        width,
                        height,
                        audio_track.as_ref().map(|_| "aac"),
                    );
                    let new = Arc::new(StreamInfo {
                        video: TrackInfo {
                            kind: TrackKind::Video,
                            timescale: streams[video_i].clock_rate_hz(),
                            sample_entry,
                            width,
                            height,
                        },
                        audio: audio_track.clone(),
                    });
                    if info.as_deref() != Some(&*new) {
                        debug!(camera = %spec.id, %codec, width, height, "New stream parameters");
                        // Frames held back belong to the old parameters.
                        for f in filler.finish() {
                            writer.frame(Arc::new(f));
                        }
                        live.params(new.clone());
                        writer.params(new.clone());
                        info = Some(new);
                    }
                }
                let ts = frame.timestamp();
                let elapsed = ts.elapsed();
                let clock = i64::from(ts.clock_rate().get());
                let now = now_ms();
                let (wall0, ticks0) = *anchor.get_or_insert((now, elapsed));
                let wall_ms = wall0 + (elapsed - ticks0) * 1000 / clock;
                health.frame(wall_ms, frame.data().len(), frame.loss(), Instant::now());
                let is_key = frame.is_random_access_point();
                let f = Frame {
                    track: TrackKind::Video,
                    dts: elapsed,
                    duration: 0,
                    wall_ms,
                    is_key,
                    data: frame.into_data().into(),
                };
                deliver(f, &mut filler, clock as u32, live, writer);
            }
            CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == audio_i => {
                health.lost(frame.loss());
                // Audio before the first video frame has no anchor yet and no init segment.
                let (Some((wall0, _)), Some(_)) = (anchor, &info) else {
                    continue;
                };
                if audio_track.is_none() {
                    continue;
                }
                let ts = frame.timestamp();
                let clock = i64::from(ts.clock_rate().get());
                let f = Frame {
                    track: TrackKind::Audio,
                    dts: ts.elapsed(),
                    duration: 0,
                    wall_ms: wall0 + ts.elapsed() * 1000 / clock,
                    is_key: true,
                    data: bytes::Bytes::copy_from_slice(frame.data()),
                };
                deliver(f, &mut filler, clock as u32, live, writer);
            }
            _ => {}
        }
    };
    for f in filler.finish() {
        writer.frame(Arc::new(f));
    }
    // Close the open segment: it ends here whether we stop, reconnect or fail.
    writer.end_of_session();
    result
}

/// The live path gets the frame at once with an estimated duration (latency: no frame is held
/// back); the store gets it once the next frame has measured its duration.
fn deliver(
    frame: Frame,
    filler: &mut DurationFiller,
    timescale: u32,
    live: &LiveFeed,
    writer: &SegmentWriter,
) {
    let mut now = frame.clone();
    now.duration = filler.estimate(frame.track, timescale);
    live.frame(Arc::new(now));
    if let Some(done) = filler.push(frame, timescale) {
        writer.frame(Arc::new(done));
    }
}

fn audio_track_info(stream: &retina::client::Stream) -> Option<TrackInfo> {
    let Some(ParametersRef::Audio(ap)) = stream.parameters() else {
        return None;
    };
    let sample_entry = ap.mp4_sample_entry().build().ok()?;
    Some(TrackInfo {
        kind: TrackKind::Audio,
        timescale: ap.clock_rate(),
        sample_entry,
        width: 0,
        height: 0,
    })
}

fn offered(streams: &[retina::client::Stream]) -> String {
    let list: Vec<String> = streams
        .iter()
        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
        .collect();
    if list.is_empty() {
        "no streams".to_owned()
    } else {
        list.join(", ")
    }
}
