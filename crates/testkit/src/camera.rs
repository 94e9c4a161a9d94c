//! A real RTSP camera for integration tests: `crates/testkit/src/rtsp_camera.py`, a GStreamer
//! RTSP server run by Debian's `/usr/bin/python3` on a loopback port chosen at run time.
//!
//! ```no_run
//! use porchlight_testkit::camera::{Camera, Codec, Stream};
//!
//! let cam = Camera::builder()
//!     .stream("main", Codec::H264)
//!     .stream_config(Stream::new("sub", Codec::H265).size(640, 360).fps(10).gop(20))
//!     .audio("main")
//!     .auth("admin", "secret") // digest; `.auth_method(AuthMethod::Basic)` for basic
//!     .start();
//! let url = cam.url("main"); // rtsp://127.0.0.1:PORT/main, no credentials
//! ```
//!
//! The camera's stderr goes to a log file (`Camera::log_path`); if a test panics while a
//! `Camera` is alive, its `Drop` prints the tail of that log.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Debian's interpreter: PyGObject and the GstRtspServer typelib are installed for it only
/// (a pyenv or venv `python3` on `PATH` cannot import `gi`).
pub const PYTHON: &str = "/usr/bin/python3";

/// The simulator script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/rtsp_camera.py");

/// How long a camera may take to print `READY` (the first run on a fresh machine builds
/// GStreamer's plugin registry, which takes seconds on a small CI box).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `stop` waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long `restart` keeps retrying while the old port is still taken.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

const APT_HINT: &str = "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
    gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-x (or run .ci/run)";

// Exit codes of rtsp_camera.py.
const EXIT_MISSING: i32 = 3;
const EXIT_BIND: i32 = 4;

/// A free TCP port on 127.0.0.1 (bind port 0, read it, release it). Another process can take
/// it before the caller binds it; cameras avoid that race by letting the script bind port 0.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Video codec of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// x264enc, zerolatency, no B-frames.
    H264,
    /// x265enc, zerolatency, no B-frames.
    H265,
}

impl Codec {
    fn arg(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }

    /// The `codec_name` ffprobe reports for this codec.
    pub fn ffprobe_name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "hevc",
        }
    }
}

/// RTSP authentication scheme the camera demands when credentials are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// RFC 2617 digest (what most cameras use).
    #[default]
    Digest,
    /// Basic, credentials in clear.
    Basic,
}

/// One stream (RTSP path) of the camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Path below the camera's root: `rtsp://127.0.0.1:PORT/{name}`; `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames between keyframes; `None` = one second (`fps` frames).
    pub gop: Option<u32>,
    /// Carry a mono 16 kHz AAC track as a second RTP stream.
    pub audio: bool,
}

impl Stream {
    /// 320x240 at 15 fps, one keyframe a second, no audio.
    pub fn new(name: &str, codec: Codec) -> Self {
        Stream {
            name: name.to_owned(),
            codec,
            width: 320,
            height: 240,
            fps: 15,
            gop: None,
            audio: false,
        }
    }

    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    pub fn fps(mut self, fps: u32) -> Self {
        self.fps = fps;
        self
    }

    pub fn gop(mut self, frames: u32) -> Self {
        self.gop = Some(frames);
        self
    }

    pub fn audio(mut self) -> Self {
        self.audio = true;
        self
    }

    fn spec(&self) -> String {
        let mut s = format!(
            "{}:{}:{}x{}:{}",
            self.name,
            self.codec.arg(),
            self.width,
            self.height,
            self.fps
        );
        if let Some(gop) = self.gop {
            write!(s, ":{gop}").unwrap();
        }
        s
    }
}

/// Options for [`Camera`]; start with [`Camera::builder`]. (No `Debug`: it holds the password.)
#[derive(Clone, Default)]
pub struct CameraBuilder {
    streams: Vec<Stream>,
    audio: Vec<String>,
    credentials: Option<(String, String)>,
    auth_method: AuthMethod,
    bitrate_kbps: Option<u32>,
    port: Option<u16>,
    bind: Option<String>,
}

impl CameraBuilder {
    /// Listen on this loopback address instead of 127.0.0.1 (a camera "elsewhere" on the
    /// loopback network, e.g. after a simulated DHCP move).
    pub fn bind(mut self, ip: &str) -> Self {
        self.bind = Some(ip.to_owned());
        self
    }

    /// Add a stream with default size, rate and GOP (320x240, 15 fps, 1 s).
    pub fn stream(self, name: &str, codec: Codec) -> Self {
        self.stream_config(Stream::new(name, codec))
    }

    /// Add a fully specified stream.
    pub fn stream_config(mut self, stream: Stream) -> Self {
        self.streams.push(stream);
        self
    }

    /// Add AAC audio to the stream `name` (added before or after this call).
    pub fn audio(mut self, name: &str) -> Self {
        self.audio.push(name.to_owned());
        self
    }

    /// Require these credentials (digest unless [`CameraBuilder::auth_method`] says otherwise).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// Video bitrate target of every stream (default 500 kbps).
    pub fn bitrate_kbps(mut self, kbps: u32) -> Self {
        self.bitrate_kbps = Some(kbps);
        self
    }

    /// Listen on this port instead of one the kernel picks.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Spawn the camera and wait for it to listen; panics (with the camera's log) if it
    /// cannot start.
    pub fn start(self) -> Camera {
        let mut streams = self.streams;
        if streams.is_empty() {
            streams.push(Stream::new("main", Codec::H264));
        }
        for name in &self.audio {
            streams
                .iter_mut()
                .find(|s| &s.name == name)
                .unwrap_or_else(|| panic!("Camera::audio({name:?}): no such stream"))
                .audio = true;
        }
        let mut args = Vec::new();
        for s in &streams {
            args.extend(["--stream".to_owned(), s.spec()]);
            if s.audio {
                args.extend(["--audio".to_owned(), s.name.clone()]);
            }
        }
        if let Some((user, password)) = &self.credentials {
            let method = match self.auth_method {
                AuthMethod::Digest => "digest",
                AuthMethod::Basic => "basic",
            };
            args.extend([
                "--user".to_owned(),
                user.clone(),
                "--password".to_owned(),
                password.clone(),
                "--auth".to_owned(),
                method.to_owned(),
            ]);
        }
        if let Some(kbps) = self.bitrate_kbps {
            args.extend(["--bitrate".to_owned(), kbps.to_string()]);
        }
        let bind = self.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
        if bind != "127.0.0.1" {
            args.extend(["--bind".to_owned(), bind.clone()]);
        }

        let dir = tempfile::Builder::new()
            .prefix("porchlight-camera-")
            .tempdir()
            .expect("create a temporary directory for the camera log");
        let log_path = dir.path().join("rtsp_camera.log");
        let mut cam = Camera {
            args,
            streams,
            credentials: self.credentials,
            port: self.port.unwrap_or(0),
            bind,
            child: None,
            log_path,
            log_shown: AtomicBool::new(false),
            _dir: dir,
        };
        match cam.spawn() {
            Ok(()) => cam,
            Err(Spawn::AddrInUse) => panic!(
                "camera cannot listen on 127.0.0.1:{}: address in use\n{}",
                cam.port,
                cam.log_tail()
            ),
        }
    }
}

/// A running camera simulator; killed on drop.
pub struct Camera {
    /// Listening address (127.0.0.1 unless [`CameraBuilder::bind`]).
    bind: String,
    /// Script arguments except `--port`.
    args: Vec<String>,
    streams: Vec<Stream>,
    credentials: Option<(String, String)>,
    /// 0 until the first start has reported the port the kernel picked.
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    /// Set once a panic message carried the log, so `Drop` does not print it again.
    log_shown: AtomicBool,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Camera {
    // By hand, so the password in `args` and `credentials` never reaches a test log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera")
            .field("port", &self.port)
            .field("streams", &self.streams)
            .field("auth", &self.credentials.is_some())
            .field("pid", &self.pid())
            .field("log_path", &self.log_path)
            .finish()
    }
}

enum Spawn {
    AddrInUse,
}

impl Camera {
    pub fn builder() -> CameraBuilder {
        CameraBuilder::default()
    }

    /// One H.264 stream called `name`, no auth, no audio.
    pub fn h264(name: &str) -> Camera {
        Camera::builder().stream(name, Codec::H264).start()
    }

    /// One H.265 stream called `name`, no auth, no audio.
    pub fn h265(name: &str) -> Camera {
        Camera::builder().stream(name, Codec::H265).start()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    /// `rtsp://127.0.0.1:PORT/{name}`, without credentials (give those separately, as a
    /// camera config would).
    pub fn url(&self, name: &str) -> String {
        assert!(
            self.streams.iter().any(|s| s.name == name),
            "camera has no stream {name:?} (has {:?})",
            self.streams.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        format!("rtsp://{}:{}/{name}", self.bind, self.port)
    }

    /// `rtsp://USER:PASSWORD@127.0.0.1:PORT/{name}` (percent-encoded) for ffmpeg and ffprobe;
    /// the plain URL when the camera has no auth.
    pub fn url_with_credentials(&self, name: &str) -> String {
        let url = self.url(name);
        match &self.credentials {
            None => url,
            Some((user, password)) => url.replacen(
                "rtsp://",
                &format!("rtsp://{}:{}@", pct(user), pct(password)),
                1,
            ),
        }
    }

    /// `(user, password)` when the camera demands auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The camera's stderr, appended to across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stop like a camera being switched off politely: SIGTERM (clients are disconnected),
    /// then SIGKILL after 5 s. Does nothing if already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let deadline = Instant::now() + STOP_GRACE;
        while sent && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stop, then start again with the same streams on the same port (clients reconnect to
    /// the same URL). Retries for up to 10 s while the port is still taken.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(Spawn::AddrInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200))
                }
                Err(Spawn::AddrInUse) => panic!(
                    "camera restart: 127.0.0.1:{} still in use after {REBIND_TIMEOUT:?}\n{}",
                    self.port,
                    self.log_tail()
                ),
            }
        }
    }

    /// Start the script on `self.port` and wait for `READY`. Panics on anything but a port
    /// that is taken.
    fn spawn(&mut self) -> Result<(), Spawn> {
        assert!(self.child.is_none(), "camera already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the camera log");
        let _ = writeln!(log, "--- start on port {} ---", self.port);
        let mut child = match Command::new(PYTHON)
            .arg(SCRIPT)
            .args(&self.args)
            .args(["--port", &self.port.to_string(), "--exit-with-parent"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "GStreamer RTSP server missing: {PYTHON} not found ({e}); apt-get install python3 \
                 and: {APT_HINT}"
            ),
            Err(e) => panic!("cannot run {PYTHON} {SCRIPT}: {e}"),
        };

        // Read the READY line on a thread so the wait has a deadline; the thread then keeps
        // draining stdout until the camera exits. It is never joined: a helper the camera
        // spawned (gst-plugin-scanner) could hold the pipe open after the camera is killed.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("camera-stdout".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .expect("spawn the camera stdout thread");

        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "camera did not print READY within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_briefly(&mut child);
                return match status.and_then(|s| s.code()) {
                    Some(EXIT_BIND) => Err(Spawn::AddrInUse),
                    Some(EXIT_MISSING) => panic!(
                        "GStreamer RTSP server missing: {APT_HINT}\n{}",
                        self.log_tail()
                    ),
                    _ => panic!(
                        "camera exited before READY ({status:?})\n{}",
                        self.log_tail()
                    ),
                };
            }
        };
        let port = line
            .strip_prefix(&format!("READY rtsp://{}:", self.bind))
            .and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "camera printed {line:?} instead of READY rtsp://{}:PORT\n{}",
                self.bind,
                self.log_tail()
            );
        };
        assert!(
            self.port == 0 || self.port == port,
            "camera asked for port {} but listens on {port}",
            self.port
        );
        self.port = port;
        self.child = Some(child);
        Ok(())
    }

    /// The last lines of the camera log, for panic messages.
    pub fn log_tail(&self) -> String {
        self.log_shown.store(true, Ordering::Relaxed);
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- camera log {} (last {} lines) ---\n{tail}",
            self.log_path.display(),
            lines.len().min(40)
        )
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!("{}", self.log_tail());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The exit status of a child whose stdout just closed (it is exiting).
fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Percent-encode a URL userinfo part (RFC 3986 unreserved characters pass).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}
