//! Self-test of the test rig, independent of Porchlight's code: the simulated cameras serve
//! H.264 and H.265 (with AAC) over RTSP, enforce digest auth, and ffmpeg records them into
//! MP4 files that ffprobe reads back. If this fails, the integration tests that use the rig
//! cannot be trusted either; `.ci/run` installs what it needs.

use porchlight_testkit as support;

use support::camera::{AuthMethod, Camera, Codec, Stream};
use support::ffprobe::{decode_ok, probe, record};

/// Seconds recorded per check; at the default 15 fps that is about 45 frames.
const SECONDS: u32 = 3;

#[test]
fn h264_camera_with_digest_auth_records_and_rejects_a_wrong_password() {
    let cam = Camera::builder()
        .stream("main", Codec::H264)
        .auth("viewer", "s3cret pass")
        .start();
    let dir = tempfile::tempdir().unwrap();

    let mp4 = dir.path().join("h264.mp4");
    let out = record(&cam.url_with_credentials("main"), SECONDS, &mp4);
    assert!(
        out.status.success(),
        "ffmpeg with the right password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = probe(&mp4);
    assert_eq!(p.codec_name, "h264", "{p:?}");
    assert_eq!((p.width, p.height), (320, 240), "{p:?}");
    assert!(p.nb_frames >= 15, "too few frames in {SECONDS} s: {p:?}");
    assert!(p.duration_s > 1.0, "{p:?}");
    assert_eq!(p.audio_codec, None, "{p:?}");
    decode_ok(&mp4);

    for (what, url) in [
        (
            "a wrong password",
            cam.url("main")
                .replacen("rtsp://", "rtsp://viewer:wrong@", 1),
        ),
        ("no credentials", cam.url("main")),
    ] {
        let out = record(&url, 1, dir.path().join("denied.mp4"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("401"),
            "with {what} the camera should answer 401 ({}): {stderr}",
            out.status
        );
    }
}

#[test]
fn h265_camera_with_aac_records() {
    let cam = Camera::builder()
        .stream_config(Stream::new("hevc", Codec::H265).size(640, 360).fps(10))
        .audio("hevc")
        .start();
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("h265.mp4");
    let out = record(&cam.url("hevc"), SECONDS, &mp4);
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = probe(&mp4);
    assert_eq!(p.codec_name, Codec::H265.ffprobe_name(), "{p:?}");
    assert_eq!((p.width, p.height), (640, 360), "{p:?}");
    assert!(p.nb_frames >= 10, "too few frames in {SECONDS} s: {p:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{p:?}");
    decode_ok(&mp4);
}

#[test]
fn basic_auth_camera_restarts_on_the_same_port() {
    let mut cam = Camera::builder()
        .stream("cam", Codec::H264)
        .auth("u", "p")
        .auth_method(AuthMethod::Basic)
        .start();
    let port = cam.port();
    let url = cam.url_with_credentials("cam");
    let dir = tempfile::tempdir().unwrap();

    cam.stop();
    assert!(!cam.is_running());
    let out = record(&url, 1, dir.path().join("down.mp4"));
    assert!(!out.status.success(), "a stopped camera still answered");

    cam.restart();
    assert_eq!(cam.port(), port);
    let mp4 = dir.path().join("again.mp4");
    let out = record(&url, 1, &mp4);
    assert!(
        out.status.success(),
        "ffmpeg after restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe(&mp4).codec_name, "h264");
}
