//! The city uplink against a real Mosquitto (TLS with client certificates, per-gateway ACL):
//! status and last will, outages, restarts, bad certificates, oversized messages, and what the
//! center sees through a different MQTT client (mosquitto_sub).

use porchlight_testkit as support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use porchlight::protocol::messages::EventKind;
use porchlight::shutdown::{Shutdown, ShutdownTrigger};
use porchlight::uplink::outbox::Record;
use porchlight::uplink::{LinkState, NoHealth, Uplink, UplinkError, UplinkHandle, UplinkSettings};
use support::mosquitto::{Broker, Msg};
use support::pki::{Ca, Identity, Validity};
use support::{camera_toml, Daemon, FAST_INGEST};

/// A gateway run as a library: real uplink, real TLS, real sled outbox.
struct Gw {
    rt: tokio::runtime::Runtime,
    handle: UplinkHandle,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

fn settings(broker: &Broker, id: &Identity) -> UplinkSettings {
    let mut s = UplinkSettings::new(
        "127.0.0.1",
        broker.port,
        broker.ca.pem_file.clone(),
        id.cert.clone(),
        id.key.clone(),
    );
    s.heartbeat_interval = Duration::from_secs(1);
    s.keepalive = Duration::from_secs(5);
    s.backoff_initial = Duration::from_millis(200);
    s.backoff_max = Duration::from_secs(1);
    s.drain_timeout = Duration::from_secs(3);
    s
}

fn start_gw(s: UplinkSettings, db: &sled::Db) -> Gw {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (uplink, handle) = Uplink::open(s, db, Arc::new(NoHealth)).unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let task = rt.spawn(uplink.run(shutdown));
    Gw {
        rt,
        handle,
        trigger,
        task,
    }
}

impl Gw {
    fn wait_state(&self, state: LinkState, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.handle.status().state != state {
            assert!(
                Instant::now() < deadline,
                "link not {state:?}: {:#?}",
                self.handle.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn event(&self, n: u64) -> u64 {
        self.handle
            .event(EventKind::Test {
                name: "load".into(),
                n,
            })
            .unwrap()
    }

    /// Graceful stop: offline status, drain, disconnect.
    fn stop(self) {
        self.trigger.trigger();
        self.rt.block_on(self.task).unwrap();
    }
}

fn open_db(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .cache_capacity(8 << 20)
        .open()
        .unwrap()
}

/// Event seqs seen by the center, in arrival order.
fn event_seqs(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/event"))
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload)
                .unwrap_or_else(|e| panic!("event is not JSON ({e}): {}", m.payload));
            v["seq"].as_u64().expect("seq")
        })
        .collect()
}

/// First occurrences only.
fn dedup(seqs: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

#[test]
fn acl_isolates_gateways_and_a_client_without_certificate_is_refused() {
    let broker = Broker::start();
    let gw1 = broker.identity("gw-1");
    let gw2 = broker.identity("gw-2");
    // gw-2 may write its own status; gw-1 may neither read it nor overwrite it.
    let out = broker.publish(
        Some(&gw2),
        "porchlight/v1/gw/gw-2/status",
        "{\"online\":true}",
        true,
    );
    assert!(out.status.success(), "{out:?}");
    let spy = broker.sub_once(Some(&gw1), "porchlight/v1/gw/gw-2/#", 1, 2);
    assert!(
        String::from_utf8_lossy(&spy.stdout).trim().is_empty(),
        "gw-1 read gw-2's topic: {spy:?}"
    );
    let _ = broker.publish(
        Some(&gw1),
        "porchlight/v1/gw/gw-2/status",
        "{\"forged\":true}",
        true,
    );
    let center = broker.sub_once(Some(&broker.center), "porchlight/v1/gw/gw-2/status", 1, 5);
    let text = String::from_utf8_lossy(&center.stdout);
    assert!(
        text.contains("\"online\":true") && !text.contains("forged"),
        "{text}"
    );
    // The center reads but may not write.
    let _ = broker.publish(
        Some(&broker.center),
        "porchlight/v1/gw/gw-2/status",
        "{\"center\":1}",
        true,
    );
    let again = broker.sub_once(Some(&broker.center), "porchlight/v1/gw/gw-2/status", 1, 5);
    assert!(!String::from_utf8_lossy(&again.stdout).contains("center"));
    // No certificate: the TLS handshake fails, nothing is received.
    let anon = broker.sub_once(None, "porchlight/v1/#", 1, 3);
    assert!(
        !anon.status.success(),
        "anonymous client was accepted: {anon:?}"
    );
    assert!(String::from_utf8_lossy(&anon.stdout).trim().is_empty());
}

#[test]
fn daemon_status_heartbeat_events_and_last_will_on_kill_9() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let center = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/gw-1/#", &[]);
    let body = format!(
        "{FAST_INGEST}[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nheartbeat_interval = \"1s\"\nkeepalive = \"5s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\ndrain_timeout = \"2s\"\n{}",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        // A camera that never answers: its URL and address must not reach the center.
        camera_toml("porch", "rtsp://127.0.0.1:9/secret-path", "username = \"admin\"\npassword = \"hunter2\"")
    );
    let mut d = Daemon::start(&body);
    let msgs = center.wait(
        Duration::from_secs(15),
        "online status, heartbeat and started event",
        |m| {
            m.iter()
                .any(|m| m.topic.ends_with("/status") && m.payload.contains("\"online\":true"))
                && m.iter().any(|m| m.topic.ends_with("/heartbeat"))
                && m.iter().any(|m| m.topic.ends_with("/event"))
        },
    );
    for m in &msgs {
        let v: serde_json::Value = serde_json::from_str(&m.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", m.topic, m.payload));
        for bad in [
            "rtsp://",
            "127.0.0.1",
            "secret-path",
            "hunter2",
            "admin",
            "://",
        ] {
            assert!(
                !m.payload.contains(bad),
                "{} leaks {bad:?}: {}",
                m.topic,
                m.payload
            );
        }
        if m.topic.ends_with("/heartbeat") {
            for k in [
                "ts",
                "seq",
                "version",
                "uptime_s",
                "paused",
                "cameras",
                "storage",
                "outbox",
                "audit",
                "grants_active",
            ] {
                assert!(v.get(k).is_some(), "heartbeat lacks {k}: {v}");
            }
            let cam = &v["cameras"][0];
            assert_eq!(cam["id"], "porch");
            assert_eq!(
                cam["sharing"],
                serde_json::json!({"live":"never","clips":"never"})
            );
            // The audit anchor: the chain starts with its log_started entry.
            assert!(v["audit"]["seq"].as_u64() >= Some(1), "{v}");
            let hash = v["audit"]["hash"].as_str().unwrap_or_default();
            assert!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{v}"
            );
            assert_eq!(v["paused"], false);
            assert_eq!(v["grants_active"], 0);
        }
    }
    // The retained status is there for a subscriber that comes later.
    let late = broker.sub_once(Some(&broker.center), "porchlight/v1/gw/gw-1/status", 1, 5);
    let late = String::from_utf8_lossy(&late.stdout);
    assert!(
        late.starts_with("1 ") && late.contains("\"online\":true"),
        "{late}"
    );

    let text = d.cli_ok(&["uplink"]);
    assert!(
        text.contains("connected") && text.contains("gw-1"),
        "{text}"
    );
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("city link:  connected"), "{status}");
    let j = d.get("/api/v1/uplink");
    assert_eq!(j["state"], "connected");

    // kill -9: the broker publishes the retained last will.
    d.kill9();
    center.wait(Duration::from_secs(15), "last will", |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.payload == "{\"online\":false}")
    });
    let after = broker.sub_once(Some(&broker.center), "porchlight/v1/gw/gw-1/status", 1, 5);
    assert!(String::from_utf8_lossy(&after.stdout).contains("{\"online\":false}"));

    // Restart, then a graceful stop: offline status with ts, published by the box itself.
    d.restart();
    center.wait(Duration::from_secs(15), "online again", |m| {
        m.iter()
            .filter(|m| m.payload.contains("\"online\":true"))
            .count()
            >= 2
    });
    assert!(d.stop(), "daemon did not stop cleanly:\n{}", d.logs());
    let m = center.wait(Duration::from_secs(10), "graceful offline", |m| {
        m.iter()
            .any(|m| m.payload.contains("\"online\":false,\"ts\""))
    });
    let seqs = event_seqs(&m);
    assert_eq!(
        dedup(&seqs),
        vec![1, 2],
        "started events of both runs: {seqs:?}"
    );
}

#[test]
fn broker_outage_of_20s_loses_none_of_500_events_and_keeps_order() {
    let mut broker = Broker::start();
    let id = broker.identity("gw-1");
    let center = broker.subscribe(
        Some(&broker.center),
        "porchlight/v1/gw/gw-1/event",
        &["-c", "-i", "center-outage"],
    );
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let gw = start_gw(settings(&broker, &id), &db);
    gw.wait_state(LinkState::Connected, Duration::from_secs(10));
    for n in 0..100 {
        gw.event(n);
    }
    center.wait(Duration::from_secs(10), "first 100", |m| {
        dedup(&event_seqs(m)).len() >= 100
    });
    let down = Instant::now();
    broker.stop();
    for n in 100..500 {
        gw.event(n);
        std::thread::sleep(Duration::from_millis(30));
    }
    let st = gw.handle.status();
    assert!(st.outbox_messages >= 390, "{st:#?}");
    assert_ne!(st.state, LinkState::Connected);
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    broker.restart();
    let m = center.wait(Duration::from_secs(30), "all 500 events", |m| {
        dedup(&event_seqs(m)).len() >= 500
    });
    let seqs = dedup(&event_seqs(&m));
    assert_eq!(
        seqs,
        (1..=500).collect::<Vec<u64>>(),
        "order after dropping duplicates"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.handle.status().outbox_messages > 0 {
        assert!(
            Instant::now() < deadline,
            "outbox not drained: {:#?}",
            gw.handle.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gw.handle.status().last_puback_ms.is_some());
    gw.stop();
}

#[test]
fn queued_outbox_survives_a_crash_and_is_delivered_after_restart() {
    let mut broker = Broker::start();
    let id = broker.identity("gw-1");
    let center = broker.subscribe(
        Some(&broker.center),
        "porchlight/v1/gw/gw-1/event",
        &["-c", "-i", "center-crash"],
    );
    std::thread::sleep(Duration::from_millis(500));
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_db(dir.path());
        let gw = start_gw(settings(&broker, &id), &db);
        for n in 0..200 {
            gw.event(n);
        }
        assert_eq!(gw.handle.status().outbox_messages, 200);
        // A crash: no drain, no flush beyond what each queueing did.
        drop(gw.rt);
        drop(db);
    }
    broker.restart();
    let db = open_db(dir.path());
    let gw = start_gw(settings(&broker, &id), &db);
    assert_eq!(gw.handle.status().outbox_messages, 200, "outbox reopened");
    let seq = gw.event(200);
    assert_eq!(seq, 201, "event seq survives the restart");
    let m = center.wait(Duration::from_secs(20), "201 events", |m| {
        dedup(&event_seqs(m)).len() >= 201
    });
    assert_eq!(dedup(&event_seqs(&m)), (1..=201).collect::<Vec<u64>>());
    gw.stop();
}

#[test]
fn oversized_message_is_refused_locally_and_the_link_stays_up() {
    let broker = Broker::start();
    let id = broker.identity("gw-1");
    let center = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/gw-1/event", &[]);
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut s = settings(&broker, &id);
    s.max_packet_size = 8 * 1024;
    let gw = start_gw(s, &db);
    gw.wait_state(LinkState::Connected, Duration::from_secs(10));
    let topic = gw.handle.topics().event();
    let err = gw
        .handle
        .queue(Record::inline(topic.clone(), false, vec![b'x'; 9 * 1024]))
        .unwrap_err();
    assert!(matches!(err, UplinkError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("max_packet_size"), "{err}");
    let big_event = gw.handle.event(EventKind::Test {
        name: "y".repeat(10_000),
        n: 0,
    });
    assert!(matches!(big_event, Err(UplinkError::TooLarge { .. })));
    gw.event(1);
    center.wait(Duration::from_secs(10), "the small event", |m| {
        !event_seqs(m).is_empty()
    });
    let st = gw.handle.status();
    assert_eq!(
        (st.state, st.connects),
        (LinkState::Connected, 1),
        "{st:#?}"
    );
    // The small event's PUBACK may still be on its way when the center has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.handle.status().outbox_messages != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "outbox not empty: {:#?}",
            gw.handle.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.stop();
}

fn uplink_cli_error(broker: &Broker, ca: &Path, id: &Identity) -> (String, serde_json::Value) {
    let body = format!(
        "[uplink]\nbroker = \"{}\"\nca_file = {ca:?}\ncert_file = {:?}\nkey_file = {:?}\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n",
        broker.url(),
        id.cert,
        id.key
    );
    let d = Daemon::start(&body);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let j = d.get("/api/v1/uplink");
        if j["last_error"].is_string() {
            assert_ne!(j["state"], "connected", "{j}");
            assert_eq!(j["connects"], 0, "{j}");
            let text = d.cli_ok(&["uplink"]);
            eprintln!("porchlight uplink:\n{text}");
            return (text, j);
        }
        assert!(
            Instant::now() < deadline,
            "no error reported: {j}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_certificates_give_clear_errors_and_no_connection() {
    let broker = Broker::start();
    let other = Ca::new(&broker.path(), "elsewhere");
    let good = broker.identity("gw-1");

    let (text, j) = uplink_cli_error(&broker, &other.pem_file, &good);
    assert!(text.contains("CA mismatch"), "wrong CA: {text}");
    assert_eq!(j["last_error_kind"], "ca_mismatch");

    let expired = broker.ca.client(&broker.path(), "gw-1", Validity::Expired);
    let (text, j) = uplink_cli_error(&broker, &broker.ca.pem_file, &expired);
    assert!(text.contains("certificate expired"), "expired: {text}");
    assert_eq!(j["last_error_kind"], "certificate_expired");

    let foreign = other.client(&broker.path(), "gw-1", Validity::Current);
    let (text, j) = uplink_cli_error(&broker, &broker.ca.pem_file, &foreign);
    assert!(
        text.contains("refused our certificate") || text.contains("closed the connection"),
        "other CA: {text}"
    );
    assert!(
        j["last_error_kind"] == "certificate_refused" || j["last_error_kind"] == "connection_lost",
        "{j}"
    );
    // Nothing reached the broker's MQTT layer as gw-1.
    assert!(!broker.logs().contains("as gw-1"), "{}", broker.logs());

    // Plaintext is refused by the configuration check.
    let d = Daemon::start("");
    std::fs::write(
        &d.config,
        format!(
            "[uplink]\nbroker = \"mqtt://127.0.0.1:{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            broker.port, broker.ca.pem_file, good.cert, good.key
        ),
    )
    .unwrap();
    let out = d.cli(&["run", "--check"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never plaintext"),
        "{out:?}"
    );
}

#[test]
fn requests_are_durable_before_their_puback_and_live_goes_out_at_qos_0() {
    let broker = Broker::start();
    let id = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let gw = start_gw(settings(&broker, &id), &db);
    gw.wait_state(LinkState::Connected, Duration::from_secs(10));
    // Give the SUBACK a moment, then the center publishes two requests.
    std::thread::sleep(Duration::from_millis(300));
    for body in ["req-one", "req-two"] {
        let out = broker.publish(
            Some(&broker.center),
            "porchlight/v1/gw/gw-1/request",
            body,
            false,
        );
        assert!(out.status.success(), "{out:?}");
    }
    let inbox = gw.handle.inbox().clone();
    let mut reader = inbox.reader();
    let got: Vec<Vec<u8>> = gw.rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..2 {
            let (k, payload) = tokio::time::timeout(Duration::from_secs(10), reader.next())
                .await
                .expect("request delivered to the inbox");
            v.push(payload);
            if v.len() == 1 {
                inbox.done(k).unwrap();
            }
        }
        v
    });
    assert_eq!(got, [b"req-one".to_vec(), b"req-two".to_vec()]);
    // Another gateway's request topic is not ours: gw-2 cannot reach gw-1's inbox.
    let gw2 = broker.identity("gw-2");
    let _ = broker.publish(Some(&gw2), "porchlight/v1/gw/gw-1/request", "forged", false);

    // Live: QoS 0 on the live topic, received by the center as sent.
    let live_topic = gw.handle.topics().live("r1");
    assert_eq!(live_topic, "porchlight/v1/gw/gw-1/live/r1");
    let center = broker.subscribe(Some(&broker.center), &live_topic, &[]);
    std::thread::sleep(Duration::from_millis(500));
    gw.handle
        .publish_live(live_topic.clone(), b"PLM1-frame".to_vec())
        .unwrap();
    center.wait(Duration::from_secs(10), "the live message", |m| {
        m.iter().any(|m| m.payload.contains("PLM1-frame"))
    });
    let huge = gw.handle.publish_live(live_topic, vec![0u8; 2 << 20]);
    assert!(matches!(
        huge,
        Err(porchlight::uplink::LiveRefused::TooLarge { .. })
    ));
    gw.stop();

    // The unfinished request is still there after a restart; the done one is gone; nothing forged.
    let gw = start_gw(settings(&broker, &id), &db);
    let inbox = gw.handle.inbox().clone();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inbox.len(), 1, "only req-two is pending");
    let (_, payload) = gw.rt.block_on(async { inbox.reader().next().await });
    assert_eq!(payload, b"req-two");
    gw.stop();
}

#[test]
fn queued_messages_of_an_ended_grant_never_leave_the_box() {
    let broker = Broker::start();
    let id = broker.identity("gw-1");
    let center = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/gw-1/clip/+", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (uplink, handle) = Uplink::open(settings(&broker, &id), &db, Arc::new(NoHealth)).unwrap();
    // Queued before the link is up: two chunks of a grant that is revoked meanwhile, one of
    // a grant that stands, and one untied message.
    let topics = handle.topics().clone();
    for (grant, body) in [("revoked", "r-1"), ("standing", "s-1"), ("revoked", "r-2")] {
        handle
            .queue(
                Record::inline(topics.clip(grant), false, body.as_bytes().to_vec())
                    .for_grant(grant),
            )
            .unwrap();
    }
    handle
        .queue(Record::inline(
            topics.clip("untied"),
            false,
            b"u-1".to_vec(),
        ))
        .unwrap();
    handle.set_gate(Arc::new(|g: &str| g == "standing"));
    let (trigger, shutdown) = Shutdown::new();
    let task = rt.spawn(uplink.run(shutdown));
    let msgs = center.wait(
        Duration::from_secs(15),
        "the standing and untied messages",
        |m| m.iter().any(|m| m.payload == "s-1") && m.iter().any(|m| m.payload == "u-1"),
    );
    assert!(
        !msgs.iter().any(|m| m.payload.starts_with("r-")),
        "a chunk of a revoked grant was sent: {msgs:?}"
    );
    // The last PUBACK may still be on its way when the center has the message.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = handle.status();
        if st.outbox_messages == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped, not kept: {st:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    trigger.trigger();
    rt.block_on(task).unwrap();
}
