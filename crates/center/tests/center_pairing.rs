//! The center side of pairing against a real Mosquitto 2.0 with both city listeners
//! (`Broker::start_city`: mutual TLS + the pairing listener, the shipped
//! `config/mosquitto/acl` and `pairing.passwd`): `porchlight-center serve` answering CSRs
//! sent by a test client that speaks the protocol (rcgen CSR, rumqttc over rustls with the
//! bootstrap account and client id = the claim code), the certificates it issues connecting
//! on the mutual-TLS listener, every refusal, the bootstrap account's confinement, renewal,
//! `fleet` (last will, radius), `request --near`, two `serve --shared` workers over one
//! registry, and `revoke-box` with the broker's `crlfile`.
//!
//! The box side end to end (`porchlight pair` → streaming) lives with the box's tests.

use porchlight_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use porchlight_protocol::pairing::{
    normalize_claim, CsrMessage, PairErrorCode, PairResult, BOOTSTRAP_PASSWORD, BOOTSTRAP_USERNAME,
};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::center::{center_bin, center_command, Running};
use support::mosquitto::{Broker, CityOptions};
use support::pki::Identity;

const ROOT: &str = "porchlight/v1";

fn center_dir(b: &Broker) -> PathBuf {
    b.city.as_ref().unwrap().dir.clone()
}

/// `porchlight-center` as the `center` identity on the mutual-TLS listener.
fn center(b: &Broker) -> Command {
    let mut c = center_command(b);
    c.env("PORCHLIGHT_CENTER_DIR", center_dir(b));
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().expect("run porchlight-center");
    assert!(
        out.status.success(),
        "{c:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issues one claim code; returns it normalized.
fn issue_code(b: &Broker, extra: &[&str]) -> String {
    let mut c = Command::new(center_bin());
    c.args(["codes", "issue"]).args(extra);
    c.env("PORCHLIGHT_CENTER_DIR", center_dir(b));
    let out = run_ok(c);
    let line = out.lines().next().expect("a code");
    assert_eq!(line.len(), 14, "printed as XXXX-XXXX-XXXX: {line}");
    normalize_claim(line).unwrap()
}

fn serve(b: &Broker, extra: &[&str]) -> Running {
    let mut c = center(b);
    c.arg("serve")
        .args(["--public-broker", &b.url(), "--lifetime", "90d"])
        .args(extra);
    let mut r = Running::spawn(c);
    r.wait_stderr("Serving ", Duration::from_secs(20));
    r
}

/// A test MQTT client over rustls (ring): rumqttc's blocking client, publishes collected on
/// a channel.
struct Mqtt {
    client: Client,
    rx: mpsc::Receiver<Result<(String, Vec<u8>), String>>,
}

fn tls(ca: &Path, id: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match id {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            b.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
    })
}

impl Mqtt {
    /// Connects; `Err` with the first connection error (TLS refusal, CONNACK refusal).
    fn connect(
        port: u16,
        ca: &Path,
        id: Option<(&Path, &Path)>,
        client_id: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<Mqtt, String> {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls(
                ca, id,
            ))));
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        Mqtt::connect_with(o).map(|(m, _)| m)
    }

    /// Connects with `o`; the flag, once set, makes the client go silent (it stops reading
    /// and sending, pings included, with the connection left open: a box losing power).
    fn connect_with(o: MqttOptions) -> Result<(Mqtt, Arc<AtomicBool>), String> {
        let (client, mut conn) = Client::new(o, 16);
        let (tx, rx) = mpsc::channel();
        let (ctx, crx) = mpsc::channel();
        let freeze = Arc::new(AtomicBool::new(false));
        let frozen = freeze.clone();
        std::thread::spawn(move || {
            let mut connected = false;
            for ev in conn.iter() {
                while frozen.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !connected => {
                        connected = true;
                        let _ = ctx.send(Ok(()));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(Ok((p.topic.clone(), p.payload.to_vec()))).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            let _ = tx.send(Err(e.to_string()));
                        } else {
                            let _ = ctx.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        match crx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(())) => Ok((Mqtt { client, rx }, freeze)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no CONNACK in 15 s".into()),
        }
    }

    /// The bootstrap client of the pairing listener for `code`.
    fn bootstrap(b: &Broker, code: &str) -> Mqtt {
        Mqtt::connect(
            b.pairing_port(),
            &b.ca_file(),
            None,
            code,
            Some((BOOTSTRAP_USERNAME, BOOTSTRAP_PASSWORD)),
        )
        .expect("bootstrap connect on the pairing listener")
    }

    fn subscribe(&self, topic: &str) {
        self.client.subscribe(topic, QoS::AtLeastOnce).unwrap();
        // rumqttc's blocking client has no SUBACK wait: give the broker a moment.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    /// The next message on `topic` within `timeout`.
    fn next_on(&self, topic: &str, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(Ok((t, p))) if t == topic => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("connection lost: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// Everything that arrives within `d`.
    fn drain(&self, d: Duration) -> Vec<(String, Vec<u8>)> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(Ok(m)) => out.push(m),
                Ok(Err(e)) => panic!("connection lost: {e}"),
                Err(_) => break,
            }
        }
        out
    }
}

/// A box's key and CSR (rcgen, P-256), as the box makes them.
struct BoxKey {
    key: rcgen::KeyPair,
}

impl BoxKey {
    fn new() -> BoxKey {
        BoxKey {
            key: rcgen::KeyPair::generate().unwrap(),
        }
    }

    fn csr(&self, cn: &str) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_owned());
        let pem = p.serialize_request(&self.key).unwrap().pem().unwrap();
        serde_json::to_vec(&CsrMessage {
            v: 1,
            csr: pem,
            version: "test".into(),
            ts: 0,
        })
        .unwrap()
    }

    /// Writes the certificate and key as files for mosquitto_pub / rustls.
    fn identity(&self, dir: &Path, name: &str, cert_pem: &str) -> Identity {
        let id = Identity {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&id.cert, cert_pem).unwrap();
        std::fs::write(&id.key, self.key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&id.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        id
    }
}

/// Speaks the enrollment protocol for `code` with `key`; returns the center's answer.
fn enroll(b: &Broker, code: &str, key: &BoxKey) -> PairResult {
    let m = Mqtt::bootstrap(b, code);
    let result = format!("{ROOT}/pair/{code}/result");
    m.subscribe(&result);
    m.publish(&format!("{ROOT}/pair/{code}/csr"), key.csr("ignored"));
    let p = m
        .next_on(&result, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no answer on {result}"));
    serde_json::from_slice(&p).unwrap()
}

/// `mosquitto_pub` as `id` on the mutual-TLS listener.
fn mtls_pub(b: &Broker, id: &Identity, topic: &str, payload: &str, retain: bool) -> Output {
    b.publish(Some(id), topic, payload, retain)
}

fn cert_cn_and_issuer_ok(cert_pem: &str, ca_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("the certificate chains to the city CA");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth, "clientAuth only");
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((89..=91).contains(&days), "about 90 days: {days}");
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    cn
}

fn audit(b: &Broker) -> Vec<serde_json::Value> {
    std::fs::read_to_string(center_dir(b).join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn enrollment_issues_a_certificate_that_works_and_refuses_what_it_must() {
    let b = Broker::start_city(CityOptions::default());
    let _serve = serve(&b, &[]);
    let code = issue_code(&b, &["--label", "Elm St 4", "--location", "48.1,11.5"]);

    // A fresh box: a certificate for a new gateway id, chaining to the CA it is given.
    let k1 = BoxKey::new();
    let r = enroll(&b, &code, &k1);
    assert!(r.ok, "{r:?}");
    let gw = r.gateway_id.clone().unwrap();
    assert!(gw.starts_with("gw-"), "{gw}");
    let ca_pem = std::fs::read_to_string(b.ca_file()).unwrap();
    assert_eq!(r.ca.as_deref(), Some(ca_pem.as_str()));
    assert_eq!(
        cert_cn_and_issuer_ok(r.certificate.as_deref().unwrap(), &ca_pem),
        gw
    );
    assert_eq!(r.broker.as_deref(), Some(b.url().as_str()));
    assert_eq!(r.topic_root.as_deref(), Some(ROOT));
    let pubkey = std::fs::read_to_string(center_dir(&b).join("request-key.pub.pem")).unwrap();
    assert_eq!(r.request_key.as_deref(), Some(pubkey.as_str()));
    assert!(r.not_after.unwrap() > jiff::Timestamp::now().as_millisecond() + 89 * 86_400_000);

    // That certificate connects on the mutual-TLS listener and owns its subtree: the center
    // sees what it publishes there.
    let id = k1.identity(&b.path(), "box1", r.certificate.as_deref().unwrap());
    let watch = b.subscribe(Some(&b.center), &format!("{ROOT}/gw/+/status"), &[]);
    std::thread::sleep(Duration::from_millis(500));
    let out = mtls_pub(
        &b,
        &id,
        &format!("{ROOT}/gw/{gw}/status"),
        r#"{"online":true}"#,
        true,
    );
    assert!(out.status.success(), "{out:?}");
    watch.wait(Duration::from_secs(10), "the new box's status", |m| {
        m.iter()
            .any(|m| m.topic == format!("{ROOT}/gw/{gw}/status"))
    });

    // The same key retrying gets the same certificate; another key gets code_used.
    let again = enroll(&b, &code, &k1);
    assert_eq!(again, r);
    let other = enroll(&b, &code, &BoxKey::new());
    assert_eq!(other.error, Some(PairErrorCode::CodeUsed), "{other:?}");
    assert!(other.certificate.is_none());

    // A wrong code; an expired code; a CSR that is not one.
    let wrong = enroll(&b, "0000000000ZZ", &BoxKey::new());
    assert_eq!(wrong.error, Some(PairErrorCode::CodeUnknown), "{wrong:?}");
    let short = issue_code(&b, &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1200));
    let expired = enroll(&b, &short, &BoxKey::new());
    assert_eq!(
        expired.error,
        Some(PairErrorCode::CodeExpired),
        "{expired:?}"
    );
    let code3 = issue_code(&b, &[]);
    let m = Mqtt::bootstrap(&b, &code3);
    let result = format!("{ROOT}/pair/{code3}/result");
    m.subscribe(&result);
    m.publish(
        &format!("{ROOT}/pair/{code3}/csr"),
        b"{\"v\":1,\"csr\":\"junk\",\"version\":\"t\",\"ts\":0}".to_vec(),
    );
    let bad: PairResult =
        serde_json::from_slice(&m.next_on(&result, Duration::from_secs(20)).unwrap()).unwrap();
    assert_eq!(bad.error, Some(PairErrorCode::BadCsr), "{bad:?}");
    // A bad CSR does not burn the code.
    let ok3 = enroll(&b, &code3, &BoxKey::new());
    assert!(ok3.ok, "{ok3:?}");

    // The registry has the two boxes with their label and location; the audit log has every
    // decision and no key material.
    let reg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(center_dir(&b).join("registry.json")).unwrap(),
    )
    .unwrap();
    let boxes = reg["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 2);
    assert_eq!(boxes[0]["gateway_id"], gw.as_str());
    assert_eq!(boxes[0]["label"], "Elm St 4");
    assert_eq!(boxes[0]["location"]["lat"], 48.1);
    let events: Vec<String> = audit(&b)
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    for e in [
        "codes_issued",
        "enrolled",
        "enroll_resent",
        "enroll_refused",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
    let text = std::fs::read_to_string(center_dir(&b).join("audit.jsonl")).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // `codes list` shows states.
    let mut c = Command::new(center_bin());
    c.args(["codes", "list", "--json"])
        .env("PORCHLIGHT_CENTER_DIR", center_dir(&b));
    let list: serde_json::Value = serde_json::from_str(&run_ok(c)).unwrap();
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["used", "expired", "used"]);
}

#[test]
fn the_bootstrap_account_and_strangers_are_confined_by_the_broker() {
    let b = Broker::start_city(CityOptions::default());
    let _serve = serve(&b, &[]);
    let (code_a, code_b) = (issue_code(&b, &[]), issue_code(&b, &[]));
    // A real box, paired through serve.
    let kb = BoxKey::new();
    let rb = enroll(&b, &code_b, &kb);
    assert!(rb.ok);
    let gw = rb.gateway_id.clone().unwrap();

    // Client A (bootstrap, client id = code A) listens on everything it can name.
    let a = Mqtt::bootstrap(&b, &code_a);
    for t in [
        format!("{ROOT}/pair/{code_b}/result"),
        format!("{ROOT}/pair/+/result"),
        format!("{ROOT}/#"),
    ] {
        a.subscribe(&t);
    }
    let center_sub = b.subscribe(Some(&b.center), &format!("{ROOT}/gw/#"), &[]);
    let box_sub = b.subscribe(
        Some(&kb.identity(&b.path(), "boxb", rb.certificate.as_deref().unwrap())),
        &format!("{ROOT}/gw/{gw}/#"),
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    // B retries (same key): its result goes out again; A must not receive it.
    assert!(enroll(&b, &code_b, &kb).ok);
    // A publishes where it must not: a box's subtree, its own "user" subtree, B's CSR topic,
    // B's request topic.
    for t in [
        format!("{ROOT}/gw/{gw}/status"),
        format!("{ROOT}/gw/{gw}/request"),
        format!("{ROOT}/gw/porchlight-pair/status"),
        format!("{ROOT}/gw/{code_a}/status"),
        format!("{ROOT}/pair/{code_b}/csr"),
        format!("{ROOT}/pair/{code_b}/result"),
    ] {
        a.publish(&t, b"{\"online\":false,\"forged\":true}".to_vec());
    }
    let got = a.drain(Duration::from_secs(2));
    assert!(got.is_empty(), "the bootstrap client read: {got:?}");
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<_> = center_sub
        .messages()
        .into_iter()
        .chain(box_sub.messages())
        .filter(|m| m.payload.contains("forged"))
        .collect();
    assert!(seen.is_empty(), "forged messages got through: {seen:?}");
    // Only B's two enrollment answers happened: the CSR A sent for B was dropped.
    let enrolls = audit(&b)
        .iter()
        .filter(|l| l["event"].as_str().unwrap().starts_with("enroll"))
        .count();
    assert_eq!(enrolls, 2, "{:?}", audit(&b));

    // Wrong bootstrap password: refused at CONNECT.
    let e = Mqtt::connect(
        b.pairing_port(),
        &b.ca_file(),
        None,
        &code_a,
        Some((BOOTSTRAP_USERNAME, "wrong")),
    )
    .err()
    .expect("refused");
    assert!(
        e.contains("uthori") || e.contains("BadUserNamePassword"),
        "{e}"
    );
    // The center's user cannot log in on the pairing listener either.
    assert!(Mqtt::connect(
        b.pairing_port(),
        &b.ca_file(),
        None,
        "x",
        Some(("center", ""))
    )
    .is_err());

    // A certificate from another CA, even with a box-like CN, is refused at the handshake;
    // so is a connection without any certificate on the mutual-TLS listener.
    let stranger = b.ca.client(&b.path(), &gw, support::pki::Validity::Current);
    let out = mtls_pub(
        &b,
        &stranger,
        &format!("{ROOT}/gw/{gw}/status"),
        "{}",
        false,
    );
    assert!(
        !out.status.success(),
        "a stranger's certificate was accepted"
    );
    assert!(Mqtt::connect(b.port, &b.ca_file(), None, "nocert", None).is_err());
    // A paired box cannot publish under another box's id.
    let other = b.identity("gw-other");
    let watch_other = b.subscribe(Some(&other), &format!("{ROOT}/gw/gw-other/#"), &[]);
    std::thread::sleep(Duration::from_millis(300));
    let kb_id = Identity {
        cert: b.path().join("boxb.pem"),
        key: b.path().join("boxb.key"),
    };
    let out = mtls_pub(
        &b,
        &kb_id,
        &format!("{ROOT}/gw/gw-other/status"),
        "{\"forged\":1}",
        false,
    );
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(700));
    assert!(watch_other
        .messages()
        .iter()
        .all(|m| !m.payload.contains("forged")));
}

#[test]
fn renewal_over_mtls_and_revocation_with_the_brokers_crl() {
    let mut b = Broker::start_city(CityOptions { crl: true });
    let _serve = serve(&b, &[]);
    let (c1, c2) = (issue_code(&b, &[]), issue_code(&b, &[]));
    let (k1, k2) = (BoxKey::new(), BoxKey::new());
    let (r1, r2) = (enroll(&b, &c1, &k1), enroll(&b, &c2, &k2));
    assert!(r1.ok && r2.ok);
    let (gw1, gw2) = (
        r1.gateway_id.clone().unwrap(),
        r2.gateway_id.clone().unwrap(),
    );
    let id1 = k1.identity(&b.path(), "box1", r1.certificate.as_deref().unwrap());
    let id2 = k2.identity(&b.path(), "box2", r2.certificate.as_deref().unwrap());

    // Renewal over the box's own link: a new certificate, same gateway id, on gw/{gw}/cert.
    let m = Mqtt::connect(
        b.port,
        &b.ca_file(),
        Some((&id1.cert, &id1.key)),
        &gw1,
        None,
    )
    .expect("box 1 connects with its certificate");
    let cert_topic = format!("{ROOT}/gw/{gw1}/cert");
    m.subscribe(&cert_topic);
    let k1b = BoxKey::new();
    m.publish(&format!("{ROOT}/gw/{gw1}/csr"), k1b.csr(&gw1));
    let renewed: PairResult = serde_json::from_slice(
        &m.next_on(&cert_topic, Duration::from_secs(20))
            .expect("renewal"),
    )
    .unwrap();
    assert!(renewed.ok, "{renewed:?}");
    assert_eq!(renewed.gateway_id.as_deref(), Some(gw1.as_str()));
    assert_ne!(renewed.certificate, r1.certificate);
    let ca_pem = std::fs::read_to_string(b.ca_file()).unwrap();
    assert_eq!(
        cert_cn_and_issuer_ok(renewed.certificate.as_deref().unwrap(), &ca_pem),
        gw1
    );
    // A renewal CSR naming another box is refused.
    m.publish(&format!("{ROOT}/gw/{gw1}/csr"), k1b.csr(&gw2));
    let wrong: PairResult =
        serde_json::from_slice(&m.next_on(&cert_topic, Duration::from_secs(20)).unwrap()).unwrap();
    assert_eq!(wrong.error, Some(PairErrorCode::BadCsr), "{wrong:?}");
    drop(m);
    let id1b = k1b.identity(&b.path(), "box1b", renewed.certificate.as_deref().unwrap());

    // Revoke box 1. Until the broker reloads the CRL it can still connect, but serve refuses
    // its renewals; once the broker restarted with the new CRL, both of its certificates are
    // refused at the handshake and box 2 still connects.
    let mut c = Command::new(center_bin());
    c.args(["revoke-box", &gw1])
        .env("PORCHLIGHT_CENTER_DIR", center_dir(&b));
    let out = run_ok(c);
    assert!(out.contains(&format!("revoked: {gw1}")), "{out}");
    let m = Mqtt::connect(
        b.port,
        &b.ca_file(),
        Some((&id1b.cert, &id1b.key)),
        &gw1,
        None,
    )
    .expect("box 1 connects before the broker reloads the CRL");
    m.subscribe(&cert_topic);
    m.publish(&format!("{ROOT}/gw/{gw1}/csr"), BoxKey::new().csr(&gw1));
    let refused: PairResult =
        serde_json::from_slice(&m.next_on(&cert_topic, Duration::from_secs(20)).unwrap()).unwrap();
    assert_eq!(refused.error, Some(PairErrorCode::Revoked), "{refused:?}");
    drop(m);
    b.stop();
    b.restart();
    for id in [&id1, &id1b] {
        let out = mtls_pub(&b, id, &format!("{ROOT}/gw/{gw1}/status"), "{}", false);
        assert!(!out.status.success(), "a revoked certificate was accepted");
    }
    let out = mtls_pub(&b, &id2, &format!("{ROOT}/gw/{gw2}/status"), "{}", false);
    assert!(out.status.success(), "box 2: {out:?}\n{}", b.logs());
    let events = audit(&b);
    assert!(events
        .iter()
        .any(|l| l["event"] == "revoked" && l["gateway_id"] == gw1.as_str()));
    assert!(events
        .iter()
        .any(|l| l["event"] == "renew_refused" && l["gateway_id"] == gw1.as_str()));
    let crl = std::fs::read_to_string(center_dir(&b).join("crl.pem")).unwrap();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
}

/// A heartbeat as the box sends it (the real type), with one camera and its modes.
fn heartbeat(camera: &str, live: &str, clips: &str) -> String {
    use porchlight_protocol::messages::*;
    let h = Heartbeat::new(
        jiff::Timestamp::now().as_millisecond(),
        1,
        "0.1.0",
        10,
        OutboxReport {
            messages: 2,
            bytes: 300,
        },
        HealthReport {
            paused: false,
            cameras: vec![CameraReport {
                id: camera.into(),
                state: CameraState::Streaming,
                codec: Some("h264".into()),
                width: Some(1920),
                height: Some(1080),
                fps: Some(15.0),
                bitrate_bps: Some(2_000_000),
                last_frame_ts: None,
                sharing: SharingModes {
                    live: live.parse().unwrap(),
                    clips: clips.parse().unwrap(),
                },
            }],
            storage: StorageReport {
                used_bytes: 1 << 30,
                quota_bytes: 4 << 30,
                oldest_ts: None,
            },
            audit: AuditAnchor {
                seq: 42,
                hash: "ab".repeat(32),
            },
            grants_active: 0,
        },
    );
    serde_json::to_string(&h).unwrap()
}

#[test]
fn fleet_shows_last_will_offline_and_a_radius_returns_exactly_the_boxes_inside() {
    let b = Broker::start_city(CityOptions::default());
    let _serve = serve(&b, &[]);
    // Four homes around (48.0, 11.0): 0 m, ~300 m, ~490 m, ~700 m, plus one without a
    // registered location.
    let places = [
        ("48.0,11.0", true),
        ("48.0027,11.0", true),
        ("48.0,11.00657", true),
        ("48.0063,11.0", false),
    ];
    let mut boxes = Vec::new();
    for (i, (loc, inside)) in places.iter().enumerate() {
        let code = issue_code(&b, &["--location", loc, "--label", &format!("home {i}")]);
        let k = BoxKey::new();
        let r = enroll(&b, &code, &k);
        assert!(r.ok);
        let gw = r.gateway_id.clone().unwrap();
        let id = k.identity(
            &b.path(),
            &format!("b{i}"),
            r.certificate.as_deref().unwrap(),
        );
        boxes.push((gw, id, *inside));
    }
    let code = issue_code(&b, &[]);
    assert!(enroll(&b, &code, &BoxKey::new()).ok);

    let (gw0, id0, _) = &boxes[0];
    // Box 0 comes online like the daemon does: a session with a retained last will, keepalive
    // 2 s; then the retained online status and a heartbeat.
    let status = format!("{ROOT}/gw/{gw0}/status");
    let mut o = MqttOptions::new(gw0.as_str(), "127.0.0.1", b.port);
    o.set_keep_alive(Duration::from_secs(2))
        .set_clean_session(false)
        .set_last_will(rumqttc::LastWill::new(
            &status,
            r#"{"online":false}"#,
            QoS::AtLeastOnce,
            true,
        ))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls(
            &b.ca_file(),
            Some((&id0.cert, &id0.key)),
        ))));
    let (session, freeze) = Mqtt::connect_with(o).expect("box 0 connects");
    session
        .client
        .publish(
            &status,
            QoS::AtLeastOnce,
            true,
            r#"{"online":true,"ts":1,"version":"0.1.0"}"#,
        )
        .unwrap();

    let mut fleet = center(&b);
    fleet.args(["fleet", "--follow", "--every", "1s", "--json", "--stats"]);
    let mut f = Running::spawn(fleet);
    f.wait_stderr("Listening to", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let hb = heartbeat("porch", "ask", "always");
    let out = mtls_pub(&b, id0, &format!("{ROOT}/gw/{gw0}/heartbeat"), &hb, false);
    assert!(out.status.success());

    let row = |f: &Running| -> Option<serde_json::Value> {
        let out = f.stdout();
        let last = out.lines().last()?;
        let rows: serde_json::Value = serde_json::from_str(last).ok()?;
        rows.as_array()?
            .iter()
            .find(|r| r["gateway_id"] == gw0.as_str())
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let online = loop {
        if let Some(r) = row(&f) {
            if r["online"] == true && !r["cameras"].as_array().unwrap().is_empty() {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not online with cameras: {}",
            f.stdout()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(online["cameras"][0]["id"], "porch");
    assert_eq!(online["cameras"][0]["live"], "ask");
    assert_eq!(online["cameras"][0]["clips"], "always");
    assert_eq!(online["outbox_messages"], 2);
    assert_eq!(online["audit_seq"], 42);
    assert_eq!(online["label"], "home 0");
    assert_eq!(online["storage_quota"], 4u64 << 30);
    assert!(f.stderr().contains("stats: heartbeats="), "{}", f.stderr());

    // The box goes silent (power cut, not a clean close): the broker publishes its will after
    // 1.5 x keepalive = 3 s; fleet shows it offline within the keepalive window.
    freeze.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    loop {
        if row(&f).is_some_and(|r| r["online"] == false) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "still online after {:?}: {}",
            stopped.elapsed(),
            f.stdout()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "offline too early: {took:?}"
    );
    drop(f);

    // The circle: exactly the registered boxes inside 500 m, nearest first, with distances.
    let mut c = center(&b);
    c.args([
        "fleet",
        "--near",
        "48.0,11.0",
        "--radius",
        "500m",
        "--wait",
        "1s",
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(run_ok(c).trim()).unwrap();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gateway_id"].as_str().unwrap())
        .collect();
    let inside: Vec<&str> = boxes
        .iter()
        .filter(|(_, _, inside)| *inside)
        .map(|(gw, _, _)| gw.as_str())
        .collect();
    assert_eq!(ids, inside, "{rows:#}");
    let d: Vec<f64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["distance_m"].as_f64().unwrap())
        .collect();
    assert!(
        d[0] < 1.0 && (290.0..310.0).contains(&d[1]) && (480.0..500.0).contains(&d[2]),
        "{d:?}"
    );
    // The table form names the same boxes.
    let mut c = center(&b);
    c.args([
        "fleet",
        "--near",
        "48.0,11.0",
        "--radius",
        "0.5km",
        "--wait",
        "500ms",
    ]);
    let table = run_ok(c);
    assert_eq!(table.lines().count(), 1 + inside.len(), "{table}");
}

#[test]
fn a_radius_request_reaches_exactly_the_boxes_inside_and_prints_each_reply() {
    use porchlight::sharing::request::{RequestBody, RequestVerifier, VerifyOptions};
    let b = Broker::start_city(CityOptions::default());
    let _serve = serve(&b, &[]);
    let mut boxes = Vec::new();
    for (i, loc) in ["52.52,13.405", "52.5227,13.405", "52.53,13.405"]
        .iter()
        .enumerate()
    {
        let code = issue_code(&b, &["--location", loc]);
        let k = BoxKey::new();
        let r = enroll(&b, &code, &k);
        let gw = r.gateway_id.clone().unwrap();
        let id = k.identity(
            &b.path(),
            &format!("r{i}"),
            r.certificate.as_deref().unwrap(),
        );
        let sub = b.subscribe(Some(&id), &format!("{ROOT}/gw/{gw}/request"), &[]);
        boxes.push((gw, id, sub));
    }
    // Let the subscriptions settle before anything is sent.
    std::thread::sleep(Duration::from_millis(700));
    let dir = center_dir(&b);
    let mut c = center(&b);
    c.args([
        "request",
        "live",
        "--near",
        "52.52,13.405",
        "--radius",
        "500m",
        "--camera",
        "porch",
        "--duration",
        "30s",
        "--reason",
        "burglary",
        "--requester",
        "Unit 7",
        "--wait",
        "20s",
        "--key",
    ])
    .arg(dir.join("request-key.pem"));
    let mut r = Running::spawn(c);
    // Boxes 0 (0 m) and 1 (~300 m) are inside; box 2 (~1.1 km) is not.
    let public_pem = std::fs::read_to_string(dir.join("request-key.pub.pem")).unwrap();
    let mut jtis = Vec::new();
    for (i, status) in [(0, "granted"), (1, "denied")] {
        let (gw, id, sub) = &boxes[i];
        let m = sub.wait(Duration::from_secs(20), "a request", |m| !m.is_empty());
        let verifier =
            RequestVerifier::from_pem(&public_pem, gw.as_str(), VerifyOptions::default()).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let req = verifier
            .verify(m[0].payload.as_bytes(), now, |c| c == "porch")
            .unwrap_or_else(|e| panic!("box {gw} cannot verify its request: {e:?}"));
        assert_eq!(req.camera, "porch");
        assert_eq!(req.body, RequestBody::Live { duration_s: 30 });
        let reply = serde_json::json!({"request_id": req.jti, "status": status,
            "reason": if status == "denied" { Some("not_allowed") } else { None },
            "until": null, "ts": 0, "seq": 1});
        let out = mtls_pub(
            &b,
            id,
            &format!("{ROOT}/gw/{gw}/reply"),
            &reply.to_string(),
            false,
        );
        assert!(out.status.success());
        jtis.push(req.jti);
    }
    r.wait_stderr("sending 2 request(s)", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.try_wait().is_none() {
        assert!(Instant::now() < deadline, "still waiting: {}", r.stdout());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let out = r.stdout();
    assert!(r.wait().success(), "{out}\n{}", r.stderr());
    assert!(
        out.contains(&format!("reply {} porch {} granted", boxes[0].0, jtis[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "reply {} porch {} denied not_allowed",
            boxes[1].0, jtis[1]
        )),
        "{out}"
    );
    assert!(!out.contains(&boxes[2].0), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        boxes[2].2.messages().is_empty(),
        "the box outside got a request"
    );
}

#[test]
fn two_shared_serve_workers_split_the_csrs_over_one_registry() {
    let b = Broker::start_city(CityOptions::default());
    let w1 = serve(&b, &["--shared", "centers"]);
    let w2 = serve(&b, &["--shared", "centers"]);
    let mut gws = std::collections::HashSet::new();
    for _ in 0..8 {
        let code = issue_code(&b, &[]);
        let r = enroll(&b, &code, &BoxKey::new());
        assert!(r.ok, "{r:?}");
        assert!(
            gws.insert(r.gateway_id.unwrap()),
            "a gateway id was given twice"
        );
    }
    // Each CSR was answered once, by one of the two; both took some (Mosquitto round-robins
    // a shared subscription), and the registry has all eight boxes.
    let n1 = w1.stderr().matches("Certificate sent").count();
    let n2 = w2.stderr().matches("Certificate sent").count();
    assert_eq!(n1 + n2, 8, "worker 1: {n1}, worker 2: {n2}");
    assert!(n1 > 0 && n2 > 0, "worker 1: {n1}, worker 2: {n2}");
    let reg = porchlight_center::store::CenterDir::new(center_dir(&b))
        .read()
        .unwrap();
    assert_eq!(reg.boxes.len(), 8);
    assert_eq!(reg.codes.iter().filter(|c| c.used.is_some()).count(), 8);
}
