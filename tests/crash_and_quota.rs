//! kill -9 during ingest, a damaged index, and a small quota: what was acknowledged survives,
//! the store repairs itself, and disk use stays within the quota.

use porchlight_testkit as support;

use std::path::Path;
use std::time::Duration;

use support::camera::{Camera, Codec, Stream};
use support::ffprobe::{decode_ok, probe};
use support::{camera_toml, Daemon, FAST_INGEST};

fn span(c: &serde_json::Value) -> (i64, i64) {
    (
        c["buffered_from_ms"].as_i64().unwrap_or(0),
        c["buffered_to_ms"].as_i64().unwrap_or(0),
    )
}

fn export_ok(d: &Daemon, cam: &str, from: i64, to: i64, name: &str) -> support::ffprobe::Probe {
    let clip = d.dir.path().join(name);
    d.export_range(cam, from, to, &clip);
    decode_ok(&clip);
    probe(&clip)
}

#[test]
fn kill_9_during_ingest_repeatedly_keeps_every_stored_segment() {
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(8))
        .start();
    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    let mut acknowledged: Vec<(i64, i64)> = Vec::new();
    for round in 0..4 {
        let c = d.wait_camera("c", Duration::from_secs(60), "new segments", |c| {
            span(c).1 > acknowledged.last().map_or(0, |a| a.1) + 2_500
        });
        acknowledged.push(span(&c));
        // Kill at a different point in the GOP each round.
        std::thread::sleep(Duration::from_millis(130 * round));
        d.kill9();
        d.restart();
        let after = d.camera("c");
        let (from, to) = span(&after);
        let (_, acked_to) = *acknowledged.last().unwrap();
        assert!(
            from <= acknowledged[0].0 && to >= acked_to,
            "round {round}: acknowledged up to {acked_to}, store now has {from}..{to}\n{}",
            d.logs()
        );
    }
    // Every earlier range still exports and decodes; the whole buffer too.
    let (first_from, _) = acknowledged[0];
    let (_, last_to) = *acknowledged.last().unwrap();
    let p = export_ok(&d, "c", first_from, first_from + 2_000, "early.mp4");
    assert_eq!(p.codec_name, "h264");
    let p = export_ok(&d, "c", first_from, last_to, "all.mp4");
    assert!(p.nb_frames > 0);
    // No temp files left behind after recovery.
    let leftovers = walk(&d.data_dir().join("segments"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn damaged_index_is_moved_aside_and_rebuilt_from_the_files() {
    let cam = Camera::h264("s");
    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    let c = d.wait_camera("c", Duration::from_secs(60), "4 s buffered", |c| {
        let (a, b) = span(c);
        b - a >= 4_000
    });
    let (from, to) = span(&c);
    assert!(d.stop(), "clean stop\n{}", d.logs());
    // Scribble over every file of the sled database.
    for f in walk(&d.data_dir().join("index")) {
        std::fs::write(&f, b"this is not a sled database").unwrap();
    }
    d.restart();
    let status = d.get("/api/v1/status");
    assert!(
        status["storage"]["used_bytes"].as_u64().unwrap() > 0,
        "{status:#}"
    );
    let moved = std::fs::read_dir(d.data_dir())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("index.broken"));
    assert!(moved, "the broken index was not moved aside\n{}", d.logs());
    let p = export_ok(&d, "c", from, to, "rebuilt.mp4");
    assert!(p.duration_s >= 3.0, "{p:?}");
}

#[test]
fn small_quota_evicts_oldest_and_disk_use_stays_within_quota_plus_one_segment() {
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).size(640, 360).fps(15).gop(15))
        .bitrate_kbps(2000)
        .start();
    let quota: u64 = 2 << 20;
    let d = Daemon::start(&format!(
        "[store]\nquota = {quota}\n{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    let first = d.wait_camera("c", Duration::from_secs(60), "first segment", |c| {
        c["segments_written"].as_u64() >= Some(1)
    });
    let oldest_at_start = first["buffered_from_ms"].as_i64().unwrap();
    // Run until at least twice the quota was written.
    let mut max_segment = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let status = d.get("/api/v1/status");
        let written = status["storage"]["written_total_bytes"].as_u64().unwrap();
        let on_disk: u64 = walk(&d.data_dir().join("segments"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "m4s"))
            .map(|p| {
                let n = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                max_segment = max_segment.max(n);
                n
            })
            .sum();
        assert!(
            on_disk <= quota + max_segment,
            "{on_disk} bytes of segments on disk > quota {quota} + one segment {max_segment}"
        );
        assert!(status["storage"]["used_bytes"].as_u64().unwrap() <= quota);
        if written > 2 * quota {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "camera too slow: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let c = d.camera("c");
    assert!(
        c["buffered_from_ms"].as_i64().unwrap() > oldest_at_start,
        "oldest segment not evicted: {c:#}"
    );
    assert_eq!(c["segments_failed"], 0, "{c:#}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn sigterm_closes_the_open_segment_and_exits_cleanly() {
    // A 4 s GOP: without the final flush up to 4 s would be lost at every stop.
    let cam = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(60))
        .start();
    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        camera_toml("c", &cam.url("s"), "")
    ));
    d.wait_camera("c", Duration::from_secs(60), "a stored segment", |c| {
        c["segments_written"].as_u64() >= Some(1)
    });
    // Mid-GOP.
    std::thread::sleep(Duration::from_millis(2_000));
    let last_frame = d.camera("c")["last_frame_ms"].as_i64().unwrap();
    assert!(d.stop(), "exit status after SIGTERM\n{}", d.logs());
    let logs = d.logs();
    assert!(logs.contains("Stopped"), "{logs}");
    d.restart();
    let c = d.camera("c");
    let (_, to) = span(&c);
    assert!(
        to >= last_frame,
        "open segment lost at shutdown: buffer ends {to}, last frame before stop {last_frame}\n{}",
        d.logs()
    );
}
