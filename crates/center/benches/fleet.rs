//! Fleet scale at the center (issue 5): `N` simulated boxes in this process, each with its
//! own certificate and its own mutual-TLS MQTT connection, sending real heartbeat JSON through
//! a real Mosquitto to `porchlight-center fleet --follow`, for N = 1,000 / 5,000 / 10,000.
//! Results are recorded in `docs/performance.md` (section "Fleet").
//!
//! ```text
//! cargo bench --bench fleet
//! PORCHLIGHT_BENCH_FLEET_N=1000,5000 PORCHLIGHT_BENCH_FLEET_WINDOW=60 cargo bench --bench fleet
//! ```
//!
//! # What is simulated, and how
//!
//! - The broker is the city broker of the integration tests (`Broker::start_city`: the
//!   shipped ACL, mutual TLS with `use_identity_as_username`, the pairing listener), a fresh
//!   one per N.
//! - Every box has its own ECDSA P-256 key and a certificate for `gw-bench-{i}` from the city
//!   CA, and is in the center's registry (with a location), so `fleet` joins N registered
//!   boxes with what it hears — the registry is re-read at every print, as in production.
//! - Every box is one rumqttc client (rustls with ring, the box's own stack) on its own TCP +
//!   TLS connection, keepalive 30 s, a retained last will, the retained online status at
//!   connect, then the daemon's heartbeat ([`porchlight::protocol::messages::Heartbeat`], two
//!   cameras, about 700 bytes) at QoS 0 every `PORCHLIGHT_BENCH_FLEET_INTERVAL` seconds (30 by
//!   default, the daemon's default), box `i` offset by `i × interval / N` so the load is
//!   spread evenly, as independent boxes' clocks spread it.
//! - The boxes connect 64 at a time (TLS handshakes), then all start their cadence together.
//! - The center is the release `porchlight-center fleet --dir … --follow --every 10s
//!   --stats` (table to /dev/null): it keeps every box's state, renders the whole N-row table
//!   every 10 s (re-reading the registry when it changed), and prints per print the heartbeats
//!   it took, their rate, their lag (receive time − the heartbeat's `ts`), which grows without
//!   bound when it falls behind, and how long the print took (`print_ms`: messages wait
//!   meanwhile, the center is one thread).
//!
//! # Measured (over a window of `PORCHLIGHT_BENCH_FLEET_WINDOW` s, 60 by default, that starts
//! one interval after the cadence started)
//!
//! CPU seconds of the center and of Mosquitto (`/proc/PID/stat` utime + stime) and of this
//! process (the N simulated boxes, `getrusage`), as % of one core; their VmRSS at the end;
//! heartbeats the center handled against those sent in the window; lag p50/p99/max.
//!
//! Also, once: enrollment round trips through `porchlight-center serve` (claim code, CSR on the
//! pairing listener with the bootstrap account, answer) measured from the CSR's publish to the
//! answer's arrival, `PORCHLIGHT_BENCH_FLEET_ENROLL` times (20 by default).
//!
//! Needs `mosquitto`; raises RLIMIT_NOFILE to its hard limit (each box is one socket in this
//! process and one in the broker).

use porchlight_testkit::mosquitto;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use porchlight_center::ca::CityCa;
use porchlight_center::geo::LatLon;
use porchlight_center::store::{BoxRecord, CenterDir};
use porchlight_protocol::messages::*;
use porchlight_protocol::pairing::{
    CsrMessage, PairResult, BOOTSTRAP_PASSWORD, BOOTSTRAP_USERNAME,
};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use mosquitto::{Broker, CityOptions};

const ROOT: &str = "porchlight/v1";

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    l.rlim_cur
}

/// utime + stime of `pid`, seconds.
fn proc_cpu(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime is field 14, stime 15 (1-based over the whole line): 11 and 12 after ')'.
    (n(11) + n(12)) / ticks
}

fn rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn self_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn tls(ca: &Path, id: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match id {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            b.with_client_auth_cert(
                certs,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap()
        }
    })
}

fn heartbeat(seq: u64) -> Vec<u8> {
    let cam = |id: &str, live: &str| CameraReport {
        id: id.into(),
        state: CameraState::Streaming,
        codec: Some("h264".into()),
        width: Some(1920),
        height: Some(1080),
        fps: Some(15.0),
        bitrate_bps: Some(2_048_000),
        last_frame_ts: Some(jiff::Timestamp::now().as_millisecond()),
        sharing: SharingModes {
            live: live.parse().unwrap(),
            clips: SharingMode::Ask,
        },
    };
    let h = Heartbeat::new(
        jiff::Timestamp::now().as_millisecond(),
        seq,
        "0.1.0",
        1000 + seq * 30,
        OutboxReport {
            messages: 0,
            bytes: 0,
        },
        HealthReport {
            paused: false,
            cameras: vec![cam("front-door", "ask"), cam("driveway", "never")],
            storage: StorageReport {
                used_bytes: 3 << 30,
                quota_bytes: 4 << 30,
                oldest_ts: Some(jiff::Timestamp::now().as_millisecond() - 86_400_000),
            },
            audit: AuditAnchor {
                seq: 1234,
                hash: "9f".repeat(32),
            },
            grants_active: 0,
        },
    );
    serde_json::to_vec(&h).unwrap()
}

struct Sim {
    gw: String,
    cert: String,
    key: String,
}

/// One center `--stats` line, with when it arrived.
#[derive(Clone, Debug)]
struct StatLine {
    at: Instant,
    heartbeats: u64,
    lag_p50: i64,
    lag_p99: i64,
    lag_max: i64,
    print_ms: i64,
}

fn parse_stats(line: &str) -> Option<(u64, i64, i64, i64, i64)> {
    let rest = line.strip_prefix("stats: ")?;
    let get = |k: &str| -> Option<i64> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.trim_end_matches("/s").parse::<f64>().ok())
            .map(|v| v as i64)
    };
    Some((
        get("heartbeats")? as u64,
        get("lag_ms_p50")?,
        get("lag_ms_p99")?,
        get("lag_ms_max")?,
        get("print_ms")?,
    ))
}

fn main() {
    mosquitto::require_mosquitto();
    let nofile = raise_nofile();
    let ns: Vec<u64> = std::env::var("PORCHLIGHT_BENCH_FLEET_N")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("PORCHLIGHT_BENCH_FLEET_N: numbers, comma-separated")
        })
        .collect();
    let window = env_num("PORCHLIGHT_BENCH_FLEET_WINDOW", 60);
    let interval = env_num("PORCHLIGHT_BENCH_FLEET_INTERVAL", 30);
    let enrolls = env_num("PORCHLIGHT_BENCH_FLEET_ENROLL", 20);
    println!("# porchlight fleet bench");
    println!(
        "RLIMIT_NOFILE {nofile}; heartbeat interval {interval} s; window {window} s; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if enrolls > 0 {
        rt.block_on(enroll_bench(enrolls as usize));
    }
    println!();
    println!(
        "| N | connect all (s) | hb sent in window | hb handled | rate (/s) | lag p50 / p99 / max (ms) | center CPU | broker CPU | boxes (this process) CPU | center RSS | broker RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in ns.into_iter().filter(|&n| n > 0) {
        assert!(
            n + 200 < nofile,
            "N = {n} needs more than RLIMIT_NOFILE = {nofile} file descriptors"
        );
        rt.block_on(fleet_bench(n as usize, interval, window));
    }
}

async fn enroll_bench(count: usize) {
    let b = Broker::start_city(CityOptions::default());
    let dir = b.city.as_ref().unwrap().dir.clone();
    let mut serve = Command::new(porchlight_testkit::center::center_bin())
        .arg("--broker")
        .arg(b.url())
        .arg("--ca")
        .arg(b.ca_file())
        .arg("--cert")
        .arg(&b.center.cert)
        .arg("--key")
        .arg(&b.center.key)
        .args(["serve", "--dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut err = BufReader::new(serve.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Serving") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited");
    }
    std::thread::spawn(move || for _ in err.lines() {});
    let mut times = Vec::new();
    for _ in 0..count {
        let out = Command::new(porchlight_testkit::center::center_bin())
            .args(["codes", "issue", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        let code = porchlight_protocol::pairing::normalize_claim(
            String::from_utf8_lossy(&out.stdout).trim(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "box");
        let csr = serde_json::to_vec(&CsrMessage {
            v: 1,
            csr: p.serialize_request(&key).unwrap().pem().unwrap(),
            version: "bench".into(),
            ts: 0,
        })
        .unwrap();
        let mut o = MqttOptions::new(code.clone(), "127.0.0.1", b.pairing_port());
        o.set_credentials(BOOTSTRAP_USERNAME, BOOTSTRAP_PASSWORD)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls(
                &b.ca_file(),
                None,
            ))));
        let (client, mut ev) = AsyncClient::new(o, 10);
        let result = format!("{ROOT}/pair/{code}/result");
        client.subscribe(&result, QoS::AtLeastOnce).await.unwrap();
        let mut started = None;
        let elapsed = loop {
            match ev.poll().await.expect("pairing connection") {
                Event::Incoming(Packet::SubAck(_)) => {
                    started = Some(Instant::now());
                    client
                        .publish(
                            format!("{ROOT}/pair/{code}/csr"),
                            QoS::AtLeastOnce,
                            false,
                            csr.clone(),
                        )
                        .await
                        .unwrap();
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == result => {
                    let r: PairResult = serde_json::from_slice(&p.payload).unwrap();
                    assert!(r.ok, "{r:?}");
                    break started.unwrap().elapsed();
                }
                _ => {}
            }
        };
        times.push(elapsed);
        let _ = client.disconnect().await;
    }
    let _ = serve.kill();
    let _ = serve.wait();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "enrollment (CSR published -> answer received, through serve; {count} boxes, registry growing): median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(*times.last().unwrap())
    );
}

async fn fleet_bench(n: usize, interval: u64, window: u64) {
    let b = Broker::start_city(CityOptions::default());
    let dir = b.city.as_ref().unwrap().dir.clone();
    let center_dir = CenterDir::new(&dir);
    let ca = CityCa::load(&center_dir).unwrap();
    // Certificates and the registry.
    let now = jiff::Timestamp::now();
    let mut sims = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let gw = format!("gw-bench-{i:05}");
        let key = rcgen::KeyPair::generate().unwrap();
        let issued = ca
            .issue_client(&gw, &key, now.as_second(), 30 * 86_400)
            .unwrap();
        records.push(BoxRecord {
            gateway_id: gw.clone(),
            label: Some(format!("bench home {i}")),
            location: Some(LatLon {
                lat: 52.4 + (i % 100) as f64 * 0.003,
                lon: 13.3 + (i / 100) as f64 * 0.003,
            }),
            code: format!("BENCH{i:07}"),
            key_sha256: String::new(),
            serial: issued.serial.clone(),
            serials: vec![issued.serial.clone()],
            certificate: issued.pem.clone(),
            enrolled: now.as_millisecond(),
            issued: now.as_millisecond(),
            not_after: issued.not_after_ms,
            revoked: None,
        });
        sims.push(Sim {
            gw,
            cert: issued.pem,
            key: key.serialize_pem(),
        });
    }
    center_dir
        .update(|reg| {
            reg.boxes = records;
            Ok(((), vec![]))
        })
        .unwrap();
    let registry_bytes = std::fs::metadata(center_dir.registry()).unwrap().len();

    // The center.
    let mut center = Command::new(porchlight_testkit::center::center_bin())
        .arg("--broker")
        .arg(b.url())
        .arg("--ca")
        .arg(b.ca_file())
        .arg("--cert")
        .arg(&b.center.cert)
        .arg("--key")
        .arg(&b.center.key)
        .args(["fleet", "--follow", "--every", "10s", "--stats", "--dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn porchlight-center fleet");
    let center_pid = center.id();
    let stats: Arc<Mutex<Vec<StatLine>>> = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    {
        let stats = stats.clone();
        let err = center.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.starts_with("Listening") {
                    let _ = ready_tx.send(());
                }
                if let Some((heartbeats, lag_p50, lag_p99, lag_max, print_ms)) = parse_stats(&line)
                {
                    stats.lock().unwrap().push(StatLine {
                        at: Instant::now(),
                        heartbeats,
                        lag_p50,
                        lag_p99,
                        lag_max,
                        print_ms,
                    });
                } else if !line.starts_with("Listening") {
                    eprintln!("center: {line}");
                }
            }
        });
    }
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("fleet did not start listening");

    // The boxes.
    let ca_file = b.ca_file();
    let port = b.port;
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let connected = Arc::new(AtomicU64::new(0));
    let t_connect = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sim) in sims.into_iter().enumerate() {
        let ca_file = ca_file.clone();
        let (sent, errors, connected, gate) = (
            sent.clone(),
            errors.clone(),
            connected.clone(),
            gate.clone(),
        );
        let mut go = go_rx.clone();
        let offset = Duration::from_secs(interval).mul_f64(i as f64 / n as f64);
        tasks.spawn(async move {
            let status = format!("{ROOT}/gw/{}/status", sim.gw);
            let hb_topic = format!("{ROOT}/gw/{}/heartbeat", sim.gw);
            let mut o = MqttOptions::new(sim.gw.clone(), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30))
                .set_clean_session(false)
                .set_last_will(LastWill::new(
                    &status,
                    r#"{"online":false}"#,
                    QoS::AtLeastOnce,
                    true,
                ))
                .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls(
                    &ca_file,
                    Some((&sim.cert, &sim.key)),
                ))));
            drop(sim);
            let (client, mut ev): (AsyncClient, EventLoop) = AsyncClient::new(o, 8);
            {
                let _permit = gate.acquire().await.unwrap();
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                        Ok(_) => {}
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("box connect: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
            connected.fetch_add(1, Ordering::Relaxed);
            let online = Status::online(jiff::Timestamp::now().as_millisecond(), "0.1.0").to_json();
            let _ = client.try_publish(&status, QoS::AtLeastOnce, true, online);
            // Wait for the common start, polling the connection meanwhile.
            let start = loop {
                if let Some(t) = *go.borrow() {
                    break t;
                }
                tokio::select! {
                    _ = go.changed() => {}
                    r = ev.poll() => if r.is_err() { errors.fetch_add(1, Ordering::Relaxed); }
                }
            };
            let mut next = start + offset;
            let mut seq = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {
                        seq += 1;
                        if client.try_publish(&hb_topic, QoS::AtMostOnce, false, heartbeat(seq)).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        next += Duration::from_secs(interval);
                    }
                    r = ev.poll() => if let Err(e) = r {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("box link: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    while connected.load(Ordering::Relaxed) < n as u64 {
        assert!(
            t_connect.elapsed() < Duration::from_secs(600),
            "only {} of {n} boxes connected in 10 min",
            connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    let start = tokio::time::Instant::now();
    go_tx.send(Some(start)).unwrap();

    // One interval to reach the cadence, then the window.
    tokio::time::sleep(Duration::from_secs(interval)).await;
    let w0 = Instant::now();
    let (c0, b0, s0) = (proc_cpu(center_pid), proc_cpu(b.pid().unwrap()), self_cpu());
    let sent0 = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(window)).await;
    let wsecs = w0.elapsed().as_secs_f64();
    let (c1, b1, s1) = (proc_cpu(center_pid), proc_cpu(b.pid().unwrap()), self_cpu());
    let sent_w = sent.load(Ordering::Relaxed) - sent0;
    let (center_rss, broker_rss) = (rss_mib(center_pid), rss_mib(b.pid().unwrap()));
    // Let the center print the tick covering the window's end.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let lines = stats.lock().unwrap().clone();
    // Ticks every 10 s: those ending inside the window cover (almost all of) it.
    let inside: Vec<&StatLine> = lines
        .iter()
        .filter(|l| {
            l.at > w0 + Duration::from_secs(10)
                && l.at <= w0 + Duration::from_secs(window) + Duration::from_secs(1)
        })
        .collect();
    let covered = inside.len() as f64 * 10.0;
    let handled: u64 = inside.iter().map(|l| l.heartbeats).sum();
    let expected_in_ticks = sent_w as f64 * covered / wsecs;
    let p50 = inside.iter().map(|l| l.lag_p50).max().unwrap_or(0);
    let p99 = inside.iter().map(|l| l.lag_p99).max().unwrap_or(0);
    let max = lines
        .iter()
        .filter(|l| l.at > w0)
        .map(|l| l.lag_max)
        .max()
        .unwrap_or(0);
    let pct = |cpu: f64| format!("{:.1} %", cpu / wsecs * 100.0);
    println!(
        "| {n} | {connect_s:.1} | {sent_w} ({:.1}/s) | {handled} in {covered:.0} s of ticks (≈{:.0} expected) | {:.1} | {p50} / {p99} / {max} | {} | {} | {} | {center_rss:.0} MiB | {broker_rss:.0} MiB |",
        sent_w as f64 / wsecs,
        expected_in_ticks,
        handled as f64 / covered.max(1.0),
        pct(c1 - c0),
        pct(b1 - b0),
        pct(s1 - s0),
    );
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        println!("  ({errs} connection errors on the box side during the run)");
    }
    let print_max = lines
        .iter()
        .filter(|l| l.at > w0)
        .map(|l| l.print_ms)
        .max()
        .unwrap_or(0);
    println!(
        "  (registry {registry_bytes} bytes; longest print of the {n}-row table {print_max} ms)"
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = center.kill();
    let _ = center.wait();
    drop(b);
}
