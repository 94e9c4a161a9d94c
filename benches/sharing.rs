//! Live sharing figures (issue 4): added live latency (frame at the box → fragment at a
//! subscriber on loopback, p50/p99), time from a signed request to the first fragment at the
//! center with an `always` rule, and the CPU one live feed costs the daemon.
//!
//! Real parts only: a GStreamer RTSP camera, Mosquitto with mutual TLS, the release daemon, and
//! a center subscriber written with rumqttc (the reference center's connection code).
//!
//! Latency = the subscriber's wall clock at arrival − the fragment's PLM1 timestamp (the UTC
//! time the box gave the fragment's first frame when it arrived: the session's first frame is
//! pinned to the box clock, later ones placed by RTP time). Same machine, same clock.
//!
//! Run: `cargo bench --bench sharing` (env `PORCHLIGHT_BENCH_SECS`, default 30).

use porchlight_testkit as support;

use std::time::{Duration, Instant};

use porchlight::protocol::framing::{self, Kind};
use porchlight::protocol::request::{sign_request, Claims, RequestKind};
use porchlight_center::connection::Connection;
use porchlight_center::settings::Settings;
use support::camera::{Camera, Codec, Stream};
use support::mosquitto::Broker;
use support::{camera_toml, Daemon, FAST_INGEST};

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn claims(jti: &str, secs: u64) -> Claims {
    let now = jiff::Timestamp::now().as_second();
    Claims {
        jti: jti.into(),
        iat: now,
        exp: now + 300,
        gw: "gw-1".into(),
        kind: RequestKind::Live,
        camera: "cam".into(),
        from: None,
        to: None,
        duration_s: Some(secs),
        target: None,
        reason: Some("bench".into()),
        case: None,
        requester: Some("bench".into()),
        emergency: false,
    }
}

fn main() {
    let secs: u64 = std::env::var("PORCHLIGHT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let camera = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).size(640, 360).fps(15).gop(30))
        .bitrate_kbps(1000)
        .start();
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let (key, pub_pem) = support::requests::request_key(&broker.path(), "request.pub.pem", 3);
    let body = format!(
        "{FAST_INGEST}[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\ncenter_request_key_file = {:?}\n{}",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        pub_pem,
        camera_toml("cam", &camera.url("s"), ""),
    );
    let daemon = Daemon::start(&body);
    daemon.wait_camera("cam", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    while daemon.get("/api/v1/uplink")["state"] != "connected" {
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.cli_ok(&[
        "consent",
        "set",
        "cam",
        "--live",
        "always",
        "--max-live",
        "1h",
    ]);
    let pid = daemon.pid();
    let hz = 100.0; // USER_HZ on Linux

    let rt = tokio::runtime::Runtime::new().unwrap();
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: broker.port,
        ca: broker.ca.pem_file.clone(),
        cert: broker.center.cert.clone(),
        key: broker.center.key.clone(),
        root: "porchlight/v1".into(),
    };
    rt.block_on(async {
        // Baseline: ingest and store only. (The center connects afterwards: its MQTT event loop
        // only runs while it is polled, and an idle minute would miss keepalives.)
        let c0 = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let base = (cpu_ticks(pid) - c0) as f64 / hz / secs as f64;

        let mut conn = Connection::open(&settings).await.expect("center connects");
        conn.subscribe(&["porchlight/v1/gw/gw-1/live/+".to_owned()]).await.unwrap();

        // Time to first fragment, 10 requests of 2 s each.
        let mut first = Vec::new();
        for i in 0..10 {
            let jti = format!("ttff-{i}");
            let token = sign_request(&claims(&jti, 2), &key);
            let t0 = Instant::now();
            conn.publish("porchlight/v1/gw/gw-1/request", token.into_bytes()).await.unwrap();
            let topic = format!("porchlight/v1/gw/gw-1/live/{jti}");
            loop {
                let m = conn.next_message().await.unwrap();
                if m.topic == topic
                    && framing::decode(&m.payload).is_ok_and(|f| f.kind == Kind::Fragment)
                {
                    first.push(t0.elapsed().as_millis() as i64);
                    break;
                }
            }
            // Let it end before the next.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
        first.sort();

        // One long feed: latency of every fragment and the CPU it adds.
        let jti = "latency";
        let token = sign_request(&claims(jti, secs + 5), &key);
        conn.publish("porchlight/v1/gw/gw-1/request", token.into_bytes()).await.unwrap();
        let topic = format!("porchlight/v1/gw/gw-1/live/{jti}");
        let mut lat = Vec::new();
        let mut bytes = 0u64;
        let mut started: Option<(Instant, u64)> = None;
        let deadline = Instant::now() + Duration::from_secs(secs + 30);
        loop {
            let m = tokio::time::timeout_at(deadline.into(), conn.next_message()).await;
            let Ok(Ok(m)) = m else { break };
            if m.topic != topic {
                continue;
            }
            let arrived = now_ms();
            let Ok(f) = framing::decode(&m.payload) else { continue };
            match f.kind {
                Kind::Fragment => {
                    let (t, _) = *started.get_or_insert((Instant::now(), cpu_ticks(pid)));
                    // Skip the pre-roll: those frames are old by design.
                    if t.elapsed() > Duration::from_secs(3) {
                        lat.push(arrived - f.timestamp_ms as i64);
                    }
                    bytes += m.payload.len() as u64;
                }
                Kind::End => break,
                Kind::Init => {}
            }
        }
        let (t, c) = started.expect("fragments arrived");
        let feed = (cpu_ticks(pid) - c) as f64 / hz / t.elapsed().as_secs_f64();
        lat.sort();
        println!();
        println!("live sharing, 1 camera 640x360 15 fps ~1 Mbit/s, {secs} s windows, loopback Mosquitto (mutual TLS)");
        println!("| figure | value | goal |");
        println!("|---|---:|---|");
        println!("| request → first fragment at the center, p50 (10 requests) | {} ms | |", percentile(&first, 0.5));
        println!("| request → first fragment at the center, max | {} ms | ≤ 500 ms |", percentile(&first, 1.0));
        println!("| added live latency p50 ({} fragments) | {} ms | |", lat.len(), percentile(&lat, 0.5));
        println!("| added live latency p99 | {} ms | ≤ 100 ms |", percentile(&lat, 0.99));
        println!("| added live latency max | {} ms | |", percentile(&lat, 1.0));
        println!("| daemon CPU, ingest + store only | {:.1} % of a core | |", base * 100.0);
        println!("| daemon CPU with one live feed | {:.1} % of a core | |", feed * 100.0);
        println!("| CPU of one live feed | {:.1} % of a core | |", (feed - base) * 100.0);
        println!("| live payload rate | {:.0} kbit/s | |", bytes as f64 * 8.0 / 1000.0 / t.elapsed().as_secs_f64());
        conn.close().await;
    });
}
