//! `porchlight-center` run from the built binary: a command connected as a broker's `center`
//! identity ([`center_command`]) and a running command with its output collected on threads
//! ([`Running`]).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mosquitto::Broker;

/// Path of the built `porchlight-center` binary.
pub fn center_bin() -> PathBuf {
    super::built_bin("porchlight-center")
}

/// `porchlight-center` connected as the `center` identity of `broker` (its mutual-TLS
/// listener, for [`Broker::start`] and [`Broker::start_city`] alike), logging at `info`
/// (`.env("RUST_LOG", …)` again to change that).
pub fn center_command(broker: &Broker) -> Command {
    let mut c = Command::new(center_bin());
    c.arg("--broker")
        .arg(broker.url())
        .arg("--ca")
        .arg(broker.ca_file())
        .arg("--cert")
        .arg(&broker.center.cert)
        .arg("--key")
        .arg(&broker.center.key)
        .env("RUST_LOG", "info");
    c
}

/// A running center command with its output collected on threads: stdout and stderr apart,
/// and both together in the order the lines arrived. Killed and reaped on drop (printing its
/// output if the test is panicking).
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    output: Arc<Mutex<String>>,
}

/// Appends every line of `r` to `own` and to `both`, on a thread.
fn collect(r: impl Read + Send + 'static, both: &Arc<Mutex<String>>) -> Arc<Mutex<String>> {
    let own = Arc::new(Mutex::new(String::new()));
    let (o, b) = (own.clone(), both.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            for buf in [&o, &b] {
                let mut buf = buf.lock().unwrap();
                buf.push_str(&line);
                buf.push('\n');
            }
        }
    });
    own
}

impl Running {
    /// Starts `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn porchlight-center");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = collect(child.stdout.take().unwrap(), &output);
        let stderr = collect(child.stderr.take().unwrap(), &output);
        Running {
            child,
            stdout,
            stderr,
            output,
        }
    }

    /// Waits until stderr contains `what` (the commands print "Serving …", "Waiting on …",
    /// "Watching …" once their subscriptions are acknowledged); panics with stderr if the
    /// command exits first or `timeout` passes.
    pub fn wait_stderr(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr.lock().unwrap().contains(what) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("exited early ({st}): {}", self.stderr.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} on stderr in {timeout:?}: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stdout and stderr so far, lines in the order they arrived.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the exit, however long it takes.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the exit (killing it and panicking with its output after
    /// that); returns (status, stdout, stderr).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + timeout;
        let st = loop {
            if let Some(st) = self.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "porchlight-center did not finish in {timeout:?}\nstdout: {}\nstderr: {}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        (st, self.stdout(), self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- center stdout ---\n{}\n--- center stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}
