//! Test harness shared by the integration tests and benches of every workspace crate: the
//! real daemon binary, real cameras (GStreamer RTSP server), Mosquitto with mutual TLS and a
//! city PKI, `porchlight-center`, and ffprobe. Every peer listens on a loopback port chosen at
//! run time; a missing peer fails the test loudly.
//!
//! The binaries under test are the ones cargo built next to the test (`target/{profile}/`):
//! `cargo test` and `cargo bench` from the repository root build every workspace member's
//! binaries before running anything. A test run on its own (`cargo test -p porchlight --test
//! pairing`) finds a missing binary and says how to build it.

pub mod camera;
pub mod center;
pub mod ffprobe;
pub mod mosquitto;
pub mod pki;
pub mod requests;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use camera::free_port;

/// The daemon under test, run from the built binary with its own data directory.
pub struct Daemon {
    child: Option<Child>,
    /// Holds config, data dir and logs; removed on drop.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// Control API port.
    pub api_port: u16,
    starts: u32,
}

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the testkit lives in crates/testkit of the repository")
}

/// Path of the workspace binary `name`, built by cargo next to the running test or bench
/// (`target/{profile}/{name}`); panics with the command that builds it when it is missing.
pub fn built_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/{profile}/deps/{test}-{hash} → target/{profile}/{name}
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/{profile}/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests from the repository root (`cargo test` builds every \
         workspace binary first), or build it with `cargo build --workspace --bins`{}",
        path.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    path
}

/// Path of the built `porchlight` binary.
pub fn bin() -> PathBuf {
    built_bin("porchlight")
}

impl Daemon {
    /// Writes a config (data_dir and api.listen are filled in; `body` adds the rest, e.g.
    /// `[[cameras]]` tables) and starts the daemon, waiting until its API answers.
    pub fn start(body: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let api_port = free_port();
        let config = dir.path().join("porchlight.toml");
        let data = dir.path().join("data");
        let mut text = format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n{body}",
            data.display().to_string()
        );
        // The daemon's periodic discovery would multicast on the machine's real interfaces:
        // tests never let discovery traffic leave the machine, so it is off unless a test
        // configures it (on loopback or in a network namespace).
        if !body.contains("[discovery]") {
            text.push_str("\n[discovery]\nenabled = false\n");
        }
        // Likewise the web UI would listen on every interface (0.0.0.0:8080): off unless a
        // test configures it (on loopback).
        if !body.contains("[web]") {
            text.push_str("\n[web]\nenabled = false\n");
        }
        std::fs::write(&config, text).expect("write config");
        let mut d = Daemon {
            child: None,
            dir,
            config,
            api_port,
            starts: 0,
        };
        d.spawn();
        d
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("daemon-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "porchlight=debug,info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn porchlight");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited at start with {status}:\n{}", self.logs());
            }
            if self.try_get("/api/v1/status").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon API not up in 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All log output of every start so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("daemon-{i}.log"));
            out.push_str(&format!("--- daemon start {i} ---\n"));
            out.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        out
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("api.token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// GET a control-API path; Err on transport failure or non-2xx (with the body).
    pub fn try_get(&self, path: &str) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.api_port);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let resp = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token()))
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

    /// GET a control-API path, panicking with the logs on failure.
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.logs()))
    }

    /// The camera with `id` from `GET /api/v1/cameras`.
    pub fn camera(&self, id: &str) -> serde_json::Value {
        let all = self.get("/api/v1/cameras");
        all.as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("camera {id} not listed: {all}"))
    }

    /// Polls `cond` on camera `id` until true or `timeout` (then panics with `what` and logs).
    pub fn wait_camera(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.camera(id);
            if cond(&c) {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "camera {id}: timed out waiting for {what}; last: {c:#}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the CLI with this daemon's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run porchlight CLI")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "porchlight {args:?} failed: {}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `porchlight export --camera CAMERA --from FROM --to TO -o OUT` (times in UTC ms),
    /// asserting success; returns stdout.
    pub fn export_range(&self, camera: &str, from_ms: i64, to_ms: i64, out: &Path) -> String {
        self.cli_ok(&[
            "export",
            "--camera",
            camera,
            "--from",
            &rfc(from_ms),
            "--to",
            &rfc(to_ms),
            "-o",
            out.to_str().expect("UTF-8 path"),
        ])
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again on the same config and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.spawn();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A `[[cameras]]` table for a camera on the test RTSP server.
pub fn camera_toml(id: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n{extra}\n")
}

/// Fast reconnects for tests.
pub const FAST_INGEST: &str =
    "[ingest]\nread_timeout = \"3s\"\nconnect_timeout = \"5s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n";

/// Path under the test's temp dir.
pub fn out_path(d: &Daemon, name: &str) -> PathBuf {
    d.dir.path().join(name)
}

/// Whether `p` exists and is non-empty.
pub fn nonempty(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
}

/// UTC milliseconds as RFC 3339, the form `porchlight export --from/--to` takes.
pub fn rfc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}
