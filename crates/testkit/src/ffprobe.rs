//! ffprobe and ffmpeg as independent judges of the video Porchlight produces (and of the
//! camera rig itself): what a file contains ([`probe`]), whether it decodes without a single
//! error ([`decode_ok`]), and a reference recording of an RTSP URL ([`record`]).
//!
//! Uses std and `serde_json` only.

// Each integration test is its own crate and uses a different subset of this module.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What ffprobe sees in a media file: its first video stream and its first audio stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// ffprobe's codec name of the video stream: `h264` or `hevc`.
    pub codec_name: String,
    pub width: u32,
    pub height: u32,
    /// Video frames actually read (`-count_frames` → `nb_read_frames`), not a header field.
    pub nb_frames: u64,
    /// The container's duration (the video stream's when the container has none; 0.0 when
    /// neither is known).
    pub duration_s: f64,
    /// ffprobe's codec name of the first audio stream (`aac`), if any.
    pub audio_codec: Option<String>,
    /// ffprobe's `format_name`, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format_name: String,
}

/// Probe `path`; panics if ffprobe is missing, fails, or finds no video stream.
pub fn probe(path: impl AsRef<Path>) -> Probe {
    let path = path.as_ref();
    let json = probe_json(path);
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("ffprobe: no video stream in {}: {json:#}", path.display()));
    let audio = streams.iter().find(|s| s["codec_type"] == "audio");
    let num = |v: &serde_json::Value| -> Option<f64> {
        // ffprobe prints most numbers as JSON strings.
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    Probe {
        codec_name: video["codec_name"].as_str().unwrap_or_default().to_owned(),
        width: num(&video["width"]).unwrap_or(0.0) as u32,
        height: num(&video["height"]).unwrap_or(0.0) as u32,
        nb_frames: num(&video["nb_read_frames"]).unwrap_or(0.0) as u64,
        duration_s: num(&json["format"]["duration"])
            .or_else(|| num(&video["duration"]))
            .unwrap_or(0.0),
        audio_codec: audio.and_then(|a| a["codec_name"].as_str().map(str::to_owned)),
        format_name: json["format"]["format_name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// ffprobe's full JSON for `path` (`-count_frames -show_streams -show_format`), for checks
/// [`Probe`] does not cover.
pub fn probe_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    let out = run(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-show_format",
            ])
            .args(["-of", "json"])
            .arg(path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ffprobe {} failed ({}): {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ffprobe {}: output is not JSON ({e}): {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Assert that ffmpeg decodes every frame of `path` with exit status 0 and not one line on
/// stderr (`-v error`: any message is an error).
pub fn decode_ok(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let out = run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"]),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg could not decode {} cleanly ({}):\n{stderr}",
        path.display(),
        out.status
    );
}

/// Record `seconds` of `url` over RTSP/TCP into `out` with `ffmpeg -c copy` (what a person
/// would do to check a camera). Returns ffmpeg's output whatever its status, so a test can
/// also assert failures (a wrong password gives "401 Unauthorized" on stderr). Panics only
/// if ffmpeg is missing or hangs for `seconds + 30` s.
pub fn record(url: &str, seconds: u32, out: impl AsRef<Path>) -> Output {
    run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-y", "-v", "error", "-rtsp_transport", "tcp"])
            // Socket I/O timeout in microseconds, so a silent camera fails instead of hanging.
            .args([
                "-timeout",
                "10000000",
                "-i",
                url,
                "-t",
                &seconds.to_string(),
            ])
            .args(["-c", "copy"])
            .arg(out.as_ref()),
        Duration::from_secs(u64::from(seconds) + 30),
    )
}

/// Run `cmd` with captured output; kill it after `timeout`. Panics if it cannot start.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} not found ({e}): apt-get install ffmpeg (or run .ci/run)")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} did not finish within {timeout:?}: {:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}
