//! Pairing end to end, box side: a fresh box with a GStreamer camera pairs with a claim code
//! through a real Mosquitto (pairing listener + mutual-TLS listener, per-box ACL) answered by
//! the real `porchlight-center serve`; then it streams, heartbeats and shares under its new
//! identity without a restart, keeps it across a restart, renews its certificate without
//! losing queued messages, and unpairs. Refusals come back in plain words.

use porchlight_testkit as support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::camera::{Camera, Codec, Stream};
use support::center::{center_bin, center_command, Running};
use support::mosquitto::{Broker, CityOptions};
use support::{camera_toml, Daemon, FAST_INGEST};

const ROOT: &str = "porchlight/v1";

fn center_dir(broker: &Broker) -> PathBuf {
    broker.city.as_ref().unwrap().dir.clone()
}

/// Issues claim codes with `porchlight-center codes issue`; returns them as printed.
fn issue_codes(broker: &Broker, count: u32, extra: &[&str]) -> Vec<String> {
    let out = Command::new(center_bin())
        .args(["codes", "issue", "--dir"])
        .arg(center_dir(broker))
        .args(["--count", &count.to_string()])
        .args(extra)
        .output()
        .expect("run porchlight-center codes issue");
    assert!(
        out.status.success(),
        "codes issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(codes.len(), count as usize, "{codes:?}");
    codes
}

/// `porchlight-center serve` running in the background, its log collected.
fn serve(broker: &Broker, extra: &[&str]) -> Running {
    let mut c = center_command(broker);
    c.arg("serve")
        .arg("--dir")
        .arg(center_dir(broker))
        .args(["--public-broker", &broker.url()])
        .args(extra);
    let mut s = Running::spawn(c);
    // "Serving …" is printed once its subscriptions are acknowledged.
    s.wait_stderr("Serving ", Duration::from_secs(20));
    s
}

/// `[pairing]` and `[uplink]` tunables for a box of this city.
fn box_config(broker: &Broker, extra_pairing: &str) -> String {
    format!(
        "[uplink]\nheartbeat_interval = \"1s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\ndrain_timeout = \"2s\"\n\
         [pairing]\nbroker = \"{}\"\nca_file = {:?}\ntimeout = \"15s\"\n{extra_pairing}\n",
        broker.pairing_url(),
        broker.ca_file(),
    )
}

/// POSTs `/api/v1/pair` through the CLI; returns (success, stdout+stderr).
fn pair(d: &Daemon, code: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["pair", "--code", code, "--json"];
    args.extend_from_slice(extra);
    let out = d.cli(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn identity_files(d: &Daemon) -> PathBuf {
    d.data_dir().join("identity/current")
}

#[test]
fn a_fresh_box_pairs_streams_heartbeats_and_shares_then_unpairs() {
    let camera = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .start();
    let broker = Broker::start_city(CityOptions::default());
    let _serve = serve(&broker, &[]);
    let code = issue_codes(&broker, 1, &["--label", "12 Elm St"]).remove(0);
    let statuses = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/+/status"), &[]);
    let heartbeats = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/+/heartbeat"), &[]);
    let audits = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/+/audit"), &[]);

    let mut d = Daemon::start(&format!(
        "{FAST_INGEST}{}{}",
        box_config(&broker, ""),
        camera_toml("front", &camera.url("s"), "")
    ));
    d.wait_camera("front", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    // Unpaired: works locally and says so.
    assert_eq!(d.get("/api/v1/pairing")["state"], "unpaired");
    assert_eq!(d.get("/api/v1/status")["paired"], false);
    let st = d.cli_ok(&["status"]);
    assert!(st.contains("not paired"), "{st}");

    let t0 = Instant::now();
    let (ok, out) = pair(&d, &code.to_lowercase(), &[]);
    assert!(ok, "pairing failed: {out}\n{}", d.logs());
    let answer: Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(answer["state"], "paired", "{answer}");
    let gw = answer["gateway_id"].as_str().unwrap().to_owned();
    assert!(gw.starts_with("gw-"), "{gw}");

    // The key stayed on the box, owner-only; the certificate is the city's, CN = gw.
    use std::os::unix::fs::PermissionsExt;
    let key = identity_files(&d).join("key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cert = identity_files(&d).join("cert.pem");
    assert_eq!(
        porchlight::protocol::tls::gateway_id(&cert).unwrap(),
        gw,
        "certificate CN"
    );

    // Online (retained) and heartbeating under the new identity, without a restart.
    statuses.wait(Duration::from_secs(20), "retained online status", |m| {
        m.iter().any(|m| {
            m.topic == format!("{ROOT}/gw/{gw}/status") && m.payload.contains("\"online\":true")
        })
    });
    let hb = heartbeats.wait(Duration::from_secs(20), "a heartbeat", |m| {
        m.iter()
            .any(|m| m.topic == format!("{ROOT}/gw/{gw}/heartbeat"))
    });
    let first_hb = t0.elapsed();
    let hb: Value = serde_json::from_str(
        &hb.iter()
            .find(|m| m.topic == format!("{ROOT}/gw/{gw}/heartbeat"))
            .unwrap()
            .payload,
    )
    .unwrap();
    let cam = &hb["cameras"][0];
    assert_eq!(cam["id"], "front");
    assert_eq!(cam["sharing"]["live"], "never", "deny by default: {hb}");
    // Nothing that names an address or a credential.
    let text = hb.to_string();
    assert!(
        !text.contains("rtsp://") && !text.contains("127.0.0.1"),
        "{text}"
    );
    eprintln!("pair → first heartbeat: {first_hb:?}");
    assert_eq!(d.get("/api/v1/status")["paired"], true);
    assert_eq!(d.get("/api/v1/uplink")["state"], "connected");

    // The pairing is audited and the entry reaches the center.
    let local = d.get("/api/v1/audit?kind=pairing");
    assert!(local.to_string().contains("\"paired\""), "{local}");
    audits.wait(Duration::from_secs(20), "the pairing audit entry", |m| {
        m.iter()
            .any(|m| m.topic == format!("{ROOT}/gw/{gw}/audit") && m.payload.contains("\"paired\""))
    });

    // Pairing again is refused while paired.
    let (ok, out) = pair(&d, &code, &[]);
    assert!(!ok && out.contains("already paired"), "{out}");

    // The identity survives a restart; the box comes back online as the same gateway.
    assert!(d.stop(), "clean stop:\n{}", d.logs());
    d.restart();
    assert_eq!(d.get("/api/v1/pairing")["gateway_id"], gw.as_str());
    wait_for("link up after restart", Duration::from_secs(20), || {
        (d.get("/api/v1/uplink")["state"] == "connected").then_some(())
    });

    // The box's own certificate cannot speak for another box (the broker's ACL).
    let other_box = format!("{ROOT}/gw/gw-someoneelse/status");
    let spy = broker.subscribe(
        Some(&broker.center),
        &format!("{ROOT}/gw/gw-someoneelse/#"),
        &[],
    );
    let own = support::pki::Identity {
        cert: cert.clone(),
        key: key.clone(),
    };
    let out = broker.publish(Some(&own), &other_box, "{\"online\":true}", true);
    assert!(
        out.status.success(),
        "the box's certificate should connect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        spy.messages().is_empty(),
        "a box published under another box's id: {:?}",
        spy.messages()
    );

    // Unpair: offline, the identity and its key are gone, the box keeps working locally.
    let out = d.cli(&["unpair"]);
    assert!(!out.status.success(), "unpair without --yes must refuse");
    d.cli_ok(&["unpair", "--yes"]);
    assert_eq!(d.get("/api/v1/pairing")["state"], "unpaired");
    assert!(!d.data_dir().join("identity").exists());
    statuses.wait(Duration::from_secs(20), "offline after unpairing", |m| {
        m.iter().any(|m| {
            m.topic == format!("{ROOT}/gw/{gw}/status") && m.payload.contains("\"online\":false")
        })
    });
    let local = d.get("/api/v1/audit?kind=pairing");
    assert!(local.to_string().contains("\"unpaired\""), "{local}");
    assert_eq!(d.camera("front")["state"], "streaming");
    // A used code cannot pair the box again.
    let (ok, out) = pair(&d, &code, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("already used"), "{out}");
}

#[test]
fn wrong_used_and_expired_codes_and_a_wrong_ca_are_refused_in_plain_words() {
    let broker = Broker::start_city(CityOptions::default());
    let codes = issue_codes(&broker, 1, &[]);
    let expiring = issue_codes(&broker, 1, &["--expires", "1s"]);
    let d = Daemon::start(&box_config(&broker, ""));
    let other = Daemon::start(&box_config(&broker, ""));

    // No center answering yet: a clear timeout (pairing.timeout), not a hang.
    let d_fast =
        Daemon::start(&box_config(&broker, "").replace("timeout = \"15s\"", "timeout = \"3s\""));
    let (ok, out) = pair(&d_fast, &codes[0], &[]);
    assert!(!ok && out.contains("no answer"), "{out}");
    assert_eq!(
        d_fast.get("/api/v1/pairing")["last_error"]["code"],
        "timeout"
    );
    drop(d_fast);

    let serve = serve(&broker, &[]);
    // A code the city never issued.
    let (ok, out) = pair(&d, "ZZZZ-ZZZZ-ZZZZ", &[]);
    assert!(
        !ok && out.contains("does not know this claim code"),
        "{out}"
    );
    // Not even a code.
    let (ok, out) = pair(&d, "hello", &[]);
    assert!(!ok && out.contains("12 characters"), "{out}");
    // An expired code.
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, out) = pair(&d, &expiring[0], &[]);
    assert!(!ok && out.contains("expired"), "{out}");
    assert_eq!(
        d.get("/api/v1/pairing")["last_error"]["code"],
        "code_expired"
    );
    // A pairing service signed by another CA than the one given: refused before anything is sent.
    let (ok, out) = pair(
        &d,
        &codes[0],
        &["--ca", broker.ca.pem_file.to_str().unwrap()],
    );
    assert!(!ok && out.contains("CA mismatch"), "{out}");
    // Nothing listening.
    let dead = format!("mqtts://127.0.0.1:{}", support::free_port());
    let (ok, out) = pair(&d, &codes[0], &["--broker", &dead]);
    assert!(!ok && out.contains("cannot reach"), "{out}");
    // The first box pairs with the code; a second box with the same code is refused.
    let (ok, out) = pair(&d, &codes[0], &[]);
    assert!(ok, "{out}\n{}", serve.output());
    let (ok, out) = pair(&other, &codes[0], &[]);
    assert!(!ok && out.contains("already used"), "{out}");
    assert_eq!(other.get("/api/v1/pairing")["state"], "unpaired");
    assert!(!other.data_dir().join("identity/current").exists());
}

#[test]
fn renewal_switches_certificates_without_losing_queued_messages() {
    let broker = Broker::start_city(CityOptions::default());
    // Certificates live 90 days and the box renews with 100 days left: at once.
    let _serve = serve(&broker, &["--lifetime", "90d"]);
    let code = issue_codes(&broker, 1, &[]).remove(0);
    let d = Daemon::start(&box_config(&broker, "renew_before = \"100d\""));
    let audits = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/+/audit"), &[]);
    let (ok, out) = pair(&d, &code, &[]);
    assert!(ok, "{out}");
    let first = d.get("/api/v1/pairing");
    let gw = first["gateway_id"].as_str().unwrap().to_owned();
    let cert_file = identity_files(&d).join("cert.pem");
    let cert_before = std::fs::read(&cert_file).unwrap();

    // Keep the outbox busy across the switch: every consent change is an audit entry sent
    // through it.
    // Keep the outbox busy across the switch: pause and resume are audit entries, each sent
    // to the center through it.
    let mut changes = 0;
    let renewed = wait_for("a renewed certificate", Duration::from_secs(40), || {
        for what in ["pause", "resume"] {
            d.cli_ok(&[what]);
            changes += 1;
        }
        let now = std::fs::read(&cert_file).ok()?;
        (now != cert_before).then_some(now)
    });
    for what in ["pause", "resume", "pause", "resume"] {
        d.cli_ok(&[what]);
        changes += 1;
    }
    assert_ne!(renewed, cert_before);
    let after = d.get("/api/v1/pairing");
    assert_eq!(
        after["gateway_id"],
        gw.as_str(),
        "same gateway after renewal"
    );
    assert!(after["issued_at"].as_i64() > first["issued_at"].as_i64());
    wait_for(
        "link up with the renewed certificate",
        Duration::from_secs(20),
        || (d.get("/api/v1/uplink")["state"] == "connected").then_some(()),
    );

    // Every audit entry the box made reached the center: contiguous seqs, none lost.
    let local = d.get("/api/v1/audit");
    let entries = local["entries"].as_array().cloned().unwrap_or_default();
    let last_seq = entries
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .expect("audit entries");
    let topic = format!("{ROOT}/gw/{gw}/audit");
    let got = audits.wait(Duration::from_secs(30), "every audit entry", |m| {
        let seqs: std::collections::BTreeSet<u64> = m
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        seqs.last() == Some(&last_seq)
    });
    let seqs: std::collections::BTreeSet<u64> = got
        .iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    let first_seq = *seqs.first().unwrap();
    for s in first_seq..=last_seq {
        assert!(
            seqs.contains(&s),
            "audit seq {s} lost across the renewal ({changes} changes)"
        );
    }
    assert!(
        got.iter().any(|m| m.payload.contains("\"renewed\"")),
        "the renewal is audited"
    );
}

/// Issue 13, property 1: whoever can publish on the box's `cert` topic (here the `center`
/// account, as a compromised broker could) answers a renewal with a certificate from its own
/// CA, that CA, and its own request key "signed" by it. The box refuses the answer, audits it,
/// keeps its identity byte for byte, and after a restart still verifies requests with the
/// city's key: one signed by the rogue key is rejected `bad_signature`.
#[test]
fn a_renewal_answer_with_a_rogue_ca_and_request_key_changes_nothing() {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use porchlight::protocol::pairing::{CsrMessage, PairResult};
    use porchlight::protocol::request::sign_request;

    let broker = Broker::start_city(CityOptions::default());
    let code = issue_codes(&broker, 1, &[]).remove(0);
    let mut d = Daemon::start(&box_config(&broker, ""));
    let gw = {
        let _serve = serve(&broker, &["--lifetime", "90d"]);
        let (ok, out) = pair(&d, &code, &[]);
        assert!(ok, "{out}");
        d.get("/api/v1/pairing")["gateway_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The genuine center is gone: only the rogue answers from here on.
    let files = identity_files(&d);
    let read = |name: &str| std::fs::read(files.join(name)).unwrap();
    let before: Vec<(String, Vec<u8>)> = ["ca.pem", "cert.pem", "request_key.pem", "key.pem"]
        .iter()
        .map(|n| (n.to_string(), read(n)))
        .collect();

    let csrs = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/+/csr"), &[]);
    let audits = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/{gw}/audit"), &[]);
    // Renew at once: certificates live 90 days, renew with 100 days left.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        cfg.replace("[pairing]\n", "[pairing]\nrenew_before = \"100d\"\n"),
    )
    .unwrap();
    assert!(d.stop(), "clean stop");
    d.restart();
    let csr_msg = csrs.wait(Duration::from_secs(30), "a renewal CSR", |m| !m.is_empty());
    let csr: CsrMessage = serde_json::from_str(&csr_msg[0].payload).expect("CSR message");

    // The rogue CA signs the box's own CSR (so the certificate carries the box's key).
    let rogue_key = rcgen::KeyPair::generate().unwrap();
    let mut rogue_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    rogue_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rogue_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rogue CA");
    let rogue_ca = rogue_params.self_signed(&rogue_key).unwrap();
    let issuer = rcgen::Issuer::new(rogue_params, &rogue_key);
    let cert = rcgen::CertificateSigningRequestParams::from_pem(&csr.csr)
        .unwrap()
        .signed_by(&issuer)
        .unwrap();
    let rogue_request = ed25519_dalek::SigningKey::from_bytes(&[66; 32]);
    let rogue_pub = rogue_request
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let sig = {
        use base64::Engine as _;
        use rcgen::SigningKey as _;
        let s = rogue_key
            .sign(&porchlight::protocol::pairing::request_key_statement(
                &rogue_pub,
            ))
            .unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let answer = PairResult {
        v: 1,
        ok: true,
        error: None,
        message: None,
        gateway_id: Some(gw.clone()),
        certificate: Some(cert.pem()),
        ca: Some(rogue_ca.pem()),
        request_key: Some(rogue_pub),
        request_key_sig: Some(sig),
        broker: None,
        topic_root: None,
        not_after: None,
    };
    let out = broker.publish(
        Some(&broker.center),
        &format!("{ROOT}/gw/{gw}/cert"),
        &serde_json::to_string(&answer).unwrap(),
        false,
    );
    assert!(out.status.success(), "{out:?}");

    // Refused and audited (the audit entry reaches the city too).
    let got = audits.wait(
        Duration::from_secs(30),
        "the refusal in the audit log",
        |m| m.iter().any(|m| m.payload.contains("renewal_refused")),
    );
    let refusal = got
        .iter()
        .find(|m| m.payload.contains("renewal_refused"))
        .unwrap();
    assert!(
        refusal.payload.contains("bad_answer"),
        "{}",
        refusal.payload
    );
    for (name, bytes) in &before {
        assert_eq!(&read(name), bytes, "{name} changed");
    }

    // After a restart (no renewal now), requests are checked with the city's key only.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, cfg.replace("renew_before = \"100d\"\n", "")).unwrap();
    assert!(d.stop(), "clean stop");
    d.restart();
    wait_for("the link up again", Duration::from_secs(20), || {
        (d.get("/api/v1/uplink")["state"] == "connected").then_some(())
    });
    let replies = broker.subscribe(Some(&broker.center), &format!("{ROOT}/gw/{gw}/reply"), &[]);
    let city_request = ed25519_dalek::SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(center_dir(&broker).join("request-key.pem")).unwrap(),
    )
    .expect("the city's request key");
    let now = jiff::Timestamp::now().as_second();
    let claims = |jti: &str| support::requests::live_claims(jti, &gw, "nocam", now);
    for (jti, key) in [("rogue-1", &rogue_request), ("city-1", &city_request)] {
        let out = broker.publish(
            Some(&broker.center),
            &format!("{ROOT}/gw/{gw}/request"),
            &sign_request(&claims(jti), key),
            false,
        );
        assert!(out.status.success(), "{out:?}");
    }
    let got = replies.wait(Duration::from_secs(30), "both replies", |m| m.len() >= 2);
    let reply = |jti: &str| -> Value {
        got.iter()
            .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
            .find(|v| v["request_id"] == jti)
            .unwrap_or_else(|| panic!("no reply to {jti}: {got:?}"))
    };
    assert_eq!(reply("rogue-1")["status"], "rejected");
    assert_eq!(reply("rogue-1")["reason"], "bad_signature");
    // The city's key still verifies: it gets past the signature to the camera check.
    assert_eq!(reply("city-1")["status"], "rejected");
    assert_eq!(reply("city-1")["reason"], "unknown_camera");
}
