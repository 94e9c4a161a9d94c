//! The LAN cannot starve the box (issue 21), against the real daemon with one GStreamer camera
//! recording and the daemon held to 1,024 descriptors (`prlimit`, the appliance's default soft
//! limit): thousands of idle connections to the web port and to the control API port, and
//! slowloris clients, do not stop recording, do not lock the resident out through the other
//! door, and leave nothing behind once they stop.

use porchlight_testkit as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::camera::{Camera, Codec, Stream};
use support::{camera_toml, out_path, Daemon, FAST_INGEST};

/// Raises this process's own descriptor limit (it holds the flood's sockets).
fn raise_own_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    assert!(
        rl.rlim_cur >= 4096,
        "need 4096 descriptors for the flood, have {}",
        rl.rlim_cur
    );
}

/// `n` connections to `addr`, held open (those the daemon sheds are closed on its side).
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

fn web_addr(d: &Daemon) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(d.data_dir().join("web.addr")) {
            return s.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no web.addr: {}", d.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One plain HTTP GET; the status line, or the error.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn floods_of_idle_and_slow_connections_do_not_stop_recording_or_lock_the_resident_out() {
    raise_own_limit();
    let camera = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .start();
    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}[web]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{}",
        camera_toml("front", &camera.url("s"), "")
    ));
    d.wait_camera("front", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    let pid = d.pid();
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=1024:1024"])
        .output()
        .expect("prlimit (util-linux) is installed");
    assert!(out.status.success(), "{out:?}");
    let web = web_addr(&d);
    let api: SocketAddr = format!("127.0.0.1:{}", d.api_port).parse().unwrap();
    let failed_before = d.camera("front")["segments_failed"].as_u64().unwrap();
    let status = d.get("/api/v1/status");
    let web_total = status["listeners"]["web"]["total"].as_u64().unwrap();
    assert!(web_total > 0 && web_total < 1024, "{status}");

    // (a) 2 x 1,024 idle connections against the web port, held for 60 s: the control API
    // answers throughout, the camera keeps recording.
    let held = flood(web, 2048);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let s = d.get("/api/v1/status");
        slowest = slowest.max(t.elapsed());
        assert_eq!(s["cameras"][0]["state"], "streaming", "{s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("slowest control API answer during the web flood: {slowest:?}");
    let s = d.get("/api/v1/status");
    let shed = s["listeners"]["web"]["shed"].as_u64().unwrap();
    assert!(shed >= 2048 - web_total, "{s}");
    assert!(
        s["listeners"]["web"]["open"].as_u64().unwrap() <= web_total,
        "{s}"
    );
    drop(held);

    // (d) After the flood, the UI answers at once (its slots are freed as the sockets close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(web, "/auth/state") {
            Ok(line) if line.contains(" 200 ") => break,
            other => assert!(Instant::now() < deadline, "UI after the flood: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // (b) The same against the control API: the web UI still answers meanwhile.
    let held = flood(api, 1024);
    for _ in 0..10 {
        let line = http_get(web, "/auth/state").expect("the web UI during an API flood");
        assert!(line.contains(" 200 "), "{line}");
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(held);

    // (c) Slowloris: 200 connections on each port sending one byte a second never finish a
    // request head; the daemon closes them (head timeout) instead of holding them. (The API's
    // budget is 64: the rest are shed at once, which closes them too.)
    let mut slow: Vec<TcpStream> = flood(web, 200);
    slow.extend(flood(api, 200));
    for s in &slow {
        s.set_nonblocking(true).unwrap();
    }
    let started = Instant::now();
    let mut closed = 0;
    while started.elapsed() < Duration::from_secs(20) && closed < slow.len() {
        closed = 0;
        for s in &mut slow {
            let mut b = [0u8; 64];
            let gone = match (&*s).read(&mut b) {
                Ok(0) => true,
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write_all(b"G").is_err(),
                Err(_) => true,
            };
            closed += usize::from(gone);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        closed,
        slow.len(),
        "slowloris connections still open after 20 s"
    );
    drop(slow);

    // Nothing was lost: no segment failed, and the last seconds export whole.
    let front = d.camera("front");
    assert_eq!(front["state"], "streaming", "{front}");
    assert_eq!(
        front["segments_failed"].as_u64().unwrap(),
        failed_before,
        "segments failed during the floods: {}",
        d.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let to = front["buffered_to_ms"].as_i64().unwrap();
    let clip = out_path(&d, "after.mp4");
    d.export_range("front", to - 8_000, to, &clip);
    let p = support::ffprobe::probe(&clip);
    assert!(p.nb_frames >= 60, "{p:?}");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    println!("daemon RSS after the floods: {rss_kib} KiB");
    assert!(rss_kib < 64 * 1024, "RSS {rss_kib} KiB");
    assert!(d.stop(), "clean stop after the floods");
}
