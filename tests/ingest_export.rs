//! Ingest from real RTSP cameras (GStreamer), buffer, and export ranges that ffprobe judges.

use porchlight_testkit as support;

use std::time::Duration;

use support::camera::{Camera, Codec, Stream};
use support::ffprobe::{decode_ok, probe};
use support::{camera_toml, out_path, Daemon, FAST_INGEST};

fn buffered_secs(c: &serde_json::Value) -> f64 {
    match (c["buffered_from_ms"].as_i64(), c["buffered_to_ms"].as_i64()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
        _ => 0.0,
    }
}

#[test]
fn two_cameras_h264_with_digest_auth_and_h265_export_as_playable_mp4() {
    let secured = Camera::builder()
        .stream_config(
            Stream::new("main", Codec::H264)
                .size(320, 240)
                .fps(15)
                .gop(15),
        )
        .auth("viewer", "s3cret-pw")
        .start();
    let plain = Camera::builder()
        .stream_config(
            Stream::new("hevc", Codec::H265)
                .size(320, 240)
                .fps(15)
                .gop(15),
        )
        .start();
    let pw_dir = tempfile::tempdir().unwrap();
    let pw_file = pw_dir.path().join("pw");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    let body = format!(
        "{FAST_INGEST}{}{}",
        camera_toml(
            "front",
            &secured.url("main"),
            &format!(
                "username = \"viewer\"\npassword_file = {:?}",
                pw_file.display().to_string()
            )
        ),
        camera_toml("yard", &plain.url("hevc"), "")
    );
    let d = Daemon::start(&body);

    for id in ["front", "yard"] {
        d.wait_camera(id, Duration::from_secs(60), "10 s buffered", |c| {
            buffered_secs(c) >= 10.0
        });
    }
    let front = d.camera("front");
    assert_eq!(front["state"], "streaming", "{front:#}");
    assert_eq!(front["codec"], "h264");
    assert_eq!(
        (front["width"].as_u64(), front["height"].as_u64()),
        (Some(320), Some(240))
    );
    let fps = front["fps"].as_f64().expect("fps measured");
    assert!((12.0..=18.0).contains(&fps), "fps {fps}");
    assert!(front["bitrate_bps"].as_u64().unwrap() > 10_000);
    assert_eq!(d.camera("yard")["codec"], "h265");

    // Export a closed range in the middle of the buffer, by RFC 3339 times.
    let from_ms = front["buffered_from_ms"].as_i64().unwrap() + 2_000;
    let to_ms = from_ms + 6_000;
    let clip = out_path(&d, "front.mp4");
    let out = d.export_range("front", from_ms, to_ms, &clip);
    assert!(out.contains("wrote"), "{out}");
    let p = probe(&clip);
    assert_eq!(p.codec_name, "h264");
    assert_eq!((p.width, p.height), (320, 240));
    // Whole GOPs (1 s at 15 fps) covering 6 s: between 6 and 8 s of frames.
    assert!(
        (6.0..=8.5).contains(&p.duration_s),
        "duration {} ({out})",
        p.duration_s
    );
    let expected = p.duration_s * 15.0;
    assert!(
        (p.nb_frames as f64 - expected).abs() <= 3.0,
        "{} frames for {} s at 15 fps",
        p.nb_frames,
        p.duration_s
    );
    let plan = d.get(&format!(
        "/api/v1/export/plan?camera=front&from={from_ms}&to={to_ms}"
    ));
    assert_eq!(plan["video_frames"].as_u64(), Some(p.nb_frames), "{plan:#}");
    assert!(plan["from_ms"].as_i64().unwrap() <= from_ms);
    decode_ok(&clip);
    // The export is in the resident's audit log, with its range; planning alone is not.
    let audit = d.get("/api/v1/audit?limit=100");
    let exports: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "clip_exported")
        .collect();
    assert_eq!(exports.len(), 1, "{audit:#}");
    assert_eq!(exports[0]["camera"], "front");
    assert_eq!(exports[0]["actor"], "resident");
    assert_eq!(exports[0]["detail"]["from_ms"], plan["from_ms"]);

    // H.265, with --last.
    let clip = out_path(&d, "yard.mp4");
    d.cli_ok(&[
        "export",
        "--camera",
        "yard",
        "--last",
        "5s",
        "-o",
        clip.to_str().unwrap(),
    ]);
    let p = probe(&clip);
    assert_eq!(p.codec_name, "hevc");
    assert_eq!((p.width, p.height), (320, 240));
    assert!(p.nb_frames >= 4 * 15, "{} frames", p.nb_frames);
    decode_ok(&clip);

    // status and cameras speak plainly and never print the password.
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("2 configured, 2 streaming"), "{status}");
    assert!(status.contains("not paired"), "{status}");
    let cams = d.cli_ok(&["cameras"]);
    assert!(
        cams.contains("h264 320x240") && cams.contains("h265 320x240"),
        "{cams}"
    );
    for text in [&status, &cams, &d.logs()] {
        assert!(!text.contains("s3cret-pw"), "password leaked:\n{text}");
    }
}

#[test]
fn export_outside_the_buffer_says_so() {
    let cam = Camera::h264("cam");
    let d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c1", &cam.url("cam"), "")
    ));
    d.wait_camera("c1", Duration::from_secs(60), "3 s buffered", |c| {
        buffered_secs(c) >= 3.0
    });
    let clip = out_path(&d, "old.mp4");
    let out = d.cli(&[
        "export",
        "--camera",
        "c1",
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-01T00:05:00Z",
        "-o",
        clip.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing is buffered") && err.contains("the buffer holds"),
        "{err}"
    );
    assert!(!clip.exists());

    // A range that starts before the buffer is exported from its start, with a note.
    let c = d.camera("c1");
    let first = c["buffered_from_ms"].as_i64().unwrap();
    let out = d.export_range("c1", first - 60_000, first + 2_000, &clip);
    assert!(out.contains("note: nothing buffered from"), "{out}");
    decode_ok(&clip);

    let unknown = d.cli(&["export", "--camera", "nope", "--last", "5s", "-o", "x.mp4"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no camera \"nope\""));
}

#[test]
fn api_refuses_requests_without_the_token() {
    let d = Daemon::start("");
    let url = format!("http://127.0.0.1:{}/api/v1/status", d.api_port);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent.get(&url).call().unwrap();
    assert_eq!(resp.status(), 401);
    let resp = agent
        .get(&url)
        .header("Authorization", "Bearer 00")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.into_body().read_to_string().unwrap();
    assert!(body.contains("\"unauthorized\""), "{body}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.data_dir().join("api.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // With the token (what the CLI does), it answers.
    assert_eq!(d.get("/api/v1/status")["paired"], false);
}

#[test]
fn aac_audio_is_kept_when_enabled_and_left_out_when_not() {
    // Two paths, both with audio: GStreamer's shared media answers 503 when a second client
    // sets up a different set of streams of the same path while the first is starting.
    let cam = Camera::builder()
        .stream_config(Stream::new("av", Codec::H264).fps(15).gop(15).audio())
        .stream_config(Stream::new("av2", Codec::H264).fps(15).gop(15).audio())
        .start();
    let body = format!(
        "{FAST_INGEST}{}{}",
        camera_toml("with-audio", &cam.url("av"), "audio = true"),
        camera_toml("video-only", &cam.url("av2"), "")
    );
    let d = Daemon::start(&body);
    for id in ["with-audio", "video-only"] {
        d.wait_camera(id, Duration::from_secs(60), "5 s buffered", |c| {
            buffered_secs(c) >= 5.0
        });
    }
    assert_eq!(d.camera("with-audio")["audio"], "aac");
    assert!(d.camera("video-only")["audio"].is_null());

    let clip = out_path(&d, "av.mp4");
    d.cli_ok(&[
        "export",
        "--camera",
        "with-audio",
        "--last",
        "4s",
        "-o",
        clip.to_str().unwrap(),
    ]);
    let p = probe(&clip);
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{p:?}");
    assert_eq!(p.codec_name, "h264");
    decode_ok(&clip);

    let clip = out_path(&d, "v.mp4");
    d.cli_ok(&[
        "export",
        "--camera",
        "video-only",
        "--last",
        "4s",
        "-o",
        clip.to_str().unwrap(),
    ]);
    assert_eq!(probe(&clip).audio_codec, None);
}

#[test]
fn a_camera_that_comes_back_with_another_resolution_gets_a_new_init_segment() {
    let mut cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).size(320, 240).fps(15).gop(15))
        .start();
    let port = cam.port();
    let d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    let before = d.wait_camera("c", Duration::from_secs(60), "3 s buffered", |c| {
        buffered_secs(c) >= 3.0
    });
    cam.stop();
    drop(cam);
    let _cam2 = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).size(640, 360).fps(15).gop(15))
        .port(port)
        .start();
    let after = d.wait_camera(
        "c",
        Duration::from_secs(60),
        "new resolution streaming",
        |c| {
            c["width"] == 640
                && c["buffered_to_ms"].as_i64()
                    > Some(before["buffered_to_ms"].as_i64().unwrap() + 3_000)
        },
    );
    let from = after["buffered_from_ms"].as_i64().unwrap();
    let to = after["buffered_to_ms"].as_i64().unwrap();
    // The whole range: the export stops at the change and says where to continue.
    let plan = d.get(&format!("/api/v1/export/plan?camera=c&from={from}&to={to}"));
    let change = plan["stopped_at_parameter_change_ms"]
        .as_i64()
        .expect("change reported");
    let clip = out_path(&d, "old.mp4");
    let out = d.export_range("c", from, to, &clip);
    assert!(out.contains("changed its stream parameters"), "{out}");
    assert_eq!((probe(&clip).width, probe(&clip).height), (320, 240));
    let clip = out_path(&d, "new.mp4");
    d.export_range("c", change, to, &clip);
    let p = probe(&clip);
    assert_eq!((p.width, p.height), (640, 360));
    decode_ok(&clip);
}

#[test]
fn record_sub_stores_the_substream_while_the_main_stream_stays_live() {
    let cam = Camera::builder()
        .stream_config(
            Stream::new("main", Codec::H264)
                .size(640, 360)
                .fps(15)
                .gop(15),
        )
        .stream_config(
            Stream::new("sub", Codec::H264)
                .size(320, 240)
                .fps(15)
                .gop(15),
        )
        .start();
    let extra = format!("substream_url = \"{}\"\nrecord = \"sub\"", cam.url("sub"));
    let d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("main"), &extra)
    ));
    let c = d.wait_camera("c", Duration::from_secs(60), "4 s buffered", |c| {
        buffered_secs(c) >= 4.0
    });
    // Health (and the live path) is the main stream...
    assert_eq!(
        (c["width"].as_u64(), c["height"].as_u64()),
        (Some(640), Some(360)),
        "{c:#}"
    );
    assert_eq!(c["record"], "sub");
    // ...while the disk holds the substream.
    let clip = out_path(&d, "sub.mp4");
    d.cli_ok(&[
        "export",
        "--camera",
        "c",
        "--last",
        "3s",
        "-o",
        clip.to_str().unwrap(),
    ]);
    let p = probe(&clip);
    assert_eq!((p.width, p.height), (320, 240));
    decode_ok(&clip);
}
