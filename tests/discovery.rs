//! Camera discovery against implementations we did not write, on a network that never leaves
//! the machine.
//!
//! Multicast must not reach a real interface, so each test builds its own LAN: two network
//! namespaces ("camera" and "gateway") joined by a veth pair, with a multicast route in each
//! (iproute2, root). Inside the camera namespace run the PyPI `wsdiscovery` package (a
//! WS-Discovery responder publishing a NetworkVideoTransmitter with ONVIF scopes; it sends each
//! ProbeMatch twice) and the PyPI `zeroconf` package (an mDNS publisher of an `_rtsp._tcp`
//! service). `porchlight discover` runs in the gateway namespace under `ip netns exec`. Both
//! Python packages live in the venv `target/pyenv` that `.ci/run` creates.
//!
//! The ONVIF HTTP side is tested against `tests/data/onvif/fake_onvif_device.py`, a small fake
//! device *we wrote* (no real ONVIF camera exists on the test machine): it serves recorded
//! responses and checks the WS-Security UsernameToken digest and its timestamp against its own
//! clock, which runs an hour ahead (so the clock offset must be applied), and optionally HTTP
//! digest. Those tests use loopback addresses only.
//!
//! Every namespace and process is removed by a Drop guard, also when a test fails.

use porchlight_testkit as support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use porchlight::discovery::onvif::{self, OnvifError, ProbeRequest};
use porchlight::secret::Secret;

const CAM_IP: &str = "10.231.0.1";
const GW_IP: &str = "10.231.0.2";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onvif")
}

/// The venv with `wsdiscovery` and `zeroconf` (created by `.ci/run`).
fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    let ok = p.exists()
        && Command::new(&p)
            .args(["-c", "import wsdiscovery, zeroconf"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with wsdiscovery and zeroconf is required; create it with:\n  python3 -m venv target/pyenv && target/pyenv/bin/pip install wsdiscovery zeroconf\n(.ci/run does this)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Lan {
    cam: String,
    gw: String,
}

impl Lan {
    /// `gw_multicast = false` clears the gateway interface's MULTICAST flag: a network that
    /// drops multicast, where only a unicast `--host` probe can work.
    fn new(gw_multicast: bool) -> Lan {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let probe = Command::new("ip").args(["netns", "list"]).output();
        assert!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "these tests need root and iproute2 (`ip netns`): {probe:?}"
        );
        let lan = Lan {
            cam: format!("plcam{pid}-{n}"),
            gw: format!("plgw{pid}-{n}"),
        };
        ip(&["netns", "add", &lan.cam]);
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &lan.gw]);
        let (vc, vg) = (
            format!("plc{n}x{}", pid % 100_000),
            format!("plg{n}x{}", pid % 100_000),
        );
        ip(&[
            "-n", &lan.cam, "link", "add", &vc, "type", "veth", "peer", "name", &vg, "netns",
            &lan.gw,
        ]);
        for (ns, dev, addr) in [(&lan.cam, &vc, CAM_IP), (&lan.gw, &vg, GW_IP)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        if !gw_multicast {
            ip(&["-n", &lan.gw, "link", "set", "dev", &vg, "multicast", "off"]);
        }
        lan
    }

    fn exec(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and the peer with it.
        for ns in [&self.cam, &self.gw] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A helper process, killed on drop; its stdout lines arrive on `lines`.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let p = Proc { child, lines, name };
        p.wait_for("ready");
        p
    }

    fn wait_for(&self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(e) => panic!("{} never printed {what:?}: {e}", self.name),
            }
        }
    }

    fn seen(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn porchlight() -> PathBuf {
    support::bin()
}

fn discover_json(lan: &Lan, extra: &[&str], config: &Path) -> Vec<serde_json::Value> {
    let out = run(lan
        .exec(&lan.gw, &porchlight())
        .args(["--config"])
        .arg(config)
        .args(["discover", "--json", "--timeout", "3s"])
        .args(extra));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn start_responders(lan: &Lan, py: &Path, xaddr: &str) -> (Proc, Proc) {
    let mut w = lan.exec(&lan.cam, py);
    w.arg(data_dir().join("wsd_responder.py"))
        .args(["Porch Cam", xaddr]);
    let wsd = Proc::spawn("wsdiscovery responder", w);
    let mut m = lan.exec(&lan.cam, py);
    m.arg(data_dir().join("mdns_publisher.py"))
        .args(["Porch Doorbell", CAM_IP, "8554"]);
    let mdns = Proc::spawn("zeroconf publisher", m);
    (wsd, mdns)
}

#[test]
fn discover_finds_wsdiscovery_and_zeroconf_devices_from_another_namespace() {
    let py = python();
    let lan = Lan::new(true);
    let (_wsd, _mdns) = start_responders(
        &lan,
        &py,
        &format!("http://{CAM_IP}:8080/onvif/device_service"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("porchlight.toml");
    std::fs::write(
        &config,
        format!("[[cameras]]\nid = \"porch\"\nurl = \"rtsp://{CAM_IP}:8554/live/main\"\n"),
    )
    .unwrap();
    let cams = discover_json(&lan, &[], &config);
    // The responder sends each ProbeMatch twice and also says Hello; the zeroconf service is
    // on the same address: one camera, seen by both sources.
    assert_eq!(cams.len(), 1, "{cams:#?}");
    let c = &cams[0];
    assert_eq!(c["address"], CAM_IP);
    assert_eq!(c["name"], "Porch Cam");
    assert_eq!(c["model"], "PyCam-1000");
    assert_eq!(c["location"], "porch");
    assert_eq!(c["onvif"], true);
    assert_eq!(c["rtsp_port"], 8554);
    assert_eq!(c["rtsp_path"], "/live/main");
    assert_eq!(c["configured"], true);
    assert_eq!(
        c["sources"],
        serde_json::json!(["ws-discovery", "mdns"]),
        "{c:#}"
    );
    assert_eq!(
        c["xaddrs"],
        serde_json::json!([format!("http://{CAM_IP}:8080/onvif/device_service")])
    );
    let id = c["id"].as_str().unwrap();
    assert_eq!(id.len(), 12);
    // The id is stable: a second run names the camera the same.
    let again = discover_json(&lan, &[], &config);
    assert_eq!(again[0]["id"], id);
}

#[test]
fn discover_with_host_works_where_multicast_is_dropped() {
    let py = python();
    let lan = Lan::new(false);
    let (_wsd, _mdns) = start_responders(
        &lan,
        &py,
        &format!("http://{CAM_IP}:8080/onvif/device_service"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("none.toml");
    std::fs::write(&config, "").unwrap();
    // No multicast-capable interface in the gateway namespace: without --host, nothing.
    let out = lan
        .exec(&lan.gw, &porchlight())
        .args(["discover", "--json", "--timeout", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cams = discover_json(&lan, &["--host", CAM_IP], &config);
    assert_eq!(cams.len(), 1, "{cams:#?}");
    assert_eq!(cams[0]["name"], "Porch Cam");
    assert_eq!(cams[0]["configured"], false);
    assert_eq!(
        cams[0]["sources"],
        serde_json::json!(["ws-discovery", "mdns"])
    );
}

#[test]
fn discover_with_range_works_where_multicast_is_dropped() {
    let py = python();
    let lan = Lan::new(false);
    let (_wsd, _mdns) = start_responders(
        &lan,
        &py,
        &format!("http://{CAM_IP}:8080/onvif/device_service"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("none.toml");
    std::fs::write(&config, "").unwrap();
    // Paced unicast probes of the whole /24 (one per host): the responder answers, from the
    // range.
    let cams = discover_json(&lan, &["--range", "10.231.0.0/24"], &config);
    assert_eq!(cams.len(), 1, "{cams:#?}");
    assert_eq!(cams[0]["address"], CAM_IP);
    assert_eq!(cams[0]["name"], "Porch Cam");
    // Public or wide ranges are refused before anything is sent.
    for bad in ["8.8.8.0/24", "10.0.0.0/16"] {
        let out = lan
            .exec(&lan.gw, &porchlight())
            .args(["discover", "--range", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("private") || err.contains("too wide"),
            "{bad}: {err}"
        );
    }
}

/// The fake ONVIF device on loopback (see the module doc).
fn fake_device(bind: &str, port: u16, extra: &[&str]) -> Proc {
    let mut c = Command::new(python());
    c.arg(data_dir().join("fake_onvif_device.py"))
        .args([bind, &port.to_string(), "admin", "s3cret pass", bind])
        .args(extra);
    Proc::spawn("fake ONVIF device", c)
}

fn request(port: u16, password: &str) -> ProbeRequest {
    ProbeRequest {
        device_url: format!("http://127.0.0.1:{port}/onvif/device_service"),
        approved: "127.0.0.1".parse().unwrap(),
        username: "admin".into(),
        password: Secret::new(password),
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn onvif_probe_with_usernametoken_in_camera_time() {
    let port = support::free_port();
    let dev = fake_device("127.0.0.1", port, &[]);
    let r = onvif::probe_device(&request(port, "s3cret pass")).unwrap();
    assert_eq!(r.info.manufacturer.as_deref(), Some("PyCam"));
    assert_eq!(r.info.model.as_deref(), Some("PyCam-1000"));
    assert!((r.clock_offset_s - 3600).abs() <= 2, "{}", r.clock_offset_s);
    assert_eq!(
        r.main().unwrap().as_str(),
        "rtsp://127.0.0.1:8554/Streaming/Channels/101"
    );
    assert_eq!(
        r.sub().unwrap().as_str(),
        "rtsp://127.0.0.1:8554/Streaming/Channels/102"
    );
    let calls = dev.seen();
    assert!(
        calls.iter().all(|c| c.ends_with(" ok")),
        "the device refused a call: {calls:?}"
    );
    for op in [
        "GetSystemDateAndTime",
        "GetDeviceInformation",
        "GetCapabilities",
        "GetProfiles",
        "GetStreamUri",
    ] {
        assert!(
            calls.iter().any(|c| c.contains(op)),
            "{op} not called: {calls:?}"
        );
    }
    // A wrong password is the camera's refusal, typed, without the password in the message.
    let e = onvif::probe_device(&request(port, "wrong")).unwrap_err();
    assert!(matches!(e, OnvifError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains("wrong"));
}

#[test]
fn onvif_probe_falls_back_to_getservices() {
    // ONVIF 2.x-only firmware refuses GetCapabilities; the media address comes from
    // GetServices instead.
    let port = support::free_port();
    let dev = fake_device("127.0.0.1", port, &["--no-capabilities"]);
    let r = onvif::probe_device(&request(port, "s3cret pass")).unwrap();
    assert!(r.main().is_some());
    let calls = dev.seen();
    assert!(
        calls.iter().any(|c| c.contains("GetServices ok")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.contains("GetStreamUri ok")),
        "{calls:?}"
    );
}

#[test]
fn onvif_probe_answers_http_digest() {
    let port = support::free_port();
    let dev = fake_device("127.0.0.1", port, &["--http-digest"]);
    let r = onvif::probe_device(&request(port, "s3cret pass")).unwrap();
    assert!(r.main().is_some());
    let calls = dev.seen();
    assert!(calls.iter().any(|c| c.contains("challenged")), "{calls:?}");
    assert!(
        calls.iter().any(|c| c.contains("GetStreamUri ok")),
        "{calls:?}"
    );
}

#[test]
fn onvif_lying_media_xaddr_gets_no_request() {
    // The "other host" is 127.0.0.2 (also loopback); nothing may ever connect to it.
    let trap = TcpListener::bind("127.0.0.2:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let lie = trap.local_addr().unwrap().to_string();
    let port = support::free_port();
    let _dev = fake_device("127.0.0.1", port, &["--lying-media", &lie]);
    let e = onvif::probe_device(&request(port, "s3cret pass")).unwrap_err();
    assert!(matches!(e, OnvifError::OtherHost { .. }), "{e}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        trap.accept().is_err(),
        "something connected to the lying XAddr's host"
    );
    // And a device URL on another host than the approved one is refused before any request.
    let mut req = request(port, "s3cret pass");
    req.approved = "127.0.0.3".parse::<IpAddr>().unwrap();
    assert!(matches!(
        onvif::probe_device(&req),
        Err(OnvifError::OtherHost { .. })
    ));
}

#[test]
fn discover_probe_prints_a_cameras_entry_without_the_password() {
    let py = python();
    let lan = Lan::new(true);
    let (_wsd, _mdns) = start_responders(
        &lan,
        &py,
        &format!("http://{CAM_IP}:8080/onvif/device_service"),
    );
    let mut d = lan.exec(&lan.cam, &py);
    d.arg(data_dir().join("fake_onvif_device.py")).args([
        CAM_IP,
        "8080",
        "admin",
        "s3cret pass",
        CAM_IP,
    ]);
    let _dev = Proc::spawn("fake ONVIF device", d);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret pass\n").unwrap();
    let cams = discover_json(&lan, &[], &config);
    let id = cams[0]["id"].as_str().unwrap().to_owned();
    let out = run(lan
        .exec(&lan.gw, &porchlight())
        .args([
            "discover",
            "--timeout",
            "2s",
            "--probe",
            &id,
            "--username",
            "admin",
            "--password-file",
        ])
        .arg(&pw));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("s3cret"), "password printed:\n{text}");
    assert!(
        text.contains(&format!(
            "url = \"rtsp://{CAM_IP}:8554/Streaming/Channels/101\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "substream_url = \"rtsp://{CAM_IP}:8554/Streaming/Channels/102\""
        )),
        "{text}"
    );
    // Ready to paste: the printed entry is a valid configuration.
    let cfg = porchlight::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let v = cfg.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(v.cameras[0].id, "porch-cam");
    assert_eq!(
        v.cameras[0].credentials.as_ref().unwrap().password.expose(),
        "s3cret pass"
    );
}
