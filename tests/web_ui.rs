//! The resident web UI in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/web/ui.mjs`) against the real daemon, a GStreamer RTSP camera, Mosquitto with
//! mutual TLS and the reference center (`porchlight-center`) on the police side.
//!
//! Setup with the setup code → login → add the camera through the form → live preview plays →
//! live sharing set to "ask" → the center's request shows up pending → approve → the feed
//! arrives at the center → revoke → the feed ends `revoked` → the audit page shows it all.
//! Screenshots of every page go to `target/ui-screenshots/` (a CI artifact).
//!
//! Needs `node`, `/usr/bin/chromium` and `npm ci --prefix tests/web` (`.ci/setup` does all
//! three); a missing piece fails loudly with the command to run, it is never skipped.

use porchlight_testkit as support;
#[path = "web/support.rs"]
mod web;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::camera::{Camera, Codec, Stream};
use support::mosquitto::{Broker, CityOptions};
use support::{Daemon, FAST_INGEST};
use web::{setup_code, web_addr, WEB_TOML};

const GW: &str = "gw-1";
const CAMERA_PASSWORD: &str = "Cam-pass-4417";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web")
}

/// `target/ui-screenshots/{flow}`, next to the built binaries, emptied for this run.
fn screenshot_dir(flow: &str) -> PathBuf {
    let bin = support::bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("target dir above the binary");
    let dir = target.join("ui-screenshots").join(flow);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Node, Chromium and playwright-core are there, or the test fails saying how to get them.
fn check_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: apt-get install nodejs npm && npm ci --prefix tests/web (or run .ci/setup as root)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (or run .ci/setup as root)"
    );
    assert!(
        web_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed: npm ci --prefix tests/web (or run .ci/setup)"
    );
}

fn center(broker: &Broker) -> Command {
    let mut c = Command::new(porchlight_testkit::center::center_bin());
    c.arg("--broker")
        .arg(broker.url())
        .arg("--ca")
        .arg(broker.ca_file())
        .arg("--cert")
        .arg(&broker.center.cert)
        .arg("--key")
        .arg(&broker.center.key);
    c
}

/// The browser script, spoken to line by line.
struct Ui {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Ui {
    /// Runs `tests/web/{script}` with `cfg` as its argument; its stderr goes to `log`.
    fn start(script: &str, cfg: &serde_json::Value, log: PathBuf) -> Ui {
        let mut child = Command::new("node")
            .arg(web_dir().join(script))
            .arg(cfg.to_string())
            .current_dir(web_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Ui {
            child,
            stdin,
            lines,
            log,
        }
    }

    /// Waits for the script to end well.
    fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "browser script: {status}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `STEP name`; returns its JSON (or null).
    fn expect(&mut self, name: &str, timeout: Duration, d: &Daemon) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let Some(rest) = line.strip_prefix("STEP ") else {
                        continue;
                    };
                    let (step, json) = rest.split_once(' ').unwrap_or((rest, "null"));
                    if step == name {
                        return serde_json::from_str(json).unwrap_or_default();
                    }
                    panic!("expected step {name}, got {line}\n{}", self.log());
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "browser step {name} did not come within {timeout:?} (script exit: {status:?})\n--- browser log ---\n{}\n--- daemon ---\n{}",
                        self.log(),
                        d.logs()
                    );
                }
            }
        }
    }

    fn go(&mut self, arg: &str) {
        writeln!(self.stdin, "GO {arg}").expect("write to the browser script");
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- browser log ---\n{}", self.log());
        }
    }
}

#[test]
fn resident_sets_up_adds_a_camera_approves_and_revokes_a_police_request_in_the_browser() {
    check_browser_tools();
    let camera = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .auth("admin", CAMERA_PASSWORD)
        .start();
    let broker = Broker::start();
    let gw = broker.identity(GW);
    let keys = broker.path().join("center-keys");
    let out = center(&broker)
        .args(["keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
    // No [[cameras]]: the resident adds the camera in the browser.
    let body = format!(
        "{FAST_INGEST}{WEB_TOML}[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\ncenter_request_key_file = {:?}\nheartbeat_interval = \"1s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\ndrain_timeout = \"2s\"\n",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        keys.join("request-key.pub.pem"),
    );
    let d = Daemon::start(&body);
    let link = Instant::now() + Duration::from_secs(20);
    while d.get("/api/v1/uplink")["state"] != "connected" {
        assert!(Instant::now() < link, "{}", d.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    let shots = screenshot_dir("resident");
    let cfg = serde_json::json!({
        "base": format!("http://{}", web_addr(&d.data_dir())),
        "code": setup_code(&d),
        "password": "porch light 2026",
        "camera": {"id": "front", "name": "Front door", "url": camera.url("s"),
                   "username": "admin", "password": CAMERA_PASSWORD},
        "shots": shots,
    });
    let mut ui = Ui::start("ui.mjs", &cfg, d.dir.path().join("browser.log"));
    let slow = Duration::from_secs(90);

    ui.expect("setup_done", slow, &d);
    assert!(
        !d.data_dir().join("setup-code").exists(),
        "setup consumed the code"
    );
    let added = ui.expect("camera_added", slow, &d);
    assert_eq!(
        added["leaked_password"], false,
        "the page shows the camera password"
    );
    let cam = d.camera("front");
    assert_eq!(cam["state"], "streaming", "{cam}");
    assert!(!cam.to_string().contains(CAMERA_PASSWORD), "{cam}");
    let played = ui.expect("preview_playing", slow, &d);
    assert_eq!(
        (played["w"].as_u64(), played["h"].as_u64()),
        (Some(320), Some(240)),
        "{played}"
    );
    ui.expect("camera_edited", slow, &d);
    let cam = d.camera("front");
    assert_eq!(cam["name"], "Front door (porch)", "{cam}");
    assert_eq!(
        cam["has_password"], true,
        "an edit without a password keeps it: {cam}"
    );
    ui.expect("consent_ask_set", slow, &d);
    let rules = d.get("/api/v1/consent");
    assert!(rules.to_string().contains("\"live\":\"ask\""), "{rules}");

    // The police side: listen first, then ask (docs/center.md).
    let id = "ui-live-1";
    let dir = d.dir.path().to_owned();
    let feed = dir.join("center-live.mp4");
    let receive = center(&broker)
        .args([
            "receive",
            "--gw",
            GW,
            "--request",
            id,
            "--timeout",
            "60s",
            "-o",
        ])
        .arg(&feed)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let request = center(&broker)
        .args([
            "request",
            "live",
            "--id",
            id,
            "--gw",
            GW,
            "--camera",
            "front",
            "--duration",
            "120s",
            "--reason",
            "Burglary reported at number 12",
            "--requester",
            "Officer Browser",
            "--case",
            "2026-0815",
            "--wait",
            "120s",
            "--key",
        ])
        .arg(keys.join("request-key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ui.go(id);

    let card = ui.expect("approved", slow, &d);
    let text = card["card"].as_str().unwrap_or_default();
    for needle in [
        "Officer Browser",
        "Burglary reported at number 12",
        "2026-0815",
        "front",
    ] {
        assert!(
            text.contains(needle),
            "pending card lacks {needle:?}: {text}"
        );
    }
    // Video reaches the center.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&feed).map_or(0, |m| m.len()) < 30_000 {
        assert!(
            Instant::now() < deadline,
            "no live video at the center after approval\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ui.go("");

    ui.expect("revoked", slow, &d);
    let got = receive.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success() && said.contains("revoked"),
        "receive: {said}\n{}",
        String::from_utf8_lossy(&got.stderr)
    );
    support::ffprobe::decode_ok(&feed);
    let p = support::ffprobe::probe(&feed);
    assert_eq!((p.width, p.height), (320, 240), "{p:?}");
    let asked = request.wait_with_output().unwrap();
    let asked_out = String::from_utf8_lossy(&asked.stdout);
    // `--wait` ends at the first final status, which for live is `granted`.
    assert!(
        asked.status.success()
            && asked_out.contains("pending")
            && asked_out.contains("status: granted"),
        "request: {asked_out}\n{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    ui.go("");

    let audit = ui.expect("audit", slow, &d);
    let kinds: Vec<&str> = audit["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    for kind in [
        "request_received",
        "decision",
        "grant_start",
        "bytes_sent",
        "revoke",
    ] {
        assert!(kinds.contains(&kind), "audit page lacks {kind}: {kinds:?}");
    }
    assert!(audit["csv_lines"].as_u64().unwrap() > kinds.len() as u64);
    ui.expect("paused", slow, &d);
    ui.expect("dashboard_preview", slow, &d);
    ui.expect("done", slow, &d);
    ui.finish();
    assert_eq!(d.get("/api/v1/consent")["paused"], false, "resumed");
    let audit = d.get("/api/v1/audit?limit=50").to_string();
    assert!(
        audit.contains("\"pause\"") && audit.contains("\"resume\""),
        "{audit}"
    );
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(pngs >= 10, "{pngs} screenshots in {}", shots.display());
}

/// `porchlight-center serve` (the city's pairing service) in the background.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn resident_pairs_the_box_from_the_page_and_sees_a_wrong_code_explained() {
    check_browser_tools();
    let broker = Broker::start_city(CityOptions::default());
    let dir = broker.city.as_ref().unwrap().dir.clone();
    let serve_log = dir.join("serve.log");
    let serve = Serve(
        center(&broker)
            .arg("serve")
            .arg("--dir")
            .arg(&dir)
            .args(["--public-broker", &broker.url()])
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&serve_log).unwrap())
            .stderr(std::fs::File::create(dir.join("serve.err")).unwrap())
            .spawn()
            .expect("spawn porchlight-center serve"),
    );
    let issued = Command::new(porchlight_testkit::center::center_bin())
        .args(["codes", "issue", "--dir"])
        .arg(&dir)
        .args(["--count", "1"])
        .output()
        .unwrap();
    assert!(issued.status.success(), "{issued:?}");
    let claim = String::from_utf8_lossy(&issued.stdout).trim().to_owned();
    let d = Daemon::start(&format!(
        "{WEB_TOML}[uplink]\nheartbeat_interval = \"1s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n\
         [pairing]\nbroker = \"{}\"\nca_file = {:?}\ntimeout = \"15s\"\n",
        broker.pairing_url(),
        broker.ca_file(),
    ));
    // The service is subscribed once it logs so.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&serve_log)
        .unwrap_or_default()
        .to_lowercase()
        .contains("subscribed")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = serde_json::json!({
        "base": format!("http://{}", web_addr(&d.data_dir())),
        "code": setup_code(&d),
        "password": "porch light 2026",
        "claim": claim,
        "shots": screenshot_dir("pairing"),
    });
    let mut ui = Ui::start("pairing.mjs", &cfg, d.dir.path().join("browser.log"));
    let slow = Duration::from_secs(90);
    let refused = ui.expect("refused", slow, &d);
    let message = refused["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        message.contains("code") && !message.contains("422"),
        "not in plain words: {message}"
    );
    let paired = ui.expect("paired", slow, &d);
    let gw = d.get("/api/v1/pairing")["gateway_id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        !gw.is_empty() && paired["text"].as_str().unwrap_or_default().contains(&gw),
        "{paired} vs {gw}"
    );
    ui.expect("unpaired", slow, &d);
    ui.finish();
    assert_eq!(d.get("/api/v1/pairing")["state"], "unpaired");
    drop(serve);
}
