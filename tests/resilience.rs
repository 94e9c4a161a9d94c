//! Hostile and broken cameras: the daemon keeps running and says what is wrong in plain words.

use porchlight_testkit as support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use support::camera::{Camera, Codec, Stream};
use support::{camera_toml, Daemon, FAST_INGEST};

#[test]
fn camera_restart_reconnects_and_the_gap_is_reported() {
    let mut cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .start();
    let d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    let before = d.wait_camera("c", Duration::from_secs(60), "3 s buffered", |c| {
        c["buffered_to_ms"].as_i64().unwrap_or(0) - c["buffered_from_ms"].as_i64().unwrap_or(0)
            >= 3_000
    });
    assert_eq!(before["reconnects"], 0);

    cam.stop();
    d.wait_camera("c", Duration::from_secs(30), "failed state", |c| {
        c["state"] == "failed"
    });
    std::thread::sleep(Duration::from_secs(3));
    cam.restart();
    let after = d.wait_camera("c", Duration::from_secs(60), "streaming again", |c| {
        c["state"] == "streaming"
            && c["reconnects"].as_u64() >= Some(1)
            && c["buffered_to_ms"].as_i64()
                > Some(before["buffered_to_ms"].as_i64().unwrap() + 4_000)
    });
    let from = after["buffered_from_ms"].as_i64().unwrap();
    let to = after["buffered_to_ms"].as_i64().unwrap();
    let plan = d.get(&format!("/api/v1/export/plan?camera=c&from={from}&to={to}"));
    let gaps = plan["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "one outage, one gap: {plan:#}");
    let gap_s = (gaps[0]["to_ms"].as_i64().unwrap() - gaps[0]["from_ms"].as_i64().unwrap()) / 1000;
    assert!(gap_s >= 3, "gap of {gap_s} s: {plan:#}");

    let clip = d.dir.path().join("gap.mp4");
    let out = d.export_range("c", from, to, &clip);
    assert!(out.contains("gap of"), "{out}");
    support::ffprobe::decode_ok(&clip);
}

#[test]
fn wrong_password_garbage_port_and_closed_port_fail_with_clear_reasons() {
    let cam = Camera::builder()
        .stream("s", Codec::H264)
        .auth("viewer", "right-password")
        .start();

    // A "camera" that answers every connection with junk.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in garbage.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.read(&mut buf);
                let _ =
                    conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02garbage garbage\r\n\r\n");
            });
        }
    });
    // A port where nothing listens.
    let closed_port = support::free_port();

    let body = format!(
        "{FAST_INGEST}{}{}{}",
        camera_toml(
            "badpw",
            &cam.url("s"),
            "username = \"viewer\"\npassword = \"wrong-password\""
        ),
        camera_toml("junk", &format!("rtsp://127.0.0.1:{garbage_port}/s"), ""),
        camera_toml("gone", &format!("rtsp://127.0.0.1:{closed_port}/s"), ""),
    );
    let d = Daemon::start(&body);
    let reason = |id: &str, needle: &'static str| {
        d.wait_camera(id, Duration::from_secs(30), needle, |c| {
            c["last_error"].as_str().is_some_and(|e| e.contains(needle))
        })
    };
    let c = reason("badpw", "401 unauthorized");
    assert_eq!(c["state"], "failed");
    reason("junk", "not RTSP");
    let c = reason("gone", "unreachable");
    // It keeps trying, forever.
    d.wait_camera("gone", Duration::from_secs(30), "retries", |c| {
        c["reconnects"].as_u64() >= Some(2)
    });
    assert!(
        c["last_error"].as_str().unwrap().contains("refused"),
        "{c:#}"
    );

    // The daemon is alive and its CLI explains.
    let out = d.cli_ok(&["cameras"]);
    assert!(
        out.contains("401 unauthorized: wrong username or password"),
        "{out}"
    );
    assert!(!d.logs().contains("wrong-password"), "password in the logs");
    assert!(!out.contains("wrong-password"));
}

#[test]
fn invalid_config_reports_every_problem_and_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[cameras]]\nid = \"a b\"\nurl = \"rtsp://admin:pw123@192.0.2.1/x\"\n[[cameras]]\nid = \"c\"\nurl = \"http://192.0.2.2/\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["run", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(err.contains("contains credentials"), "{err}");
    assert!(err.contains("rtsp://"), "{err}");
    assert!(!err.contains("pw123"), "{err}");
}

#[test]
fn udp_transport_streams_too() {
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .start();
    let d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "transport = \"udp\"")
    ));
    let c = d.wait_camera("c", Duration::from_secs(60), "segments over UDP", |c| {
        c["segments_written"].as_u64() >= Some(2)
    });
    assert_eq!(c["state"], "streaming");
    let clip = d.dir.path().join("udp.mp4");
    d.cli_ok(&[
        "export",
        "--camera",
        "c",
        "--last",
        "2s",
        "-o",
        clip.to_str().unwrap(),
    ]);
    support::ffprobe::decode_ok(&clip);
}
