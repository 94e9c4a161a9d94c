//! Cameras added, edited and removed while the daemon runs, against real peers.
//!
//! Each test starts the daemon with no cameras, a GStreamer RTSP camera (crates/testkit/src/camera.rs)
//! and `tests/data/onvif/fake_onvif_device.py`, the ONVIF device/media endpoint we wrote for
//! tests: it answers from recorded vendor responses (`getprofiles_hikvision.xml`,
//! `probematch_hikvision.xml`), checks the WS-Security UsernameToken digest in camera time,
//! and names the GStreamer camera in GetStreamUri. Discovery uses the unicast path (the
//! daemon's `[discovery] hosts`, with multicast off), which the fake device answers on its own
//! loopback address: no discovery traffic leaves the machine, and several tests can run at
//! once because each uses its own 127.0.0.x addresses.
//!
//! What is checked: `porchlight cameras add --from-discovery` → segments appear without a
//! restart; the camera survives a daemon restart; `cameras remove` stops it and its video stays
//! exportable; the password never appears in an API response or the daemon log; a camera that
//! moves (new address) is followed only by the safe rule of `porchlight::cameras::moves`.

use porchlight_testkit as support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::camera::{Camera, Codec, Stream};
use support::{Daemon, FAST_INGEST};

const USER: &str = "admin";
const PASSWORD: &str = "s3cret pass";
const ENDPOINT: &str = "urn:uuid:7e57ca3e-0000-4000-8000-00000000cafe";

fn fake_device_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onvif/fake_onvif_device.py")
}

/// The fake ONVIF device (stdlib Python only), killed on drop; its stdout lines are kept.
struct Device {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Device {
    /// A device on `ip` (HTTP on a free port, WS-Discovery on 3702) whose streams are `cam`'s.
    fn start(ip: &str, cam: &Camera, extra: &[&str]) -> Device {
        let port = support::free_port().to_string();
        let cam_port = cam.port().to_string();
        let mut child = Command::new("/usr/bin/python3")
            .arg(fake_device_script())
            .args([ip, &port, USER, PASSWORD, ip])
            .args(["--stream-port", &cam_port, "--stream-paths", "main,sub"])
            .args(["--wsd", ENDPOINT])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs the fake ONVIF device");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut d = Device {
            child,
            lines,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.calls().iter().any(|l| l == "ready") {
            assert!(
                Instant::now() < deadline,
                "fake ONVIF device on {ip} never printed ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Every line printed so far.
    fn calls(&mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen.clone()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A camera with a main and a sub stream on `ip`, demanding the test credentials.
fn camera_on(ip: &str) -> Camera {
    Camera::builder()
        .stream("main", Codec::H264)
        .stream_config(Stream::new("sub", Codec::H264).size(160, 120))
        .auth(USER, PASSWORD)
        .bind(ip)
        .start()
}

/// A daemon with no cameras whose discovery probes only `hosts` by unicast.
fn daemon_discovering(hosts: &[&str]) -> Daemon {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    Daemon::start(&format!(
        "{FAST_INGEST}[discovery]\nenabled = true\nmulticast = false\ntimeout = \"1s\"\nhosts = [{}]\n",
        hosts.join(", ")
    ))
}

/// Any control-API call; `(status, body)`.
fn call(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let token = std::fs::read_to_string(d.data_dir().join("api.token")).unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let url = format!("http://127.0.0.1:{}{path}", d.api_port);
    let auth = format!("Bearer {}", token.trim());
    let resp = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        (m, b) => {
            let text = b.unwrap_or(json!({})).to_string();
            let req = match m {
                "PATCH" => agent.patch(&url),
                "PUT" => agent.put(&url),
                _ => agent.post(&url),
            };
            req.header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(text.as_bytes())
        }
    }
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    // Every answer of every call is checked for the password.
    assert!(
        !text.contains("s3cret"),
        "{method} {path} returned the password: {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until the daemon's discovery lists the fake device; returns its discovery id.
fn discovered_id(d: &Daemon, ip: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, r) = call(d, "POST", "/api/v1/discovery/scan", None);
        if let Some(c) = r["cameras"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["address"] == ip))
        {
            assert_eq!(c["name"], "Front Door", "{c:#}");
            assert_eq!(c["onvif"], true);
            return c["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "discovery never found {ip}: {r:#}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Asks for scans (the daemon hands back the last result within 5 s of a run) until camera
/// `porch` satisfies `cond`.
fn rescan_until(d: &Daemon, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        call(d, "POST", "/api/v1/discovery/scan", None);
        let c = d.camera("porch");
        if cond(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "camera porch: timed out waiting for {what}: {c:#}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn segments(d: &Daemon, id: &str) -> u64 {
    let s = d.get("/api/v1/status");
    s["storage"]["cameras"][id]["segments"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_segments(d: &Daemon, id: &str, more_than: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let n = segments(d, id);
        if n > more_than {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "camera {id}: no new segment after {more_than}; {:#}\n{}",
            d.camera(id),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn password_file(d: &Daemon) -> PathBuf {
    let p = d.dir.path().join("cam.password");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    p
}

#[test]
fn added_from_discovery_streams_survives_restart_and_is_removed() {
    let ip = "127.0.0.21";
    let cam = camera_on(ip);
    let _dev = Device::start(ip, &cam, &[]);
    let mut d = daemon_discovering(&[ip]);
    assert_eq!(d.get("/api/v1/cameras"), json!([]));
    // The daemon discovers at start on its own (no scan asked for).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.get("/api/v1/discovery").to_string().contains(ip) {
        assert!(
            Instant::now() < deadline,
            "the start-up discovery never listed {ip}: {}\n{}",
            d.get("/api/v1/discovery"),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let did = discovered_id(&d, ip);
    let (_, disc) = call(&d, "GET", "/api/v1/discovery", None);
    assert_eq!(disc["cameras"][0]["added"], false, "{disc:#}");

    // A wrong password is the camera's refusal, in plain words, and adds nothing.
    let (status, err) = call(
        &d,
        "POST",
        "/api/v1/cameras",
        Some(json!({"from_discovery": did, "username": USER, "password": "wrong"})),
    );
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the user name or password"),
        "{err}"
    );
    assert_eq!(d.get("/api/v1/cameras"), json!([]));

    let pw = password_file(&d);
    let out = d.cli_ok(&[
        "cameras",
        "add",
        "--from-discovery",
        &did,
        "--username",
        USER,
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(out.contains("added camera front-door"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");

    // Streaming without a restart: segments appear.
    d.wait_camera("front-door", Duration::from_secs(45), "streaming", |c| {
        c["state"] == "streaming"
    });
    let n = wait_segments(&d, "front-door", 0);
    let (_, cams) = call(&d, "GET", "/api/v1/cameras", None);
    let c = &cams[0];
    assert_eq!(c["source"], "added");
    assert_eq!(c["url"], format!("rtsp://{ip}:{}/main", cam.port()));
    assert_eq!(
        c["substream_url"],
        format!("rtsp://{ip}:{}/sub", cam.port())
    );
    assert_eq!(c["has_password"], true);
    assert_eq!(c["username"], USER);
    assert_eq!(c["address"], ip);
    assert_eq!(c["onvif"]["endpoint"], ENDPOINT);
    assert_eq!(c["onvif"]["discovery_id"], did.as_str());
    assert_eq!(c["onvif"]["serial"], "PC0001");
    let (_, disc) = call(&d, "GET", "/api/v1/discovery", None);
    assert_eq!(disc["cameras"][0]["added"], true, "{disc:#}");
    assert_eq!(disc["cameras"][0]["camera_id"], "front-door");
    // `porchlight discover` asks the running daemon what is added (loopback only: multicast
    // pinned to `lo`, the device probed by unicast).
    let out = d.cli_ok(&[
        "discover",
        "--json",
        "--timeout",
        "1s",
        "--loopback",
        "--interface",
        "lo",
        "--host",
        ip,
    ]);
    let found: Value = serde_json::from_str(&out).unwrap();
    let row = found
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == ip)
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row["added"], true, "{row:#}");
    assert_eq!(row["camera_id"], "front-door");
    // Adding it twice is refused.
    let (status, body) = call(
        &d,
        "POST",
        "/api/v1/cameras",
        Some(json!({"from_discovery": did, "username": USER, "password": PASSWORD})),
    );
    assert_eq!(status, 409, "{body}");
    // The audit log has the addition, by the resident, without addresses or credentials.
    let (_, audit) = call(&d, "GET", "/api/v1/audit?kind=camera_added", None);
    let e = &audit["entries"].as_array().or(audit.as_array()).unwrap()[0];
    assert_eq!(e["camera"], "front-door");
    assert_eq!(e["actor"], "resident");
    let detail = e["detail"].to_string();
    assert!(!detail.contains(ip) && !detail.contains("rtsp"), "{detail}");

    // Persisted: a restart brings it back, streaming.
    assert!(d.stop(), "daemon did not stop cleanly\n{}", d.logs());
    d.restart();
    d.wait_camera(
        "front-door",
        Duration::from_secs(45),
        "streaming after restart",
        |c| c["state"] == "streaming",
    );
    let n = wait_segments(&d, "front-door", n);

    // Sharing sees the added camera: its rules can be set (deny by default until then).
    let (status, r) = call(
        &d,
        "PUT",
        "/api/v1/consent/front-door",
        Some(json!({"live": "always"})),
    );
    assert_eq!(status, 200, "{r}");

    // Removed: gone from the lists, its worker stopped, its video still exportable.
    let out = d.cli_ok(&["cameras", "remove", "front-door"]);
    assert!(out.contains("removed camera front-door"), "{out}");
    assert_eq!(d.get("/api/v1/cameras"), json!([]));
    assert_eq!(d.get("/api/v1/status")["cameras"], json!([]));
    let after = segments(&d, "front-door");
    assert!(after >= n);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        segments(&d, "front-door"),
        after,
        "a removed camera kept recording"
    );
    let (status, plan) = call(
        &d,
        "GET",
        &format!(
            "/api/v1/export/plan?camera=front-door&from=0&to={}",
            i64::MAX / 2
        ),
        None,
    );
    assert_eq!(status, 200, "{plan}");
    let (_, audit) = call(&d, "GET", "/api/v1/audit?kind=camera_removed", None);
    assert!(audit.to_string().contains("front-door"), "{audit}");
    // Its sharing rules are gone with it (deny by default if an id is ever reused).
    let (_, consent) = call(&d, "GET", "/api/v1/consent", None);
    assert_eq!(consent["cameras"], json!([]), "{consent}");
    let (status, _) = call(
        &d,
        "PUT",
        "/api/v1/consent/front-door",
        Some(json!({"live": "always"})),
    );
    assert_eq!(status, 404);
    // And it stays removed after a restart.
    assert!(d.stop());
    d.restart();
    assert_eq!(d.get("/api/v1/cameras"), json!([]));

    let logs = d.logs();
    assert!(
        !logs.contains("s3cret"),
        "the password is in the daemon log"
    );
}

#[test]
fn manual_add_edit_and_configuration_cameras_stay_read_only() {
    let fixed = Camera::h264("main");
    let added = camera_on("127.0.0.1");
    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}{}",
        support::camera_toml("porch", &fixed.url("main"), "")
    ));
    let pw = password_file(&d);
    let out = d.cli_ok(&[
        "cameras",
        "add",
        "--url",
        &added.url("main"),
        "--name",
        "Garage Side",
        "--username",
        USER,
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(out.contains("added camera garage-side"), "{out}");
    d.wait_camera("garage-side", Duration::from_secs(45), "streaming", |c| {
        c["state"] == "streaming"
    });
    let (status, porch) = call(&d, "GET", "/api/v1/cameras/porch", None);
    assert_eq!(status, 200, "{porch}");
    assert_eq!(porch["source"], "config");
    assert_eq!(porch["has_password"], false);

    // Edit: a new URL restarts the stream there.
    d.cli_ok(&[
        "cameras",
        "edit",
        "garage-side",
        "--url",
        &added.url("sub"),
        "--name",
        "Garage",
    ]);
    let c = d.wait_camera(
        "garage-side",
        Duration::from_secs(45),
        "streaming sub",
        |c| c["state"] == "streaming" && c["width"] == 160,
    );
    assert_eq!(c["name"], "Garage");
    assert_eq!(c["url"], added.url("sub"));

    // The configuration file's camera is read-only here.
    for (method, body) in [("DELETE", None), ("PATCH", Some(json!({"name": "x"})))] {
        let (status, err) = call(&d, method, "/api/v1/cameras/porch", body);
        assert_eq!(status, 409, "{method}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("managed by the configuration file"),
            "{err}"
        );
    }
    // Bad input: every problem in plain words, the password never echoed.
    let (status, err) = call(
        &d,
        "POST",
        "/api/v1/cameras",
        Some(json!({"id": "bad id!", "url": "rtsp://admin:s3cret@127.0.0.1/x", "record": "sub"})),
    );
    assert_eq!(status, 400, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    for needle in ["id must be", "contains credentials", "substream_url"] {
        assert!(msg.contains(needle), "{needle:?} missing: {msg}");
    }
    let (status, err) = call(
        &d,
        "POST",
        "/api/v1/cameras",
        Some(json!({"url": fixed.url("main"), "id": "porch"})),
    );
    assert_eq!(status, 409, "{err}");
    let (status, _) = call(&d, "DELETE", "/api/v1/cameras/nope", None);
    assert_eq!(status, 404);
    let (status, err) = call(
        &d,
        "PATCH",
        "/api/v1/cameras/garage-side",
        Some(json!({"nmae": "typo"})),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "bad_request", "{err}");

    // Survives a restart with the edit applied.
    assert!(d.stop());
    d.restart();
    let c = d.wait_camera("garage-side", Duration::from_secs(45), "streaming", |c| {
        c["state"] == "streaming"
    });
    assert_eq!(c["name"], "Garage");
    assert!(
        !d.logs().contains("s3cret"),
        "the password is in the daemon log"
    );
}

#[test]
fn a_camera_that_moves_is_followed_only_by_the_safe_rule() {
    let (a, b, c) = ("127.0.0.31", "127.0.0.32", "127.0.0.33");
    let cam_a = camera_on(a);
    let dev_a = Device::start(a, &cam_a, &["--open-device-info"]);
    let d = daemon_discovering(&[a, b, c]);
    let did = discovered_id(&d, a);
    let (status, r) = call(
        &d,
        "POST",
        "/api/v1/cameras",
        Some(
            json!({"from_discovery": did, "username": USER, "password": PASSWORD, "name": "Porch"}),
        ),
    );
    assert_eq!(status, 200, "{r}");
    let n = wait_segments(&d, "porch", 0);

    // DHCP gives the camera a new address on the same network; same serial number, open
    // GetDeviceInformation, old address silent: followed without the resident.
    drop(dev_a);
    drop(cam_a);
    let cam_b = camera_on(b);
    let _dev_b = Device::start(b, &cam_b, &["--open-device-info"]);
    let moved = rescan_until(&d, "re-pointed to b", |c| c["address"] == b);
    assert_eq!(moved["url"], format!("rtsp://{b}:{}/main", cam_b.port()));
    assert!(moved["onvif"]["pending_move"].is_null(), "{moved:#}");
    let n = wait_segments(&d, "porch", n);

    // It moves again, to a device that wants credentials even for GetDeviceInformation: the
    // box cannot check the serial without sending them, so the move waits for the resident,
    // and nothing but unauthenticated calls reach the new address until then.
    drop(_dev_b);
    drop(cam_b);
    let cam_c = camera_on(c);
    let mut dev_c = Device::start(c, &cam_c, &[]);
    let pending = rescan_until(&d, "pending move", |c| {
        !c["onvif"]["pending_move"].is_null()
    });
    assert_eq!(
        pending["address"], b,
        "followed without approval: {pending:#}"
    );
    assert_eq!(pending["onvif"]["pending_move"]["address"], c);
    assert_eq!(
        pending["onvif"]["pending_move"]["reason"],
        "serial_unverified"
    );
    for line in dev_c.calls() {
        assert!(
            line == "ready"
                || line.starts_with("wsd ")
                || line.contains("GetSystemDateAndTime ok")
                || line.contains("denied no token"),
            "the unapproved address got more than unauthenticated calls: {line}"
        );
    }
    let cli = d.cli_ok(&["cameras"]);
    assert!(cli.contains("waiting for you"), "{cli}");

    // The resident approves: the box asks the new address with the credentials and follows.
    let out = d.cli_ok(&["cameras", "edit", "porch", "--approve-move"]);
    assert!(out.contains("updated"), "{out}");
    let moved = d.camera("porch");
    assert_eq!(moved["address"], c);
    assert_eq!(moved["url"], format!("rtsp://{c}:{}/main", cam_c.port()));
    assert!(dev_c.calls().iter().any(|l| l.contains("GetStreamUri ok")));
    wait_segments(&d, "porch", n);
    assert!(
        !d.logs().contains("s3cret"),
        "the password is in the daemon log"
    );
}
