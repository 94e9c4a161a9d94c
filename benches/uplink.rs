//! City uplink benchmark (issue 3): the durable outbox draining to a real Mosquitto against
//! `mosquitto_pub` in the same run, time from process start to the retained online status,
//! and memory with a 100 MB backlog. Results are recorded in `docs/performance.md`
//! (section "Uplink").
//!
//! ```text
//! cargo bench --bench uplink
//! PORCHLIGHT_BENCH_UPLINK_SMALL=20000 PORCHLIGHT_BENCH_UPLINK_REPS=5 cargo bench --bench uplink
//! ```
//!
//! # Broker
//!
//! One Mosquitto per run, started like the integration tests do (`crates/testkit/src/mosquitto.rs`):
//! TLS with `require_certificate`, `use_identity_as_username`, the per-gateway ACL, on a
//! loopback port. A `center` subscriber (`mosquitto_sub -q 1`, printing only topic and payload
//! length) is subscribed to the benchmark topics throughout the drain part, so the broker
//! forwards every message as it would to a city center, and the benchmark checks that every
//! message of every run arrived with the right length (Mosquitto acknowledges a publish the ACL
//! forbids, so a PUBACK alone would not prove it).
//!
//! # Drain (messages/s, MB/s; MB = 10^6 bytes of payload)
//!
//! Same messages on both sides: `N` payloads of 1 KiB or 256 KiB (printable ASCII, numbered,
//! no newline), QoS 1, the same client certificate (`gw-1`), the same broker.
//!
//! - porchlight: a fresh process (this executable re-run as a child) opens a
//!   [`porchlight::store::Store`] (the daemon's sled configuration) in a new directory and
//!   queues the `N` messages with [`UplinkHandle::queue`] before the uplink runs (each queueing
//!   is a sled insert and flush). Then [`Uplink::run`] starts and the clock runs until the
//!   outbox is empty, i.e. until the PUBACK of every message arrived and its key was deleted.
//!   So the time includes TCP + TLS + CONNECT, the online status and the heartbeat. CPU is the
//!   child's `getrusage` over the same interval. Inline payloads (in sled) for both sizes, plus
//!   256 KiB as file ranges (the form clip chunks take: a reference into a file, read at send
//!   time).
//! - `mosquitto_pub -q 1 -M 32 -l` (one process, one connection, one message per stdin line,
//!   stdin redirected from a file; `-M 32` is our outbox window, its default is 20): wall time
//!   from spawn to exit, which is after the last PUBACK. Process start and TLS handshake are
//!   included once. For 256 KiB also `mosquitto_pub -q 1 -f FILE` once per message, in a loop:
//!   process start, TLS handshake and DISCONNECT per message are included there.
//!
//! Each case runs `PORCHLIGHT_BENCH_UPLINK_REPS` times, alternating sides; the table gives the
//! median run (and the range of rates).
//!
//! # Start-up
//!
//! The release `porchlight run --config` with `[api]` and a paired `[uplink]` (no cameras) is
//! spawned `PORCHLIGHT_BENCH_UPLINK_STARTS` times; a `center` `mosquitto_sub` subscribed
//! beforehand timestamps the arrival of `{"online":true,…}` on the gateway's status topic. The
//! time is spawn → arrival. First with a fresh data directory each time (first boot: creates
//! the store and the API token), then with one reused directory (a restart). The daemon is
//! stopped with SIGTERM between runs. For scale: `mosquitto_pub` publishing one QoS 1 message
//! with the same certificate, timed the same way.
//!
//! # Backlog memory
//!
//! A child process (library, the daemon's sled configuration) with the broker stopped: VmRSS
//! after opening, after queueing 100 MB (400 × 256 KiB), then the broker is started again and
//! VmRSS is sampled every 5 ms during the drain (maximum and after). Inline payloads and file
//! ranges. Then the restart case: one child queues 100 MB and exits with the broker down, the
//! next opens that backlog (VmRSS after open, which scans the outbox) and drains it.
//!
//! # Options (environment)
//!
//! - `PORCHLIGHT_BENCH_UPLINK_SMALL` (default 10000): number of 1 KiB messages.
//! - `PORCHLIGHT_BENCH_UPLINK_LARGE` (default 400): number of 256 KiB messages (100 MiB).
//! - `PORCHLIGHT_BENCH_UPLINK_REPS` (default 3): runs per drain case.
//! - `PORCHLIGHT_BENCH_UPLINK_STARTS` (default 10): daemon starts per start-up series.
//! - `PORCHLIGHT_BENCH_DIR` (default `target/`): where the outbox databases go. Keep it on
//!   the disk a box would use (the queueing figures are fsync-bound).
//!
//! Needs `mosquitto` and `mosquitto-clients`; fails loudly without them.

use porchlight_testkit::{mosquitto, pki};

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use porchlight::shutdown::Shutdown;
use porchlight::store::{Store, StoreOptions};
use porchlight::uplink::outbox::{Payload, Record};
use porchlight::uplink::{NoHealth, Uplink, UplinkSettings};

use mosquitto::Broker;
use pki::Identity;

const BIN: &str = env!("CARGO_BIN_EXE_porchlight");
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// Set (to anything) in the environment of the library child process.
const CHILD_ENV: &str = "PORCHLIGHT_BENCH_UPLINK_CHILD";
const KIB: usize = 1024;

use porchlight_testkit::free_port;

fn env_num(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child::main();
        return;
    }
    mosquitto::require_mosquitto();
    let small = env_num("PORCHLIGHT_BENCH_UPLINK_SMALL", 10_000);
    let large = env_num("PORCHLIGHT_BENCH_UPLINK_LARGE", 400);
    let reps = env_num("PORCHLIGHT_BENCH_UPLINK_REPS", 3).max(1);
    let starts = env_num("PORCHLIGHT_BENCH_UPLINK_STARTS", 10).max(1);
    let base = std::env::var_os("PORCHLIGHT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MANIFEST).join("target"));
    fs::create_dir_all(&base).expect("create the bench directory");
    let work = tempfile::Builder::new()
        .prefix("bench-uplink-")
        .tempdir_in(&base)
        .expect("create the work directory");

    println!("# porchlight uplink bench");
    println!("{}", machine_facts());
    println!("binary: {BIN}");
    println!("work dir: {}", work.path().display());

    let mut broker = Broker::start();
    println!(
        "broker: 127.0.0.1:{} (TLS, client certificates, ACL)",
        broker.port
    );

    let drain = drain_section(&broker, work.path(), small, large, reps);
    let startup = startup_section(&broker, work.path(), starts);
    let backlog = backlog_section(&mut broker, work.path(), large);

    println!("\n## Drain to Mosquitto (median of {reps}; MB = 10^6 payload bytes)\n");
    println!(
        "| payload | messages | client | time s | msg/s | MB/s | rate range msg/s | client CPU s |"
    );
    println!("|---|---:|---|---:|---:|---:|---|---:|");
    for r in &drain {
        println!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.1} | {:.0}–{:.0} | {:.2} |",
            r.payload, r.count, r.client, r.secs, r.rate, r.mbps, r.rate_min, r.rate_max, r.cpu
        );
    }
    println!("\nQueueing (porchlight, durable: sled insert + flush per message, median run):\n");
    println!("| payload | messages | time s | msg/s | MB/s | bytes written / payload byte |");
    println!("|---|---:|---:|---:|---:|---:|");
    for q in drain.iter().filter_map(|r| r.queue.as_ref()) {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {:.2} |",
            q.payload, q.count, q.secs, q.rate, q.mbps, q.amplification
        );
    }
    println!("\n## Start-up: spawn → retained online status at the center ({starts} runs)\n");
    println!("| process | data dir | median ms | max ms | min ms | RSS after online |");
    println!("|---|---|---:|---:|---:|---:|");
    for s in &startup {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            s.what,
            s.dir,
            s.median,
            s.max,
            s.min,
            s.rss_kb
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "–".into())
        );
    }
    println!("\n## Backlog memory (VmRSS of the uplink process, MiB)\n");
    println!("| case | after open | after queueing | max during drain | after drain | open s | queue s | drain s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for b in &backlog {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            b.case,
            mib(b.get("rss_open_kb")),
            mib(b.get("rss_queued_kb")),
            mib(b.get("rss_drain_max_kb")),
            mib(b.get("rss_drained_kb")),
            secs(b.get("open_s")),
            secs(b.get("queue_s")),
            secs(b.get("drain_s")),
        );
    }
    drop(broker);
}

fn mib(v: Option<&String>) -> String {
    v.and_then(|v| v.parse::<f64>().ok())
        .map(|k| format!("{:.1}", k / 1024.0))
        .unwrap_or_else(|| "–".into())
}

fn secs(v: Option<&String>) -> String {
    v.and_then(|v| v.parse::<f64>().ok())
        .map(|s| format!("{s:.2}"))
        .unwrap_or_else(|| "–".into())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines()
                .find(|l| l.contains("version"))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn machine_facts() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb = proc_kb("/proc/meminfo", "MemTotal:").unwrap_or(0);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: nproc {nproc}, {model}, {:.1} GiB RAM, kernel {}\nload average at start: {}\n{}\n{}",
        mem_kb as f64 / 1048576.0,
        kernel.trim(),
        load.trim(),
        first_line("/usr/sbin/mosquitto", &["-h"]),
        first_line("mosquitto_pub", &["--help"]),
    )
}

/// A `kB` field of a /proc file (`VmRSS:`, `MemTotal:`).
fn proc_kb(path: &str, field: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) of this process or of its waited-for children.
fn cpu_secs(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Message `i` of a run: numbered, printable, no newline (one `mosquitto_pub -l` line).
fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut p = format!("{i:08}|").into_bytes();
    p.extend((p.len()..size).map(|j| b'a' + (j % 26) as u8));
    p.truncate(size);
    p
}

fn size_name(size: usize) -> String {
    if size.is_multiple_of(KIB) {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

fn tls_args(broker: &Broker, id: &Identity) -> Vec<String> {
    vec![
        "-h".into(),
        "localhost".into(),
        "-p".into(),
        broker.port.to_string(),
        "--cafile".into(),
        broker.ca.pem_file.display().to_string(),
        "--cert".into(),
        id.cert.display().to_string(),
        "--key".into(),
        id.key.display().to_string(),
    ]
}

/// A `mosquitto_sub` whose output lines are timestamped on arrival.
struct Listener {
    child: Child,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl Listener {
    fn start(broker: &Broker, topic: &str, format: &str) -> Listener {
        let mut child = Command::new("mosquitto_sub")
            .args(tls_args(broker, &broker.center))
            .args(["-t", topic, "-q", "1", "-F", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        // The SUBACK is not visible from outside; give the subscription time to exist.
        thread::sleep(Duration::from_millis(500));
        Listener { child, rx }
    }

    /// Waits for the first line after `since` that satisfies `pred`.
    fn wait_for(
        &self,
        since: Instant,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, line)) if t >= since && pred(&line) => return t,
                Ok(_) => {}
                Err(_) => panic!("{what}: nothing within {timeout:?}"),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts messages per topic (`-F "%t %l"`), checking lengths.
struct Counter {
    listener: Listener,
    seen: HashMap<String, (usize, usize)>,
}

impl Counter {
    /// Waits until `topic` got `count` messages (duplicates count too, so at least `count`)
    /// and checks that every one was `size` bytes long.
    fn expect(&mut self, topic: &str, count: usize, size: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (n, bad) = self.seen.get(topic).copied().unwrap_or((0, 0));
            assert_eq!(
                bad, 0,
                "{topic}: {bad} messages of the wrong length arrived"
            );
            if n >= count {
                return n;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, line)) = self.listener.rx.recv_timeout(left) else {
                panic!("{topic}: the center received {n} of {count} messages");
            };
            let Some((t, len)) = line.rsplit_once(' ') else {
                continue;
            };
            let e = self.seen.entry(t.to_owned()).or_default();
            e.0 += 1;
            if len.parse::<usize>() != Ok(size) {
                e.1 += 1;
            }
        }
    }
}

struct Queueing {
    payload: String,
    count: usize,
    secs: f64,
    rate: f64,
    mbps: f64,
    amplification: f64,
}

struct DrainRow {
    payload: String,
    count: usize,
    client: String,
    secs: f64,
    rate: f64,
    mbps: f64,
    rate_min: f64,
    rate_max: f64,
    cpu: f64,
    queue: Option<Queueing>,
}

/// One timed run.
struct Sample {
    secs: f64,
    cpu: f64,
    child: HashMap<String, String>,
}

fn summarise(
    payload: &str,
    count: usize,
    size: usize,
    client: &str,
    mut runs: Vec<Sample>,
) -> DrainRow {
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let rates: Vec<f64> = runs.iter().map(|r| count as f64 / r.secs).collect();
    let mid = &runs[runs.len() / 2];
    let queue = mid.child.get("queue_s").map(|q| {
        let q: f64 = q.parse().unwrap();
        let written: f64 = mid.child["queue_write_bytes"].parse().unwrap();
        Queueing {
            payload: format!("{payload} ({client})"),
            count,
            secs: q,
            rate: count as f64 / q,
            mbps: (count * size) as f64 / q / 1e6,
            amplification: written / (count * size) as f64,
        }
    });
    DrainRow {
        payload: payload.to_owned(),
        count,
        client: client.to_owned(),
        secs: mid.secs,
        rate: count as f64 / mid.secs,
        mbps: (count * size) as f64 / mid.secs / 1e6,
        rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        rate_max: rates.iter().copied().fold(0.0, f64::max),
        cpu: mid.cpu,
        queue,
    }
}

/// Arguments of one library child run.
#[derive(Clone)]
struct ChildSpec {
    dir: PathBuf,
    port: u16,
    ca: PathBuf,
    id: Identity,
    topic: String,
    count: usize,
    size: usize,
    /// Queue as file ranges instead of inline payloads.
    file: bool,
    /// Start the uplink before queueing (link down) instead of after.
    run_first: bool,
    /// Wait for "go" and drain; otherwise exit after queueing.
    drain: bool,
}

impl ChildSpec {
    fn new(broker: &Broker, id: &Identity, dir: PathBuf, topic: String) -> ChildSpec {
        ChildSpec {
            dir,
            port: broker.port,
            ca: broker.ca.pem_file.clone(),
            id: id.clone(),
            topic,
            count: 0,
            size: KIB,
            file: false,
            run_first: false,
            drain: true,
        }
    }

    /// Runs the child; `at_ready` runs once it has queued, before it is told to drain.
    fn run(&self, at_ready: impl FnOnce()) -> HashMap<String, String> {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(CHILD_ENV, "1")
            .args([
                format!("dir={}", self.dir.display()),
                format!("port={}", self.port),
                format!("ca={}", self.ca.display()),
                format!("cert={}", self.id.cert.display()),
                format!("key={}", self.id.key.display()),
                format!("topic={}", self.topic),
                format!("count={}", self.count),
                format!("size={}", self.size),
                format!("file={}", self.file),
                format!("run_first={}", self.run_first),
                format!("drain={}", self.drain),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the library child");
        let mut stdin: Option<ChildStdin> = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut vals = HashMap::new();
        let mut at_ready = Some(at_ready);
        for line in out.lines().map_while(Result::ok) {
            if line == "ready" {
                if let Some(f) = at_ready.take() {
                    f();
                }
                let s = stdin.as_mut().expect("child stdin");
                s.write_all(b"go\n").and_then(|()| s.flush()).unwrap();
            } else if let Some((k, v)) = line.split_once('=') {
                vals.insert(k.to_owned(), v.to_owned());
            }
        }
        drop(stdin);
        let st = child.wait().unwrap();
        assert!(st.success(), "library child failed ({st}): {vals:?}");
        vals
    }
}

fn drain_section(
    broker: &Broker,
    work: &Path,
    small: usize,
    large: usize,
    reps: usize,
) -> Vec<DrainRow> {
    println!("\n# Drain");
    let gw = broker.identity("gw-1");
    let mut counter = Counter {
        listener: Listener::start(broker, "porchlight/v1/gw/gw-1/bench/#", "%t %l"),
        seen: HashMap::new(),
    };
    let mut rows = Vec::new();
    let pub_dir = work.join("pub");
    fs::create_dir_all(&pub_dir).unwrap();
    for (count, size) in [(small, KIB), (large, 256 * KIB)] {
        if count == 0 {
            continue;
        }
        let name = size_name(size);
        // The mosquitto_pub inputs: one line per message; for -f, one file per message.
        let lines = pub_dir.join(format!("lines-{size}"));
        {
            let mut w = BufWriter::new(File::create(&lines).unwrap());
            for i in 0..count {
                w.write_all(&payload(i, size)).unwrap();
                w.write_all(b"\n").unwrap();
            }
            w.flush().unwrap();
        }
        let files: Vec<PathBuf> = if size > KIB {
            (0..count)
                .map(|i| {
                    let p = pub_dir.join(format!("msg-{size}-{i}"));
                    fs::write(&p, payload(i, size)).unwrap();
                    p
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut lib = Vec::new();
        let mut lib_file = Vec::new();
        let mut pub_l = Vec::new();
        let mut pub_f = Vec::new();
        for rep in 0..reps {
            let lib_run = |file: bool| {
                let kind = if file { "libfile" } else { "lib" };
                let topic = format!("porchlight/v1/gw/gw-1/bench/{kind}-{size}-{rep}");
                let mut spec = ChildSpec::new(
                    broker,
                    &gw,
                    work.join(format!("{kind}-{size}-{rep}")),
                    topic.clone(),
                );
                spec.count = count;
                spec.size = size;
                spec.file = file;
                let vals = spec.run(|| {});
                let secs: f64 = vals["drain_s"].parse().unwrap();
                let cpu: f64 = vals["drain_cpu_s"].parse().unwrap();
                let _ = fs::remove_dir_all(&spec.dir);
                (
                    topic,
                    Sample {
                        secs,
                        cpu,
                        child: vals,
                    },
                )
            };
            let run_pub_l = |topic: &str| {
                let cpu0 = cpu_secs(libc::RUSAGE_CHILDREN);
                let t0 = Instant::now();
                let st = Command::new("mosquitto_pub")
                    .args(tls_args(broker, &gw))
                    .args(["-t", topic, "-q", "1", "-M", "32", "-l"])
                    .stdin(File::open(&lines).unwrap())
                    .status()
                    .expect("run mosquitto_pub");
                let secs = t0.elapsed().as_secs_f64();
                assert!(st.success(), "mosquitto_pub -l failed: {st}");
                let cpu = cpu_secs(libc::RUSAGE_CHILDREN) - cpu0;
                Sample {
                    secs,
                    cpu,
                    child: HashMap::new(),
                }
            };
            // Alternate which side goes first.
            let order: [u8; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                if side == 0 {
                    let (topic, s) = lib_run(false);
                    let got = counter.expect(&topic, count, size);
                    println!(
                        "{name} porchlight inline rep {rep}: queue {}s, drain {:.3}s, {got} received",
                        s.child["queue_s"], s.secs
                    );
                    lib.push(s);
                    if size > KIB {
                        let (topic, s) = lib_run(true);
                        let got = counter.expect(&topic, count, size);
                        println!(
                            "{name} porchlight file ranges rep {rep}: queue {}s, drain {:.3}s, {got} received",
                            s.child["queue_s"], s.secs
                        );
                        lib_file.push(s);
                    }
                } else {
                    let topic = format!("porchlight/v1/gw/gw-1/bench/publ-{size}-{rep}");
                    let s = run_pub_l(&topic);
                    let got = counter.expect(&topic, count, size);
                    println!(
                        "{name} mosquitto_pub -l rep {rep}: {:.3}s, {got} received",
                        s.secs
                    );
                    pub_l.push(s);
                }
            }
        }
        // Producer and link at once: the uplink runs (connected) while the messages are
        // queued; the time runs from the first queueing to the empty outbox.
        let mut live = Vec::new();
        if size == KIB {
            for rep in 0..reps {
                let topic = format!("porchlight/v1/gw/gw-1/bench/live-{size}-{rep}");
                let mut spec =
                    ChildSpec::new(broker, &gw, work.join(format!("live-{rep}")), topic.clone());
                spec.count = count;
                spec.size = size;
                spec.run_first = true;
                let vals = spec.run(|| {});
                let q: f64 = vals["queue_s"].parse().unwrap();
                let d: f64 = vals["drain_s"].parse().unwrap();
                let cpu: f64 = vals["cpu_total_s"].parse().unwrap();
                let got = counter.expect(&topic, count, size);
                println!(
                    "{name} porchlight queued while connected rep {rep}: queue {q:.3}s, then drain {d:.3}s, {got} received"
                );
                let _ = fs::remove_dir_all(&spec.dir);
                live.push(Sample {
                    secs: q + d,
                    cpu,
                    child: HashMap::new(),
                });
            }
        }
        // The per-message process loop is slow and steady: one run.
        if !files.is_empty() {
            let topic = format!("porchlight/v1/gw/gw-1/bench/pubf-{size}");
            let cpu0 = cpu_secs(libc::RUSAGE_CHILDREN);
            let t0 = Instant::now();
            for f in &files {
                let st = Command::new("mosquitto_pub")
                    .args(tls_args(broker, &gw))
                    .args(["-t", &topic, "-q", "1", "-f"])
                    .arg(f)
                    .status()
                    .expect("run mosquitto_pub");
                assert!(st.success(), "mosquitto_pub -f failed: {st}");
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = cpu_secs(libc::RUSAGE_CHILDREN) - cpu0;
            let got = counter.expect(&topic, count, size);
            println!("{name} mosquitto_pub -f per message: {secs:.3}s, {got} received");
            pub_f.push(Sample {
                secs,
                cpu,
                child: HashMap::new(),
            });
        }
        rows.push(summarise(
            &name,
            count,
            size,
            "porchlight (outbox, inline)",
            lib,
        ));
        if !lib_file.is_empty() {
            rows.push(summarise(
                &name,
                count,
                size,
                "porchlight (outbox, file ranges)",
                lib_file,
            ));
        }
        if !live.is_empty() {
            rows.push(summarise(
                &name,
                count,
                size,
                "porchlight (queued while connected: queue + send)",
                live,
            ));
        }
        rows.push(summarise(
            &name,
            count,
            size,
            "mosquitto_pub -l -M 32 (1 process)",
            pub_l,
        ));
        if !pub_f.is_empty() {
            rows.push(summarise(
                &name,
                count,
                size,
                "mosquitto_pub -f (1 process per message)",
                pub_f,
            ));
        }
        let _ = fs::remove_file(&lines);
        for f in files {
            let _ = fs::remove_file(f);
        }
    }
    rows
}

struct StartRow {
    what: String,
    dir: String,
    median: f64,
    max: f64,
    min: f64,
    rss_kb: Option<u64>,
}

fn start_row(what: &str, dir: &str, mut ms: Vec<f64>, rss: Vec<u64>) -> StartRow {
    ms.sort_by(f64::total_cmp);
    println!("{what} ({dir}): {ms:.0?} ms");
    StartRow {
        what: what.to_owned(),
        dir: dir.to_owned(),
        median: ms[ms.len() / 2],
        max: *ms.last().unwrap(),
        min: ms[0],
        rss_kb: (!rss.is_empty()).then(|| {
            let mut rss = rss;
            rss.sort_unstable();
            rss[rss.len() / 2]
        }),
    }
}

fn startup_section(broker: &Broker, work: &Path, starts: usize) -> Vec<StartRow> {
    println!("\n# Start-up");
    let gw = broker.identity("gw-boot");
    let status = "porchlight/v1/gw/gw-boot/status";
    let listener = Listener::start(broker, "porchlight/v1/gw/gw-boot/#", "%t %p");
    let mut rows = Vec::new();
    for fresh in [true, false] {
        let mut ms = Vec::new();
        let mut rss = Vec::new();
        let reused = work.join("boot-reused");
        for run in 0..starts {
            let dir = if fresh {
                work.join(format!("boot-fresh-{run}"))
            } else {
                reused.clone()
            };
            fs::create_dir_all(&dir).unwrap();
            let config = dir.join("porchlight.toml");
            fs::write(
                &config,
                format!(
                    "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{}\"\n[discovery]\nenabled = false\n[web]\nenabled = false\n[uplink]\nbroker = \"mqtts://127.0.0.1:{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
                    dir.join("data").display().to_string(),
                    free_port(),
                    broker.port,
                    broker.ca.pem_file.display().to_string(),
                    gw.cert.display().to_string(),
                    gw.key.display().to_string(),
                ),
            )
            .unwrap();
            let log = File::create(dir.join(format!("daemon-{run}.log"))).unwrap();
            let t0 = Instant::now();
            let mut d = Command::new(BIN)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn porchlight");
            let t = listener.wait_for(
                t0,
                Duration::from_secs(30),
                "online status from the daemon",
                |l| l.starts_with(status) && l.contains("\"online\":true"),
            );
            ms.push((t - t0).as_secs_f64() * 1e3);
            thread::sleep(Duration::from_millis(300));
            if let Some(kb) = proc_kb(&format!("/proc/{}/status", d.id()), "VmRSS:") {
                rss.push(kb);
            }
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let st = d.wait().unwrap();
            assert!(
                st.success(),
                "daemon exited with {st}; log in {}",
                dir.display()
            );
            if fresh {
                let _ = fs::remove_dir_all(&dir);
            }
        }
        let what = "porchlight run --config (release)";
        rows.push(start_row(
            what,
            if fresh {
                "fresh each run"
            } else {
                "reused (restart)"
            },
            ms,
            rss,
        ));
    }
    // For scale: a C client that connects, publishes one QoS 1 message and exits.
    let mut ms = Vec::new();
    for run in 0..starts {
        let body = format!("{{\"probe\":{run}}}");
        let t0 = Instant::now();
        let st = Command::new("mosquitto_pub")
            .args(tls_args(broker, &gw))
            .args([
                "-t",
                "porchlight/v1/gw/gw-boot/probe",
                "-q",
                "1",
                "-m",
                &body,
            ])
            .status()
            .expect("run mosquitto_pub");
        assert!(st.success());
        let t = listener.wait_for(t0, Duration::from_secs(10), "probe", |l| l.contains(&body));
        ms.push((t - t0).as_secs_f64() * 1e3);
    }
    rows.push(start_row(
        "mosquitto_pub -q 1 -m (one message)",
        "–",
        ms,
        Vec::new(),
    ));
    rows
}

struct BacklogRow {
    case: String,
    vals: HashMap<String, String>,
}

impl BacklogRow {
    fn get(&self, k: &str) -> Option<&String> {
        self.vals.get(k)
    }
}

fn backlog_section(broker: &mut Broker, work: &Path, large: usize) -> Vec<BacklogRow> {
    println!("\n# Backlog memory");
    let gw = broker.identity("gw-rss");
    let mib = (large * 256 * KIB) as f64 / 1048576.0;
    let mut rows = Vec::new();
    for file in [false, true] {
        let dir = work.join(format!("rss-{file}"));
        let mut spec = ChildSpec::new(
            broker,
            &gw,
            dir.clone(),
            "porchlight/v1/gw/gw-rss/bench".into(),
        );
        spec.count = large;
        spec.size = 256 * KIB;
        spec.file = file;
        spec.run_first = true;
        broker.stop();
        let vals = spec.run(|| broker.restart());
        let case = format!(
            "{mib:.0} MiB queued with the link down, {}, then drained",
            if file { "file ranges" } else { "inline" }
        );
        println!("{case}: {vals:?}");
        rows.push(BacklogRow { case, vals });
        let _ = fs::remove_dir_all(&dir);
    }
    // Restart with a backlog: one process queues and exits, the next opens and drains it.
    let dir = work.join("rss-restart");
    let mut spec = ChildSpec::new(
        broker,
        &gw,
        dir.clone(),
        "porchlight/v1/gw/gw-rss/bench".into(),
    );
    spec.count = large;
    spec.size = 256 * KIB;
    spec.run_first = true;
    spec.drain = false;
    broker.stop();
    let queued = spec.run(|| {});
    spec.count = 0;
    spec.drain = true;
    let mut vals = spec.run(|| broker.restart());
    for k in ["rss_queued_kb", "queue_s"] {
        if let Some(v) = queued.get(k) {
            vals.insert(k.to_owned(), v.clone());
        }
    }
    let case = format!("{mib:.0} MiB inline, process restarted with the backlog, then drained");
    println!("{case}: {vals:?} (queueing process: {queued:?})");
    rows.push(BacklogRow { case, vals });
    let _ = fs::remove_dir_all(&dir);
    rows
}

/// The library side, run in a fresh process so its RSS and CPU are its own.
mod child {
    use super::*;

    fn say(k: &str, v: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{k}={v}").unwrap();
        out.flush().unwrap();
    }

    fn rss_kb() -> u64 {
        proc_kb("/proc/self/status", "VmRSS:").unwrap_or(0)
    }

    fn write_bytes() -> u64 {
        fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("write_bytes:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn main() {
        let args: HashMap<String, String> = std::env::args()
            .skip(1)
            .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let arg = |k: &str| {
            args.get(k)
                .unwrap_or_else(|| panic!("child: no {k}="))
                .clone()
        };
        let dir = PathBuf::from(arg("dir"));
        let count: usize = arg("count").parse().unwrap();
        let size: usize = arg("size").parse().unwrap();
        let file = arg("file") == "true";
        let run_first = arg("run_first") == "true";
        let drain = arg("drain") == "true";
        let topic = arg("topic");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The daemon's sled configuration: the store's database, default page cache.
        let t_open = Instant::now();
        let (store, _) = Store::open(
            &dir.join("data"),
            StoreOptions::new(1 << 30, Duration::from_secs(7 * 86_400)),
        )
        .expect("open the store");
        say("rss_store_kb", rss_kb());
        let mut s = UplinkSettings::new(
            "127.0.0.1",
            arg("port").parse().unwrap(),
            arg("ca").into(),
            arg("cert").into(),
            arg("key").into(),
        );
        s.outbox_limit = 1 << 30;
        s.backoff_initial = Duration::from_millis(100);
        s.backoff_max = Duration::from_millis(200);
        s.drain_timeout = Duration::from_secs(30);
        let (uplink, handle) = Uplink::open(s, store.db(), Arc::new(NoHealth)).expect("open");
        say("open_s", t_open.elapsed().as_secs_f64());
        say("rss_open_kb", rss_kb());
        let (trigger, shutdown) = Shutdown::new();
        let mut uplink = Some(uplink);
        let mut task = None;
        if run_first {
            task = Some(rt.spawn(uplink.take().unwrap().run(shutdown.clone())));
        }

        if count > 0 {
            let ranges = file.then(|| {
                let p = dir.join("chunks.bin");
                let mut w = BufWriter::new(File::create(&p).unwrap());
                for i in 0..count {
                    w.write_all(&payload(i, size)).unwrap();
                }
                w.into_inner().unwrap().sync_all().unwrap();
                p
            });
            // Each payload is made just before it is queued: a backlog built beforehand would
            // sit in this process's heap and be counted as the outbox's memory.
            let io0 = write_bytes();
            let t0 = Instant::now();
            for i in 0..count {
                let p = match &ranges {
                    Some(p) => Payload::FileRange {
                        path: p.clone(),
                        offset: (i * size) as u64,
                        len: size as u64,
                    },
                    None => Payload::Inline(payload(i, size)),
                };
                handle
                    .queue(Record {
                        topic: topic.clone(),
                        retain: false,
                        payload: p,
                        grant: None,
                        owns_file: false,
                    })
                    .expect("queue");
            }
            say("queue_s", t0.elapsed().as_secs_f64());
            say("queue_write_bytes", write_bytes() - io0);
            say("rss_queued_kb", rss_kb());
        }
        let st = handle.status();
        say("outbox_messages", st.outbox_messages);
        say("outbox_bytes", st.outbox_bytes);

        if drain {
            println!("ready");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let cpu0 = cpu_secs(libc::RUSAGE_SELF);
            let t0 = Instant::now();
            if let Some(u) = uplink.take() {
                task = Some(rt.spawn(u.run(shutdown.clone())));
            }
            let mut rss_max = 0;
            while handle.status().outbox_messages > 0 {
                rss_max = rss_max.max(rss_kb());
                assert!(
                    t0.elapsed() < Duration::from_secs(300),
                    "outbox not drained: {:#?}",
                    handle.status()
                );
                thread::sleep(Duration::from_millis(5));
            }
            say("drain_s", t0.elapsed().as_secs_f64());
            say("drain_cpu_s", cpu_secs(libc::RUSAGE_SELF) - cpu0);
            say("rss_drain_max_kb", rss_max.max(rss_kb()));
            say("rss_drained_kb", rss_kb());
            say("connects", handle.status().connects);
            say("cpu_total_s", cpu_secs(libc::RUSAGE_SELF));
        }
        trigger.trigger();
        if let Some(t) = task {
            rt.block_on(t).unwrap();
        }
        drop(handle);
        drop(store);
    }
}
