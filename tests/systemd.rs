//! The daemon under systemd's `Type=notify`: READY once it serves, WATCHDOG pings, STOPPING at
//! SIGTERM, exit 0.

use porchlight_testkit as support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn ready_watchdog_and_stopping_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = support::free_port();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[discovery]\nenabled = false\n[web]\nenabled = false\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(support::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    // The API answers once READY was sent.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("API listening at READY");
    assert_eq!(recv(), "WATCHDOG=1");
    assert_eq!(recv(), "WATCHDOG=1");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut saw_stopping = false;
    for _ in 0..10 {
        if recv() == "STOPPING=1" {
            saw_stopping = true;
            break;
        }
    }
    assert!(saw_stopping);
    assert!(child.wait().unwrap().success());
}
