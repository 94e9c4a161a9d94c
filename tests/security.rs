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

/// Bytes in the files under `dir` (what the flood could have added).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Issue 13, property 5: 500 garbage and 500 oversized publishes on the box's request topic
/// grow its data directory by less than 1 MiB, write no audit entry each (one summary per
/// period instead, with the reasons counted), get a bounded number of replies, and leave a
/// chain that verifies. A genuine request right after still gets its own entries.
#[test]
fn a_flood_of_the_request_topic_cannot_fill_the_disk() {
    use porchlight::protocol::request::sign_request;
    use porchlight_center::connection::Connection;
    use porchlight_center::settings::Settings;
    use support::mosquitto::Broker;

    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let (key, pub_pem) = support::requests::request_key(&broker.path(), "request-key.pub.pem", 7);
    let d = Daemon::start(&format!(
        "[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
         center_request_key_file = {:?}\nheartbeat_interval = \"1s\"\n\
         [sharing]\nrejected_summary = \"2s\"\n",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        pub_pem,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.get("/api/v1/uplink")["state"] != "connected" {
        assert!(std::time::Instant::now() < deadline, "{}", d.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let replies = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/gw-1/reply", &[]);
    std::thread::sleep(Duration::from_secs(1));
    let before = dir_bytes(&d.data_dir());
    let entries_before = d.get("/api/v1/audit")["entries"]
        .as_array()
        .map_or(0, |a| a.len());

    let settings = Settings {
        host: "127.0.0.1".into(),
        port: broker.port,
        ca: broker.ca.pem_file.clone(),
        cert: broker.center.cert.clone(),
        key: broker.center.key.clone(),
        root: "porchlight/v1".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = Connection::open(&settings).await.expect("center connects");
        let topic = "porchlight/v1/gw/gw-1/request";
        for i in 0..500 {
            conn.publish(topic, format!("junk.{i}.not-a-jws").into_bytes())
                .await
                .unwrap();
        }
        for i in 0..500u32 {
            let mut big = vec![b'A'; 64 * 1024];
            big[..4].copy_from_slice(&i.to_be_bytes());
            conn.publish(topic, big).await.unwrap();
        }
        // A genuine request after the flood.
        let now = jiff::Timestamp::now().as_second();
        let claims = support::requests::live_claims("genuine-1", "gw-1", "nocam", now);
        conn.publish(topic, sign_request(&claims, &key).into_bytes())
            .await
            .unwrap();
        conn.close().await;
    });

    // The summaries account for every one of the 1000.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (summaries, audit) = loop {
        let audit = d.get("/api/v1/audit?limit=1000");
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        let summaries: Vec<serde_json::Value> = entries
            .iter()
            .filter(|e| e["detail"]["unverified"] == true)
            .cloned()
            .collect();
        let counted: u64 = summaries
            .iter()
            .filter_map(|e| e["detail"]["count"].as_u64())
            .sum();
        if counted >= 1000 {
            break (summaries, entries);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "summaries count {counted} of 1000: {summaries:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reasons = |r: &str| -> u64 {
        summaries
            .iter()
            .filter_map(|e| e["detail"]["reasons"][r].as_u64())
            .sum()
    };
    assert_eq!(reasons("too_large"), 500, "{summaries:?}");
    let malformed: u64 = summaries
        .iter()
        .filter_map(|e| e["detail"]["reasons"].as_object())
        .flat_map(|r| r.iter())
        .filter(|(k, _)| k.starts_with("malformed"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(malformed, 500, "{summaries:?}");
    // Per message: nothing. The whole flood is a handful of summary entries.
    let added = audit.len() - entries_before;
    assert!(added < 40, "{added} audit entries for the flood");
    assert!(
        audit
            .iter()
            .any(|e| e["request_id"] == "genuine-1" && e["kind"] == "request_received"),
        "the genuine request is audited on its own"
    );
    let grown = dir_bytes(&d.data_dir()).saturating_sub(before);
    assert!(grown < 1 << 20, "the data directory grew by {grown} bytes");
    assert!(d.cli_ok(&["audit", "verify"]).contains("audit chain OK"));
    // Replies to unverified requests are bounded by the budget (10 a period).
    let got = replies.wait(Duration::from_secs(10), "the genuine reply", |m| {
        m.iter().any(|m| m.payload.contains("genuine-1"))
    });
    let rejected_unverified = got
        .iter()
        .filter(|m| m.payload.contains("malformed"))
        .count();
    assert!(
        (1..=100).contains(&rejected_unverified),
        "{rejected_unverified} replies to junk"
    );
}

/// Low findings of issue 13, against the real daemon: a data directory someone else created
/// wide open is made private with everything in it, the control API refuses to leave
/// loopback, and a camera URL with a password in its query string is refused (and the password
/// is never echoed or logged). (The export audit is checked in `tests/ingest_export.rs`.)
#[test]
fn data_dir_is_private_api_stays_on_loopback_and_urls_hold_no_credentials() {
    use std::os::unix::fs::PermissionsExt;

    // A control API beyond loopback: refused at start, in words.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remote.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"0.0.0.0:{}\"\n[web]\nenabled = false\n[discovery]\nenabled = false\n",
            dir.path().join("data").display().to_string(),
            support::free_port()
        ),
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a loopback address"), "{err}");

    // A data directory created 0755 with a world-readable file in it, as a package or a
    // manual install might leave it.
    let mut d = Daemon::start("");
    assert!(d.stop());
    let data = d.data_dir();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stray = data.join("index").join("left-over");
    std::fs::write(&stray, b"x").unwrap();
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&stray) & 0o077, 0, "{:o}", mode(&stray));
    for e in std::fs::read_dir(data.join("index")).unwrap().flatten() {
        let m = mode(&e.path());
        assert_eq!(m & 0o077, 0, "{} is {m:o}", e.path().display());
    }

    // Credentials in a manual camera URL's query string: refused, never echoed or logged.
    let out = d.cli(&[
        "cameras",
        "add",
        "--url",
        "rtsp://127.0.0.1:1/stream?user=admin&password=hunter2",
        "--name",
        "Garage",
    ]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("query string"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
    assert!(
        !d.logs().contains("hunter2"),
        "the password reached the log"
    );
    assert!(!d.get("/api/v1/cameras").to_string().contains("hunter2"));
}
