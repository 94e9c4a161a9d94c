//! Security properties of the box that are not about the web UI (issue 13), each against the
//! real daemon: the CLI talks only to the daemon (no proxy from the environment), the request
//! topic cannot fill the disk, credentials never hide in a URL's query string, the control API
//! stays on loopback, and the data directory is private whoever created it.

use porchlight_testkit as support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::Daemon;

/// A listener that counts the bytes anyone sends it (the "proxy").
fn byte_counter() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    l.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    seen.fetch_add(k, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, n)
}

#[test]
fn the_cli_ignores_proxies_from_the_environment() {
    let d = Daemon::start("");
    let (proxy, seen) = byte_counter();
    let token = std::fs::read_to_string(d.data_dir().join("api.token")).unwrap();
    for args in [
        &["status"][..],
        &["uplink"],
        &["requests"],
        &["audit", "list"],
    ] {
        let out = Command::new(support::bin())
            .arg("--config")
            .arg(&d.config)
            .args(args)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("HTTPS_PROXY", &proxy)
            .env("https_proxy", &proxy)
            .env("ALL_PROXY", &proxy)
            .env("all_proxy", &proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "porchlight {args:?} with a proxy set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the proxy received bytes (the API token is {} bytes long)",
        token.len()
    );
}
