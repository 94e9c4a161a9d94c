//! Ingest, storage and export benchmark (issue 2): porchlight against ffmpeg on the same
//! streams, in the same run. Results are recorded in `docs/performance.md`.
//!
//! ```text
//! cargo bench --bench ingest
//! PORCHLIGHT_BENCH_CAMERAS=1,4,16 PORCHLIGHT_BENCH_SECS=60 PORCHLIGHT_BENCH_EXPORT_MIN=10 \
//!     cargo bench --bench ingest
//! ```
//!
//! # Streams
//!
//! A 60 s 1080p25 H.264 clip (~4 Mbit/s, GOP 50 = 2 s, no B-frames) is encoded once with x264
//! and cached in `target/bench-media/clip.ts`. Per camera, `ffmpeg -re -stream_loop -1 … -c
//! copy -f rtp` pushes it to a loopback UDP port, and one GStreamer RTSP server
//! (`crates/testkit/src/rtsp_camera.py --relay camN:UDPPORT`) serves every camera as
//! `rtsp://127.0.0.1:PORT/camN`, re-payloaded but never transcoded. The pushers are started
//! 2 s / N apart so the cameras' keyframes do not all arrive at once.
//!
//! # Ingest (per camera count)
//!
//! The release `porchlight run --config …` (one process, N cameras) and N processes of
//! `ffmpeg -rtsp_transport tcp -i URL -c copy -f segment -segment_time 2 -reset_timestamps 1
//! out%05d.mp4` read the same relayed streams at the same time. After a warm-up (every camera
//! has stored a segment on both sides) the window of `PORCHLIGHT_BENCH_SECS` is measured:
//! - CPU: `utime + stime` from `/proc/PID/stat` (summed over the ffmpeg processes), per
//!   stream-minute;
//! - RSS: `VmRSS` from `/proc/PID/status` every 500 ms (ffmpeg: the sum over its processes),
//!   the largest sample and the last one;
//! - write amplification: `write_bytes` from `/proc/PID/io` over the video bytes stored in
//!   the window — porchlight: the store's `written_total_bytes` from `GET /api/v1/status`
//!   (segment and init files); ffmpeg: the growth of its segment files.
//!
//! # Export
//!
//! Ten real minutes per run would dominate the wall time, so the store is filled directly:
//! the clip's H.264 (Annex B, extracted once with ffmpeg) is split into access units, turned
//! into [`porchlight::media::Frame`]s with 25 fps timestamps, cut by the real
//! [`porchlight::media::segmenter::Segmenter`] and written with the real
//! [`porchlight::store::Store::put_segment`] (fsyncs and all) — 10 loops of the clip, ~310
//! GOP segments. Timed then, warm page cache, best of three:
//! - the library: [`porchlight::export::plan`] + [`porchlight::export::stream`] into a file;
//! - the product: `porchlight export --camera cam0 --from … --to … -o clip.mp4` against the
//!   release daemon opened on that store (HTTP on loopback; the CLI fsyncs its output);
//! - ffmpeg: `ffmpeg -f concat -safe 0 -i list.txt -c copy out.mp4` over ffmpeg's own
//!   segments of the same ten minutes (`-stream_loop 9 -i clip.ts -c copy -f segment
//!   -segment_time 2 -reset_timestamps 1`), without and with an fsync of the output.
//!
//! # Options (environment)
//!
//! - `PORCHLIGHT_BENCH_CAMERAS` (default `1,4,16`), comma-separated camera counts; empty skips
//!   the ingest part.
//! - `PORCHLIGHT_BENCH_SECS` (default 60): measured window per camera count.
//! - `PORCHLIGHT_BENCH_EXPORT_MIN` (default 10): minutes exported; 0 skips the export part.
//! - `PORCHLIGHT_BENCH_DIR` (default `target/`): where the temporary work directories go. Keep
//!   it on a real disk: on tmpfs `write_bytes` stays 0.
//!
//! Needs ffmpeg, ffprobe and the GStreamer RTSP server (`.ci/setup`); fails loudly without them.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use porchlight::media::segmenter::{Segment, Segmenter};
use porchlight::media::{Frame, StreamInfo, TrackInfo, TrackKind};
use porchlight::store::{InitId, NewSegment, Store, StoreOptions};

const BIN: &str = env!("CARGO_BIN_EXE_porchlight");
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
const PYTHON: &str = "/usr/bin/python3";
const APT_HINT: &str = "apt-get install ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad (or run .ci/setup)";

/// The x264 command that makes the clip (the arguments after `ffmpeg`).
#[rustfmt::skip]
const ENCODE_ARGS: &[&str] = &[
    "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-t", "60",
    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M",
    "-g", "50", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "mpegts",
];
const FPS: i64 = 25;
const CLIP_SECS: i64 = 60;
const WIDTH: u16 = 1920;
const HEIGHT: u16 = 1080;

fn main() {
    let opts = Opts::from_env();
    check_tools();
    let media = PathBuf::from(MANIFEST).join("target/bench-media");
    fs::create_dir_all(&media).expect("create target/bench-media");
    let clip = ensure_clip(&media);
    println!("# porchlight ingest bench");
    println!("{}", machine_facts());
    println!("binary: {BIN}");
    println!("clip: {} ({:.1} MB)", clip.display(), mb(file_len(&clip)));

    let mut rows = Vec::new();
    for &n in &opts.cameras {
        println!(
            "\n## {n} camera(s): warming up, then measuring {} s",
            opts.secs
        );
        let row = run_ingest(&opts, &clip, n);
        row.print_detail();
        rows.push(row);
    }
    let export = (opts.export_min > 0).then(|| {
        println!("\n## export of {} minutes of one camera", opts.export_min);
        run_export(&opts, &media, &clip)
    });

    println!("\n# Results\n");
    if !rows.is_empty() {
        print_ingest_tables(&rows, opts.secs);
    }
    if let Some(e) = export {
        e.print();
    }
}

// ---------------------------------------------------------------------------------------------
// Options and environment

struct Opts {
    cameras: Vec<usize>,
    secs: u64,
    export_min: u64,
    work_root: PathBuf,
}

impl Opts {
    fn from_env() -> Opts {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cameras = match std::env::var("PORCHLIGHT_BENCH_CAMERAS") {
            Ok(v) => v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .unwrap_or_else(|| panic!("PORCHLIGHT_BENCH_CAMERAS: {s:?} is not 1..=64"))
                })
                .collect(),
            Err(_) => vec![1, 4, 16],
        };
        let num = |k: &str, default: u64| {
            var(k).map_or(default, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{k}: {v:?} is not a number"))
            })
        };
        let secs = num("PORCHLIGHT_BENCH_SECS", 60).max(5);
        let export_min = num("PORCHLIGHT_BENCH_EXPORT_MIN", 10);
        let work_root = var("PORCHLIGHT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(MANIFEST).join("target"));
        fs::create_dir_all(&work_root).expect("create the bench work directory");
        Opts {
            cameras,
            secs,
            export_min,
            work_root,
        }
    }

    fn workdir(&self, prefix: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_root)
            .expect("create a work directory")
    }
}

fn check_tools() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "MISSING {tool}: the benchmark needs it; {APT_HINT}");
    }
    assert!(
        Path::new(PYTHON).exists(),
        "MISSING {PYTHON} for the GStreamer RTSP relay; {APT_HINT}"
    );
}

fn machine_facts() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let ffmpeg = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!(
        "machine: nproc {nproc}, {model}, {:.1} GiB RAM, kernel {}\n{ffmpeg}",
        mem_kb as f64 / 1048576.0,
        kernel.trim()
    )
}

/// The cached clip, encoded on first use.
fn ensure_clip(media: &Path) -> PathBuf {
    let clip = media.join("clip.ts");
    if clip.exists() {
        return clip;
    }
    let tmp = media.join("clip.ts.tmp");
    println!(
        "encoding {} once: ffmpeg {} {}",
        clip.display(),
        ENCODE_ARGS.join(" "),
        tmp.display()
    );
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(ENCODE_ARGS)
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(
        st.success(),
        "encoding the clip failed ({st}); is libx264 in this ffmpeg?"
    );
    fs::rename(&tmp, &clip).expect("rename the clip");
    clip
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Children that are killed (SIGKILL) on drop, so a panic leaves nothing running.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn add(&mut self, name: impl Into<String>, child: Child) -> u32 {
        let pid = child.id();
        self.0.push((name.into(), child));
        pid
    }

    /// Signals every child whose name starts with `prefix`, waits up to `grace`, then kills.
    fn stop(&mut self, prefix: &str, signal: i32, grace: Duration) {
        let (mut hit, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(n, _)| n.starts_with(prefix));
        self.0 = rest;
        for (_, c) in &hit {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
        let deadline = Instant::now() + grace;
        for (_, c) in &mut hit {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Panics if a child has exited, with the tail of its log.
    fn assert_running(&mut self, logs: &Path) {
        for (name, c) in &mut self.0 {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("{name} exited early ({st})\n{}", log_tails(logs));
            }
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    for p in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let text = fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} ---\n", p.display()));
        out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
        out.push('\n');
    }
    out
}

fn log_file(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let f = File::create(dir.join(format!("{name}.log"))).expect("create a log file");
    (Stdio::from(f.try_clone().expect("dup log")), Stdio::from(f))
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind udp 127.0.0.1:0")
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind tcp 127.0.0.1:0")
        .port()
}

/// Starts the GStreamer relay for `udp_ports.len()` cameras; returns its RTSP base URL and pid.
fn start_relay(procs: &mut Procs, logs: &Path, udp_ports: &[u16]) -> (String, u32) {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(PathBuf::from(MANIFEST).join("crates/testkit/src/rtsp_camera.py"))
        .args(["--port", "0", "--exit-with-parent"]);
    for (i, p) in udp_ports.iter().enumerate() {
        cmd.args(["--relay", &format!("cam{i}:{p}")]);
    }
    let (_, err) = log_file(logs, "relay");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}; {APT_HINT}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let base = line
        .as_deref()
        .ok()
        .and_then(|l| l.strip_prefix("READY "))
        .map(str::to_owned);
    let Some(base) = base else {
        let status = child.try_wait().ok().flatten();
        let _ = child.kill();
        let _ = child.wait();
        let code = status.and_then(|s| s.code());
        panic!(
            "the GStreamer RTSP relay did not start (exit {code:?}{}):\n{}",
            if code == Some(3) {
                ", GStreamer pieces missing"
            } else {
                ""
            },
            log_tails(logs)
        );
    };
    (base, procs.add("relay", child))
}

fn ffprobe_stream(url: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-rw_timeout",
            "15000000",
        ])
        .args([
            "-show_entries",
            "stream=codec_name,profile,width,height",
            "-of",
            "compact",
        ])
        .arg(url)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in clock ticks (all its threads, live and exited).
fn cpu_ticks(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    get(11) + get(12)
}

fn rss_kb(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn write_bytes(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/io"), "write_bytes:")
}

fn proc_field(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Sum of the sizes of files under `dir` (recursively) whose name ends with `suffix`.
fn dir_bytes(dir: &Path, suffix: &str) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut sum = 0;
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            sum += dir_bytes(&e.path(), suffix);
        } else if e.file_name().to_string_lossy().ends_with(suffix) {
            sum += e.metadata().map_or(0, |m| m.len());
        }
    }
    sum
}

fn file_count(dir: &Path, suffix: &str) -> usize {
    fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
            .count()
    })
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// The daemon's control API

struct Api {
    port: u16,
    token_path: PathBuf,
    agent: ureq::Agent,
}

impl Api {
    fn new(port: u16, data_dir: &Path) -> Api {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Api {
            port,
            token_path: data_dir.join("api.token"),
            agent,
        }
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let token = fs::read_to_string(&self.token_path).map_err(|e| e.to_string())?;
        let resp = self
            .agent
            .get(&format!("http://127.0.0.1:{}{path}", self.port))
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .call()
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp
            .into_body()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }

    fn wait_up(&self, procs: &mut Procs, logs: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/api/v1/status").is_err() {
            procs.assert_running(logs);
            assert!(
                Instant::now() < deadline,
                "daemon API not up in 30 s\n{}",
                log_tails(logs)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn start_daemon(procs: &mut Procs, logs: &Path, config: &Path) -> u32 {
    let (out, err) = log_file(logs, "porchlight");
    let child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn porchlight");
    procs.add("porchlight", child)
}

fn daemon_config(data: &Path, api_port: u16, cameras: &[(String, String)]) -> String {
    let mut cfg = format!(
        "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n[store]\nquota = \"8 GiB\"\nretention = \"7d\"\n[discovery]\nenabled = false\n[web]\nenabled = false\n",
        data.display().to_string()
    );
    for (id, url) in cameras {
        cfg.push_str(&format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n"));
    }
    cfg
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// Counters at one instant.
struct Snap {
    t: Instant,
    pl_ticks: u64,
    pl_write: u64,
    pl_written_total: u64,
    pl_seg_bytes: u64,
    ff_ticks: u64,
    ff_write: u64,
    ff_bytes: u64,
    rig_ticks: u64,
    machine: (u64, u64),
}

struct IngestRow {
    cameras: usize,
    window_s: f64,
    pl_cpu_s: f64,
    ff_cpu_s: f64,
    rig_cpu_s: f64,
    machine_busy: f64,
    pl_rss_max_kb: u64,
    pl_rss_end_kb: u64,
    ff_rss_max_kb: u64,
    ff_rss_end_kb: u64,
    ff_rss_max_one_kb: u64,
    pl_write: u64,
    pl_video: u64,
    pl_seg_growth: u64,
    ff_write: u64,
    ff_video: u64,
    pl_lost_packets: u64,
    pl_segments_failed: u64,
    pl_reconnects: u64,
    probe: String,
}

impl IngestRow {
    fn per_stream_min(&self, cpu_s: f64) -> f64 {
        cpu_s / (self.cameras as f64 * self.window_s / 60.0)
    }

    fn pl_wa(&self) -> f64 {
        self.pl_write as f64 / self.pl_video.max(1) as f64
    }

    fn ff_wa(&self) -> f64 {
        self.ff_write as f64 / self.ff_video.max(1) as f64
    }

    fn rss_goal_mb(&self) -> f64 {
        30.0 + 4.0 * self.cameras as f64
    }

    fn print_detail(&self) {
        println!("relay probe (cam0): {}", self.probe);
        println!(
            "window {:.1} s; box busy {:.0} % of {} cores; rig (relay + pushers) {:.2} CPU s",
            self.window_s,
            self.machine_busy * 100.0,
            thread::available_parallelism().map_or(0, |n| n.get()),
            self.rig_cpu_s
        );
        println!(
            "porchlight: cpu {:.2} s, rss max {:.1} MB end {:.1} MB, write_bytes {:.1} MB, \
             written_total +{:.1} MB, segment files +{:.1} MB, lost packets {}, failed segments {}, reconnects {}",
            self.pl_cpu_s,
            self.pl_rss_max_kb as f64 / 1024.0,
            self.pl_rss_end_kb as f64 / 1024.0,
            mb(self.pl_write),
            mb(self.pl_video),
            mb(self.pl_seg_growth),
            self.pl_lost_packets,
            self.pl_segments_failed,
            self.pl_reconnects
        );
        println!(
            "ffmpeg x{}: cpu {:.2} s, rss sum max {:.1} MB end {:.1} MB (largest one {:.1} MB), \
             write_bytes {:.1} MB, segment files +{:.1} MB",
            self.cameras,
            self.ff_cpu_s,
            self.ff_rss_max_kb as f64 / 1024.0,
            self.ff_rss_end_kb as f64 / 1024.0,
            self.ff_rss_max_one_kb as f64 / 1024.0,
            mb(self.ff_write),
            mb(self.ff_video)
        );
    }
}

fn run_ingest(opts: &Opts, clip: &Path, n: usize) -> IngestRow {
    let work = opts.workdir(&format!("bench-ingest-{n}-"));
    let logs = work.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut procs = Procs::default();

    let udp_ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
    let (base, relay_pid) = start_relay(&mut procs, &logs, &udp_ports);
    let mut pusher_pids = Vec::new();
    for (i, port) in udp_ports.iter().enumerate() {
        let (out, err) = log_file(&logs, &format!("push{i}"));
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
            ])
            .arg("-i")
            .arg(clip)
            .args(["-c", "copy", "-f", "rtp", "-sdp_file", "/dev/null"])
            .arg(format!("rtp://127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the ffmpeg pusher");
        pusher_pids.push(procs.add(format!("push{i}"), child));
        // Spread the cameras' keyframes over one GOP, as unsynchronised cameras would be.
        thread::sleep(Duration::from_millis(2000 / n as u64));
    }
    let urls: Vec<String> = (0..n).map(|i| format!("{base}/cam{i}")).collect();
    let probe = ffprobe_stream(&urls[0]);
    assert!(
        probe.contains("codec_name=h264")
            && probe.contains("width=1920")
            && probe.contains("height=1080"),
        "the relay does not carry 1080p H.264 (ffprobe: {probe:?})\n{}",
        log_tails(&logs)
    );

    // porchlight, one process for all cameras.
    let data = work.path().join("data");
    let api_port = free_tcp_port();
    let config = work.path().join("porchlight.toml");
    let cams: Vec<(String, String)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("cam{i}"), u.clone()))
        .collect();
    fs::write(&config, daemon_config(&data, api_port, &cams)).unwrap();
    let pl_pid = start_daemon(&mut procs, &logs, &config);
    let api = Api::new(api_port, &data);
    api.wait_up(&mut procs, &logs);

    // ffmpeg, one process per camera, as one would deploy it.
    let mut ff_pids = Vec::new();
    let mut ff_dirs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let dir = work.path().join(format!("ffmpeg{i}"));
        fs::create_dir_all(&dir).unwrap();
        let (out, err) = log_file(&logs, &format!("ffmpeg{i}"));
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
            ])
            .arg(url)
            .args([
                "-c",
                "copy",
                "-f",
                "segment",
                "-segment_time",
                "2",
                "-reset_timestamps",
                "1",
            ])
            .arg("out%05d.mp4")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn ffmpeg");
        ff_pids.push(procs.add(format!("ffmpeg{i}"), child));
        ff_dirs.push(dir);
    }

    // Warm-up: every camera streaming and stored on both sides.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        procs.assert_running(&logs);
        let cams = api.get("/api/v1/cameras").unwrap_or_default();
        let pl_ok = cams.as_array().is_some_and(|a| {
            a.len() == n
                && a.iter().all(|c| {
                    c["state"] == "streaming" && c["segments_written"].as_u64().unwrap_or(0) >= 1
                })
        });
        let ff_ok = ff_dirs.iter().all(|d| file_count(d, ".mp4") >= 2);
        if pl_ok && ff_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every camera was recording after 60 s (porchlight ok: {pl_ok}, ffmpeg ok: {ff_ok}); cameras: {cams:#}\n{}",
            log_tails(&logs)
        );
        thread::sleep(Duration::from_millis(250));
    }
    thread::sleep(Duration::from_secs(2));

    let snap = |api: &Api| -> Snap {
        let status = api.get("/api/v1/status").expect("GET /api/v1/status");
        Snap {
            t: Instant::now(),
            pl_ticks: cpu_ticks(pl_pid),
            pl_write: write_bytes(pl_pid),
            pl_written_total: status["storage"]["written_total_bytes"]
                .as_u64()
                .expect("written_total_bytes in status"),
            pl_seg_bytes: dir_bytes(&data.join("segments"), ".m4s"),
            ff_ticks: ff_pids.iter().map(|&p| cpu_ticks(p)).sum(),
            ff_write: ff_pids.iter().map(|&p| write_bytes(p)).sum(),
            ff_bytes: ff_dirs.iter().map(|d| dir_bytes(d, ".mp4")).sum(),
            rig_ticks: pusher_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>()
                + cpu_ticks(relay_pid),
            machine: machine_ticks(),
        }
    };

    let s0 = snap(&api);
    let (mut pl_max, mut ff_max, mut ff_one_max) = (0, 0, 0);
    let (mut pl_end, mut ff_end) = (0, 0);
    let end = s0.t + Duration::from_secs(opts.secs);
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(500));
        procs.assert_running(&logs);
        pl_end = rss_kb(pl_pid);
        let each: Vec<u64> = ff_pids.iter().map(|&p| rss_kb(p)).collect();
        ff_end = each.iter().sum();
        pl_max = pl_max.max(pl_end);
        ff_max = ff_max.max(ff_end);
        ff_one_max = ff_one_max.max(each.iter().copied().max().unwrap_or(0));
    }
    let s1 = snap(&api);
    let cams = api.get("/api/v1/cameras").unwrap_or_default();
    let sum_field = |k: &str| -> u64 {
        cams.as_array()
            .map_or(0, |a| a.iter().map(|c| c[k].as_u64().unwrap_or(0)).sum())
    };

    let tck = clk_tck();
    let window_s = (s1.t - s0.t).as_secs_f64();
    let (busy, total) = (s1.machine.0 - s0.machine.0, s1.machine.1 - s0.machine.1);
    let row = IngestRow {
        cameras: n,
        window_s,
        pl_cpu_s: (s1.pl_ticks - s0.pl_ticks) as f64 / tck,
        ff_cpu_s: (s1.ff_ticks - s0.ff_ticks) as f64 / tck,
        rig_cpu_s: (s1.rig_ticks - s0.rig_ticks) as f64 / tck,
        machine_busy: busy as f64 / total.max(1) as f64,
        pl_rss_max_kb: pl_max,
        pl_rss_end_kb: pl_end,
        ff_rss_max_kb: ff_max,
        ff_rss_end_kb: ff_end,
        ff_rss_max_one_kb: ff_one_max,
        pl_write: s1.pl_write - s0.pl_write,
        pl_video: s1.pl_written_total - s0.pl_written_total,
        pl_seg_growth: s1.pl_seg_bytes - s0.pl_seg_bytes,
        ff_write: s1.ff_write - s0.ff_write,
        ff_video: s1.ff_bytes - s0.ff_bytes,
        pl_lost_packets: sum_field("lost_packets"),
        pl_segments_failed: sum_field("segments_failed"),
        pl_reconnects: sum_field("reconnects"),
        probe,
    };

    // Orderly stop: the daemon first (it closes its open segments), then ffmpeg, the rig.
    procs.stop("porchlight", libc::SIGTERM, Duration::from_secs(30));
    procs.stop("ffmpeg", libc::SIGINT, Duration::from_secs(5));
    procs.stop("push", libc::SIGKILL, Duration::from_secs(5));
    procs.stop("relay", libc::SIGTERM, Duration::from_secs(5));
    row
}

fn print_ingest_tables(rows: &[IngestRow], secs: u64) {
    println!(
        "### CPU and memory ({secs} s window, both sides on the same relayed streams at once)\n"
    );
    println!(
        "| cameras | porchlight CPU s / stream-min | ffmpeg CPU s / stream-min | ratio (goal ≤ 0.5) | \
         porchlight RSS max / end MB | goal MB | ffmpeg RSS sum max / end MB | box busy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let pl = r.per_stream_min(r.pl_cpu_s);
        let ff = r.per_stream_min(r.ff_cpu_s);
        let ratio = pl / ff.max(1e-9);
        let rss_ok = r.pl_rss_max_kb as f64 / 1024.0 <= r.rss_goal_mb();
        println!(
            "| {} | {:.3} | {:.3} | {:.2} {} | {:.1} / {:.1} {} | {:.0} | {:.1} / {:.1} | {:.0} % |",
            r.cameras,
            pl,
            ff,
            ratio,
            if ratio <= 0.5 { "met" } else { "MISSED" },
            r.pl_rss_max_kb as f64 / 1024.0,
            r.pl_rss_end_kb as f64 / 1024.0,
            if rss_ok { "met" } else { "MISSED" },
            r.rss_goal_mb(),
            r.ff_rss_max_kb as f64 / 1024.0,
            r.ff_rss_end_kb as f64 / 1024.0,
            r.machine_busy * 100.0
        );
    }
    println!(
        "\n### Write amplification (process write_bytes ÷ video bytes stored in the window)\n"
    );
    println!(
        "| cameras | porchlight write_bytes MB | porchlight video MB (written_total_bytes) | porchlight WA (goal ≤ 1.1) | \
         ffmpeg write_bytes MB | ffmpeg video MB (segment files) | ffmpeg WA |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.3} {} | {:.1} | {:.1} | {:.3} |",
            r.cameras,
            mb(r.pl_write),
            mb(r.pl_video),
            r.pl_wa(),
            if r.pl_wa() <= 1.1 { "met" } else { "MISSED" },
            mb(r.ff_write),
            mb(r.ff_video),
            r.ff_wa()
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Export

struct ExportResult {
    minutes: u64,
    segments: usize,
    frames: u64,
    bytes: u64,
    fill_s: f64,
    fill_wa: f64,
    lib_s: Vec<f64>,
    cli_s: Vec<f64>,
    daemon_cpu_s: f64,
    pl_out: u64,
    ff_segments: usize,
    ff_s: Vec<f64>,
    ff_sync_s: Vec<f64>,
    ff_out: u64,
    pl_probe: String,
    ff_probe: String,
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn fmt_runs(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ExportResult {
    fn print(&self) {
        println!(
            "### Export of {} minutes of one camera ({} segments, {} frames, {:.1} MB; warm page cache; best of {})\n",
            self.minutes,
            self.segments,
            self.frames,
            mb(self.bytes),
            self.cli_s.len()
        );
        println!("| what | seconds (best) | runs | output MB |");
        println!("|---|---:|---|---:|");
        println!(
            "| `porchlight export … -o` (CLI → daemon over loopback HTTP; output fsynced) | {:.2} | {} | {:.1} |",
            best(&self.cli_s),
            fmt_runs(&self.cli_s),
            mb(self.pl_out)
        );
        println!(
            "| library `export::plan` + `export::stream` → file (no fsync) | {:.2} | {} | {:.1} |",
            best(&self.lib_s),
            fmt_runs(&self.lib_s),
            mb(self.pl_out)
        );
        println!(
            "| `ffmpeg -f concat -safe 0 -i list.txt -c copy out.mp4` ({} ffmpeg segments; no fsync) | {:.2} | {} | {:.1} |",
            self.ff_segments,
            best(&self.ff_s),
            fmt_runs(&self.ff_s),
            mb(self.ff_out)
        );
        println!(
            "| the same ffmpeg concat, then fsync of out.mp4 | {:.2} | {} | {:.1} |",
            best(&self.ff_sync_s),
            fmt_runs(&self.ff_sync_s),
            mb(self.ff_out)
        );
        println!(
            "\nfill: {:.1} s for {} put_segment calls ({:.1}x real time), process write_bytes ÷ segment bytes {:.3}; \
             daemon CPU during the CLI exports {:.2} s",
            self.fill_s,
            self.segments,
            (self.minutes * 60) as f64 / self.fill_s,
            self.fill_wa,
            self.daemon_cpu_s
        );
        println!(
            "porchlight MP4: {}\nffmpeg MP4:     {}",
            self.pl_probe, self.ff_probe
        );
    }
}

/// The clip's H.264 as Annex B, extracted once.
fn ensure_annexb(media: &Path, clip: &Path) -> PathBuf {
    let out = media.join("clip.h264");
    if out.exists() {
        return out;
    }
    let tmp = media.join("clip.h264.tmp");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(
        st.success(),
        "extracting the H.264 elementary stream failed ({st})"
    );
    fs::rename(&tmp, &out).unwrap();
    out
}

/// NAL units of an Annex B stream (start codes removed, trailing zero bytes trimmed).
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        let mut nal = &data[s..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            out.push(nal);
        }
    }
    out
}

/// One access unit: its NAL units in MP4 framing (4-byte lengths), and whether it is an IDR.
struct AccessUnit {
    data: Bytes,
    is_key: bool,
}

/// Groups NAL units into access units (H.264 7.4.1.2.3: an AUD, SEI, SPS or PPS after a
/// slice, or a slice with `first_mb_in_slice == 0`, starts a new one). AUDs are dropped.
fn access_units(nals: &[&[u8]]) -> (Vec<AccessUnit>, Vec<u8>, Vec<u8>) {
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let (mut has_vcl, mut key) = (false, false);
    for nal in nals {
        let t = nal[0] & 0x1f;
        let vcl = t == 1 || t == 5;
        let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let new_au = match t {
            9 => true,
            6..=8 => has_vcl,
            1 | 5 => has_vcl && first_mb_zero,
            _ => false,
        };
        if new_au && has_vcl {
            out.push(AccessUnit {
                data: Bytes::from(std::mem::take(&mut cur)),
                is_key: key,
            });
            has_vcl = false;
            key = false;
        }
        match t {
            9 => continue,
            7 if sps.is_empty() => sps = nal.to_vec(),
            8 if pps.is_empty() => pps = nal.to_vec(),
            _ => {}
        }
        cur.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        cur.extend_from_slice(nal);
        has_vcl |= vcl;
        key |= t == 5;
    }
    if has_vcl {
        out.push(AccessUnit {
            data: Bytes::from(cur),
            is_key: key,
        });
    }
    (out, sps, pps)
}

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 8);
    b.extend_from_slice(&(body.len() as u32 + 8).to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// An `avc1` sample entry (ISO 14496-15) for the clip, as retina would build it.
fn avc1_entry(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let mut b = Vec::new();
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&WIDTH.to_be_bytes());
    b.extend_from_slice(&HEIGHT.to_be_bytes());
    b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    b.extend_from_slice(&[0; 32]); // compressorname
    b.extend_from_slice(&0x0018u16.to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&mp4_box(b"avcC", &avcc));
    mp4_box(b"avc1", &b)
}

fn put(store: &Store, init: InitId, seg: Segment) {
    store
        .put_segment(
            "cam0",
            NewSegment {
                init,
                start_ms: seg.start_ms,
                end_ms: seg.end_ms,
                video_frames: seg.video_frames,
                audio_frames: seg.audio_frames,
                bytes: seg.fragment,
            },
        )
        .expect("put_segment");
}

fn ffprobe_file(p: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_packets:format=duration",
        ])
        .args(["-of", "compact"])
        .arg(p)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', " ")
}

fn run_export(opts: &Opts, media: &Path, clip: &Path) -> ExportResult {
    const RUNS: usize = 3;
    let minutes = opts.export_min;
    let loops = (minutes as i64 * 60 + CLIP_SECS - 1) / CLIP_SECS;
    let work = opts.workdir("bench-export-");
    let logs = work.path().join("logs");
    fs::create_dir_all(&logs).unwrap();

    // ffmpeg's own segments of the same minutes (not timed).
    let ff_dir = work.path().join("ffmpeg");
    fs::create_dir_all(&ff_dir).unwrap();
    let st = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-stream_loop",
        ])
        .arg((loops - 1).to_string())
        .arg("-i")
        .arg(clip)
        .args(["-t", &(minutes * 60).to_string()])
        .args([
            "-c",
            "copy",
            "-f",
            "segment",
            "-segment_time",
            "2",
            "-reset_timestamps",
            "1",
        ])
        .arg("seg%05d.mp4")
        .current_dir(&ff_dir)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg segmenting failed");
    let mut segs: Vec<String> = fs::read_dir(&ff_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg") && n.ends_with(".mp4"))
        .collect();
    segs.sort();
    let list: String = segs.iter().map(|s| format!("file '{s}'\n")).collect();
    fs::write(ff_dir.join("list.txt"), list).unwrap();

    // The store, filled through the library with real segments.
    let annexb = fs::read(ensure_annexb(media, clip)).expect("read clip.h264");
    let nals = nal_units(&annexb);
    let (aus, sps, pps) = access_units(&nals);
    assert!(
        aus.len() as i64 == CLIP_SECS * FPS && aus[0].is_key && !sps.is_empty() && !pps.is_empty(),
        "clip.h264: expected {} access units starting with an IDR, got {}",
        CLIP_SECS * FPS,
        aus.len()
    );
    let info = StreamInfo {
        video: TrackInfo {
            kind: TrackKind::Video,
            timescale: 90_000,
            sample_entry: avc1_entry(&sps, &pps),
            width: WIDTH.into(),
            height: HEIGHT.into(),
        },
        audio: None,
    };
    let data = work.path().join("data");
    let total_frames = minutes as i64 * 60 * FPS;
    let frame_ms = 1000 / FPS;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let base_ms = (now_ms - total_frames * frame_ms - 60_000) / 1000 * 1000;
    let mut opts_store = StoreOptions::new(8 << 30, Duration::from_secs(7 * 86400));
    opts_store.cache_capacity = porchlight::store::DEFAULT_CACHE_CAPACITY;
    let (store, _) = Store::open(&data, opts_store).expect("open the store");
    let store = Arc::new(store);
    let mut seg = Segmenter::new(&info);
    let init = store
        .put_init("cam0", seg.init_segment())
        .expect("put_init");
    let w0 = write_bytes(std::process::id());
    let t0 = Instant::now();
    for i in 0..total_frames {
        let au = &aus[(i % (CLIP_SECS * FPS)) as usize];
        let frame = Frame {
            track: TrackKind::Video,
            dts: i * 90_000 / FPS,
            duration: (90_000 / FPS) as u32,
            wall_ms: base_ms + i * frame_ms,
            is_key: au.is_key,
            data: au.data.clone(),
        };
        if let Some(s) = seg.push(frame) {
            put(&store, init, s);
        }
    }
    if let Some(s) = seg.flush() {
        put(&store, init, s);
    }
    let fill_s = t0.elapsed().as_secs_f64();
    let fill_write = write_bytes(std::process::id()) - w0;
    let from_ms = base_ms;
    let to_ms = base_ms + total_frames * frame_ms;

    // Library: plan + stream into a file.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lib_out = work.path().join("lib.mp4");
    let mut lib_s = Vec::new();
    let mut plan_info = (0, 0, 0);
    for _ in 0..RUNS {
        let t = Instant::now();
        let plan = porchlight::export::plan(&store, "cam0", from_ms, to_ms).expect("plan");
        plan_info = (plan.segments, plan.video_frames, plan.bytes);
        let mut rx = rt
            .block_on(porchlight::export::stream(store.clone(), plan))
            .expect("export stream");
        let mut f = File::create(&lib_out).unwrap();
        while let Some(chunk) = rx.blocking_recv() {
            f.write_all(&chunk.expect("export chunk")).unwrap();
        }
        drop(f);
        lib_s.push(t.elapsed().as_secs_f64());
    }
    drop(rt);
    drop(store); // releases the LOCK for the daemon

    // The product: the daemon on that store, the CLI exporting through it.
    let mut procs = Procs::default();
    let api_port = free_tcp_port();
    let config = work.path().join("porchlight.toml");
    // The camera itself is unreachable (port 9): only the stored range is exported.
    let cams = [("cam0".to_owned(), "rtsp://127.0.0.1:9/none".to_owned())];
    fs::write(&config, daemon_config(&data, api_port, &cams)).unwrap();
    let pl_pid = start_daemon(&mut procs, &logs, &config);
    Api::new(api_port, &data).wait_up(&mut procs, &logs);
    let rfc = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    let cli_out = work.path().join("clip.mp4");
    let mut cli_s = Vec::new();
    let c0 = cpu_ticks(pl_pid);
    for _ in 0..RUNS {
        let _ = fs::remove_file(&cli_out);
        let t = Instant::now();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args([
                "export",
                "--camera",
                "cam0",
                "--from",
                &rfc(from_ms),
                "--to",
                &rfc(to_ms),
                "-o",
            ])
            .arg(&cli_out)
            .output()
            .expect("run porchlight export");
        cli_s.push(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "porchlight export failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_tails(&logs)
        );
    }
    let daemon_cpu_s = (cpu_ticks(pl_pid) - c0) as f64 / clk_tck() / RUNS as f64;
    procs.stop("porchlight", libc::SIGTERM, Duration::from_secs(30));

    // ffmpeg concat over its own segments.
    let ff_out = ff_dir.join("out.mp4");
    let (mut ff_s, mut ff_sync_s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let _ = fs::remove_file(&ff_out);
        let t = Instant::now();
        let st = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "concat",
                "-safe",
                "0",
            ])
            .args(["-i", "list.txt", "-c", "copy", "out.mp4"])
            .current_dir(&ff_dir)
            .status()
            .expect("run ffmpeg concat");
        ff_s.push(t.elapsed().as_secs_f64());
        assert!(st.success(), "ffmpeg concat failed");
        File::open(&ff_out).and_then(|f| f.sync_all()).unwrap();
        ff_sync_s.push(t.elapsed().as_secs_f64());
    }

    let pl_probe = ffprobe_file(&cli_out);
    let ff_probe = ffprobe_file(&ff_out);
    let want = format!("nb_read_packets={}", total_frames);
    assert!(
        pl_probe.contains(&want) && file_len(&lib_out) == file_len(&cli_out),
        "porchlight's export is not {total_frames} frames (ffprobe: {pl_probe}; library {} B, CLI {} B)",
        file_len(&lib_out),
        file_len(&cli_out)
    );
    ExportResult {
        minutes,
        segments: plan_info.0,
        frames: plan_info.1,
        bytes: plan_info.2,
        fill_s,
        fill_wa: fill_write as f64 / plan_info.2.max(1) as f64,
        lib_s,
        cli_s,
        daemon_cpu_s,
        pl_out: file_len(&cli_out),
        ff_segments: segs.len(),
        ff_s,
        ff_sync_s,
        ff_out: file_len(&ff_out),
        pl_probe,
        ff_probe,
    }
}
