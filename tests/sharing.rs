//! Consent-enforced sharing end to end: a real Mosquitto with mutual TLS and per-certificate
//! ACLs, a GStreamer camera, the daemon, signed requests from the center's identity, replies
//! and live feeds captured with `mosquitto_sub` (not our code), judged by ffprobe.

use porchlight_testkit as support;

use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use porchlight::protocol::framing::{self, Kind};
use porchlight::protocol::request::{sign_request, Claims, RequestKind};
use support::camera::{Camera, Codec, Stream};
use support::mosquitto::{Broker, Msg, Sub};
use support::{camera_toml, Daemon, FAST_INGEST};

const GW: &str = "gw-1";

struct Rig {
    broker: Broker,
    key: SigningKey,
    daemon: Daemon,
    replies: Sub,
    live: Sub,
    clips: Sub,
    gw_cert: std::path::PathBuf,
    _camera: Camera,
}

fn rig() -> Rig {
    rig_with("")
}

/// The rig with extra config (TOML appended after the camera).
fn rig_with(extra: &str) -> Rig {
    rig_full("", extra)
}

/// The rig with extra `[uplink]` keys and extra config appended after the camera.
fn rig_full(uplink_extra: &str, extra: &str) -> Rig {
    let camera = Camera::builder()
        .stream_config(Stream::new("s", Codec::H264).fps(15).gop(15))
        .start();
    let broker = Broker::start();
    let gw = broker.identity(GW);
    let (key, pub_pem) = support::requests::request_key(&broker.path(), "request-key.pub.pem", 7);
    let body = format!(
        "{FAST_INGEST}[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\ncenter_request_key_file = {:?}\nheartbeat_interval = \"1s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\ndrain_timeout = \"2s\"\n{uplink_extra}{}",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        pub_pem,
        camera_toml("front", &camera.url("s"), ""),
    ) + extra;
    let replies = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/gw-1/reply", &[]);
    // Live payloads are binary: hex, one message per line.
    let live = broker.subscribe(
        Some(&broker.center),
        "porchlight/v1/gw/gw-1/live/+",
        &["-F", "%r %t %x"],
    );
    let clips = broker.subscribe(
        Some(&broker.center),
        "porchlight/v1/gw/gw-1/clip/+",
        &["-F", "%r %t %x"],
    );
    let daemon = Daemon::start(&body);
    daemon.wait_camera("front", Duration::from_secs(60), "streaming", |c| {
        c["state"] == "streaming"
    });
    let link = Instant::now() + Duration::from_secs(20);
    while daemon.get("/api/v1/uplink")["state"] != "connected" {
        assert!(Instant::now() < link, "{}", daemon.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    Rig {
        broker,
        key,
        daemon,
        replies,
        live,
        clips,
        gw_cert: gw.cert.clone(),
        _camera: camera,
    }
}

fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn claims(jti: &str, kind: RequestKind) -> Claims {
    Claims {
        jti: jti.into(),
        iat: now_s(),
        exp: now_s() + 300,
        gw: GW.into(),
        kind,
        camera: "front".into(),
        from: None,
        to: None,
        duration_s: (kind == RequestKind::Live).then_some(60),
        target: None,
        reason: Some("burglary in progress".into()),
        case: Some("2026-1234".into()),
        requester: Some("Officer Test".into()),
        emergency: false,
    }
}

impl Rig {
    fn send_raw(&self, token: &str) {
        let out = self.broker.publish(
            Some(&self.broker.center),
            "porchlight/v1/gw/gw-1/request",
            token,
            false,
        );
        assert!(out.status.success(), "{out:?}");
    }

    fn send(&self, c: &Claims) {
        self.send_raw(&sign_request(c, &self.key));
    }

    /// Sets clips to `always` on `front`, waits for 4 s of buffer and asks for the 2 s clip
    /// `id` starting a second into it; returns the request sent.
    fn request_always_clip(&self, id: &str) -> Claims {
        self.cli(&[
            "consent",
            "set",
            "front",
            "--clips",
            "always",
            "--max-clip-window",
            "1h",
        ]);
        let c = self
            .daemon
            .wait_camera("front", Duration::from_secs(60), "4 s buffered", |c| {
                c["buffered_to_ms"].as_i64().unwrap_or(0)
                    - c["buffered_from_ms"].as_i64().unwrap_or(0)
                    >= 4_000
            });
        let from = c["buffered_from_ms"].as_i64().unwrap() / 1000 + 1;
        let mut req = claims(id, RequestKind::Clip);
        req.duration_s = None;
        req.from = Some(from);
        req.to = Some(from + 2);
        self.send(&req);
        req
    }

    fn reply(&self, id: &str, status: &str) -> serde_json::Value {
        let msgs = self.replies.wait(
            Duration::from_secs(20),
            &format!("reply {status} for {id}"),
            |m| m.iter().any(|m| is_reply(m, id, status)),
        );
        let m = msgs.iter().find(|m| is_reply(m, id, status)).unwrap();
        serde_json::from_str(&m.payload).unwrap()
    }

    fn cli(&self, args: &[&str]) -> String {
        self.daemon.cli_ok(args)
    }

    /// The PLM1 messages captured for `id`, decoded from hex, in arrival order.
    fn live_messages(&self, id: &str) -> Vec<Vec<u8>> {
        let topic = format!("porchlight/v1/gw/gw-1/live/{id}");
        self.live
            .messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .map(|m| hex::decode(m.payload.trim()).expect("hex payload"))
            .collect()
    }

    fn wait_live_end(&self, id: &str) -> (Vec<Vec<u8>>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let msgs = self.live_messages(id);
            if let Some(end) = msgs
                .iter()
                .filter_map(|p| framing::decode(p).ok())
                .find(|f| f.kind == Kind::End)
            {
                let v: serde_json::Value = serde_json::from_slice(end.body).unwrap();
                let reason = v["reason"].as_str().unwrap().to_owned();
                return (msgs, reason);
            }
            assert!(
                Instant::now() < deadline,
                "no end message for {id}; {} messages\n{}",
                msgs.len(),
                self.daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_reply(m: &Msg, id: &str, status: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(&m.payload)
        .is_ok_and(|v| v["request_id"] == id && v["status"] == status)
}

/// Writes the bodies of init and fragments, in seq order, to `path`; returns the fragment count.
/// The PLM1 payloads of clip `id` seen by `sub`, once its end message has arrived.
fn clip_payloads(sub: &Sub, id: &str, timeout: Duration) -> Vec<Vec<u8>> {
    let topic = format!("porchlight/v1/gw/gw-1/clip/{id}");
    let msgs = sub.wait(timeout, "the clip's end message", |m| {
        m.iter().filter(|m| m.topic == topic).any(|m| {
            hex::decode(m.payload.trim())
                .ok()
                .and_then(|p| framing::decode(&p).ok().map(|f| f.kind == Kind::End))
                .unwrap_or(false)
        })
    });
    msgs.iter()
        .filter(|m| m.topic == topic)
        .map(|m| hex::decode(m.payload.trim()).unwrap())
        .collect()
}

/// Reassembles a clip into `path` and checks its manifest against what arrived (sha256 of
/// the concatenated bodies, bytes, fragment messages); returns the fragment count and the
/// manifest.
fn check_clip(payloads: &[Vec<u8>], path: &Path) -> (usize, serde_json::Value) {
    let fragments = reassemble(payloads, path);
    let body = std::fs::read(path).unwrap();
    let end = payloads
        .iter()
        .filter_map(|p| framing::decode(p).ok())
        .find(|f| f.kind == Kind::End)
        .expect("an end message");
    let manifest: serde_json::Value = serde_json::from_slice(end.body).unwrap();
    use sha2::Digest;
    assert_eq!(
        manifest["sha256"],
        hex::encode(sha2::Sha256::digest(&body)),
        "{manifest}"
    );
    assert_eq!(manifest["bytes"], body.len());
    assert_eq!(manifest["fragments"], fragments);
    (fragments, manifest)
}

fn reassemble(msgs: &[Vec<u8>], path: &Path) -> usize {
    let mut frames: Vec<_> = msgs
        .iter()
        .filter_map(|p| framing::decode(p).ok())
        .collect();
    frames.sort_by_key(|f| f.seq);
    assert_eq!(
        frames.first().map(|f| f.kind),
        Some(Kind::Init),
        "feed starts with init"
    );
    let mut out = Vec::new();
    let mut n = 0;
    for f in &frames {
        match f.kind {
            Kind::Init | Kind::Fragment => out.extend_from_slice(f.body),
            Kind::End => {}
        }
        n += usize::from(f.kind == Kind::Fragment);
    }
    std::fs::write(path, out).unwrap();
    n
}

#[test]
fn always_live_feed_plays_at_the_center_and_ends_when_the_grant_expires() {
    let r = rig();
    r.cli(&[
        "consent",
        "set",
        "front",
        "--live",
        "always",
        "--max-live",
        "4s",
    ]);
    let asked = Instant::now();
    r.send(&claims("live-always-1", RequestKind::Live));
    let granted = r.reply("live-always-1", "granted");
    let until = granted["until"].as_i64().unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    assert!(
        until <= now + 4_500,
        "granted {granted} beyond the 4 s limit"
    );
    let (msgs, reason) = r.wait_live_end("live-always-1");
    assert_eq!(reason, "expired");
    assert!(asked.elapsed() < Duration::from_secs(15));
    r.reply("live-always-1", "expired");
    let clip = r.daemon.dir.path().join("live.mp4");
    let fragments = reassemble(&msgs, &clip);
    let p = support::ffprobe::probe(&clip);
    assert_eq!(
        (p.codec_name.as_str(), p.width, p.height),
        ("h264", 320, 240)
    );
    // About 4 s at 15 fps (plus the pre-roll since the last keyframe), one fragment per frame.
    assert!(p.nb_frames >= 40, "{p:?}");
    assert_eq!(p.nb_frames as usize, fragments);
    support::ffprobe::decode_ok(&clip);

    let audit = r.cli(&["audit", "list", "--request", "live-always-1", "--json"]);
    for kind in [
        "request_received",
        "decision",
        "grant_start",
        "bytes_sent",
        "grant_end",
    ] {
        assert!(audit.contains(kind), "audit lacks {kind}: {audit}");
    }
    assert!(r.cli(&["audit", "verify"]).contains("audit chain OK"));

    // The heartbeat carries the modes (never the limits) and the audit anchor.
    let hb = r.broker.sub_once(
        Some(&r.broker.center),
        "porchlight/v1/gw/gw-1/heartbeat",
        1,
        10,
    );
    let text = String::from_utf8_lossy(&hb.stdout);
    let json = text
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once(' '))
        .map(|(_, p)| p)
        .unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        v["cameras"][0]["sharing"],
        serde_json::json!({"live": "always", "clips": "never"}),
        "{v}"
    );
    assert!(!text.contains("max_live"), "limits leaked: {text}");
    let head = r.daemon.get("/api/v1/audit?limit=1");
    assert!(v["audit"]["seq"].as_u64().unwrap() > 1, "{v}");
    assert!(head["entries"][0]["seq"].as_u64() >= v["audit"]["seq"].as_u64());
}

#[test]
fn ask_waits_for_the_resident_and_revoke_stops_the_feed_within_a_second() {
    let r = rig();
    r.cli(&["consent", "set", "front", "--live", "ask"]);
    r.send(&claims("ask-1", RequestKind::Live));
    r.reply("ask-1", "pending");
    let listing = r.cli(&["requests"]);
    assert!(
        listing.contains("ask-1")
            && listing.contains("Officer Test")
            && listing.contains("2026-1234"),
        "{listing}"
    );
    assert!(
        r.live_messages("ask-1").is_empty(),
        "video sent before approval"
    );
    r.cli(&["approve", "ask-1"]);
    r.reply("ask-1", "granted");
    // Wait for video, then revoke.
    let deadline = Instant::now() + Duration::from_secs(15);
    while r.live_messages("ask-1").len() < 10 {
        assert!(Instant::now() < deadline, "{}", r.daemon.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let revoked_at = Instant::now();
    r.cli(&["revoke", "ask-1"]);
    let (_, reason) = r.wait_live_end("ask-1");
    assert_eq!(reason, "revoked");
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        revoked_at.elapsed()
    );
    r.reply("ask-1", "revoked");
    let count = r.live_messages("ask-1").len();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(r.live_messages("ask-1").len(), count, "video after revoke");

    // Deny, and pause ending a pending request.
    r.send(&claims("ask-2", RequestKind::Live));
    r.reply("ask-2", "pending");
    r.cli(&["deny", "ask-2"]);
    r.reply("ask-2", "denied");
    r.send(&claims("ask-3", RequestKind::Live));
    r.reply("ask-3", "pending");
    r.cli(&["pause"]);
    r.reply("ask-3", "expired");
    r.send(&claims("ask-4", RequestKind::Live));
    let d = r.reply("ask-4", "denied");
    assert_eq!(d["reason"], "paused");
}

#[test]
fn never_denies_and_bad_requests_are_rejected_and_audited() {
    let r = rig_with("[sharing]\nrejected_summary = \"1s\"\n");
    // Deny by default: no rule set.
    r.send(&claims("never-1", RequestKind::Live));
    assert_eq!(r.reply("never-1", "denied")["reason"], "not_allowed");

    let mut other_gw = claims("bad-gw", RequestKind::Live);
    other_gw.gw = "gw-2".into();
    r.send(&other_gw);
    let mut expired = claims("bad-exp", RequestKind::Live);
    expired.iat = now_s() - 600;
    expired.exp = now_s() - 300;
    r.send(&expired);
    let mut unknown = claims("bad-cam", RequestKind::Live);
    unknown.camera = "garage".into();
    r.send(&unknown);
    let forged = SigningKey::from_bytes(&[9u8; 32]);
    r.send_raw(&sign_request(
        &claims("bad-sig", RequestKind::Live),
        &forged,
    ));
    r.send(&claims("never-1", RequestKind::Live)); // replayed jti
    r.send_raw("not.a-jws");
    // Over 8 KiB: dropped before it is stored (counted in the summary, no reply).
    r.send_raw(&"A".repeat(9_000));
    // A correct signature over a body that is not the claims.
    r.send_raw(&porchlight::protocol::request::sign_raw(
        br#"{"alg":"EdDSA"}"#,
        br#"{"jti":"bad-json","kind":"live","#,
        &r.key,
    ));
    for (id, reason) in [
        ("bad-gw", "wrong_gateway"),
        ("bad-exp", "expired"),
        ("bad-cam", "unknown_camera"),
        ("bad-sig", "bad_signature"),
        ("never-1", "replayed"),
    ] {
        let v = r.reply(id, "rejected");
        assert_eq!(v["reason"], reason, "{v}");
    }
    r.replies.wait(
        Duration::from_secs(10),
        "both malformed ones rejected",
        |m| {
            m.iter()
                .filter(|m| m.payload.contains("\"rejected\"") && m.payload.contains("malformed"))
                .count()
                >= 2
        },
    );
    // Signed by the center: one entry each. Not (bad signature, not a JWS, too large): one
    // summary entry that counts them by reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let audit = loop {
        let audit = r.cli(&["audit", "list", "--limit", "100", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
        let counted: u64 = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["unverified"] == true)
            .filter_map(|e| e["detail"]["count"].as_u64())
            .sum();
        if counted >= 3 {
            break audit;
        }
        assert!(Instant::now() < deadline, "no summary of 3: {audit}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        audit.contains("bad_signature") && audit.contains("too_large"),
        "{audit}"
    );
    assert!(audit.matches("request_rejected").count() >= 6, "{audit}");
    assert!(r.live_messages("never-1").is_empty());
    // The box stays up and its chain intact.
    assert!(r.cli(&["audit", "verify"]).contains("audit chain OK"));
}

#[test]
fn a_clip_whose_segments_exceed_one_packet_arrives_split_and_whole() {
    // 16 KiB packets: every stored GOP is larger, so each goes as several kind-2 messages.
    let r = rig_full("max_packet_size = \"16 KiB\"\n", "");
    r.request_always_clip("clip-big");
    r.reply("clip-big", "completed");
    let payloads = clip_payloads(&r.clips, "clip-big", Duration::from_secs(30));
    assert!(
        payloads.iter().all(|p| p.len() <= 16 * 1024),
        "every message fits max_packet_size"
    );
    let path = r.daemon.dir.path().join("clip-big.mp4");
    let (fragments, _) = check_clip(&payloads, &path);
    // More messages than the 2-3 GOPs in the window: the segments were split.
    assert!(fragments > 4, "{fragments} fragments: segments not split?");
    let p = support::ffprobe::probe(&path);
    assert_eq!(p.codec_name, "h264");
    assert!(p.nb_frames >= 15, "{p:?}");
    support::ffprobe::decode_ok(&path);
}

#[test]
fn a_granted_clip_arrives_whole_with_a_manifest_signed_by_the_box() {
    let r = rig();
    let req = r.request_always_clip("clip-1");
    let from = req.from.unwrap();
    r.reply("clip-1", "granted");
    r.reply("clip-1", "completed");
    let payloads = clip_payloads(&r.clips, "clip-1", Duration::from_secs(20));
    let path = r.daemon.dir.path().join("clip.mp4");
    let (_, manifest) = check_clip(&payloads, &path);
    assert_eq!(manifest["alg"], "ES256");
    // The window [from, from+2 s) is covered, starting at a keyframe at or before it.
    assert!(manifest["from"].as_i64().unwrap() <= from * 1000);
    assert!(manifest["to"].as_i64().unwrap() >= (from + 2) * 1000 - 1_000);
    let p = support::ffprobe::probe(&path);
    assert_eq!(p.codec_name, "h264");
    assert!(p.nb_frames >= 15, "{p:?}");
    support::ffprobe::decode_ok(&path);

    // Chain of custody: openssl verifies the signature with the box's certificate.
    let dir = r.daemon.dir.path();
    let mut signed = manifest.clone();
    let sig = signed["signature"].as_str().unwrap().to_owned();
    signed.as_object_mut().unwrap().remove("signature");
    signed.as_object_mut().unwrap().remove("alg");
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&signed).unwrap(),
    )
    .unwrap();
    use base64::Engine as _;
    std::fs::write(
        dir.join("manifest.sig"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap(),
    )
    .unwrap();
    let pubkey = std::process::Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&r.gw_cert)
        .output()
        .unwrap();
    std::fs::write(dir.join("gw.pub"), &pubkey.stdout).unwrap();
    let verify = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("gw.pub"))
        .arg("-signature")
        .arg(dir.join("manifest.sig"))
        .arg(dir.join("manifest.json"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // The reference center receives a second clip itself and verifies the signature.
    let out_mp4 = dir.join("center.mp4");
    let center = std::process::Command::new(porchlight_testkit::center::center_bin())
        .arg("--broker")
        .arg(r.broker.url())
        .arg("--ca")
        .arg(&r.broker.ca.pem_file)
        .arg("--cert")
        .arg(&r.broker.center.cert)
        .arg("--key")
        .arg(&r.broker.center.key)
        .args([
            "receive",
            "--gw",
            "gw-1",
            "--request",
            "clip-2",
            "--timeout",
            "20s",
            "-o",
        ])
        .arg(&out_mp4)
        .arg("--box-cert")
        .arg(&r.gw_cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let mut req2 = req.clone();
    req2.jti = "clip-2".into();
    r.send(&req2);
    let out = center.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sha256: match") && text.contains("signature VALID"),
        "{text}"
    );
    support::ffprobe::decode_ok(&out_mp4);

    let audit = r.cli(&["audit", "list", "--request", "clip-1", "--json"]);
    assert!(
        audit.contains("clip_sent") && audit.contains(manifest["sha256"].as_str().unwrap()),
        "{audit}"
    );
}

#[test]
fn a_clip_approved_while_the_broker_is_down_arrives_later_and_a_revoked_one_never_leaves() {
    // A small quota, so the clip's segments are evicted from the buffer while it waits in the
    // outbox: what was queued must still arrive whole.
    let mut r = rig_with("\n[store]\nquota = \"1 MiB\"\n");
    r.cli(&["consent", "set", "front", "--clips", "ask"]);
    // Persistent sessions (the broker keeps persistence), so nothing sent while these
    // subscribers reconnect after the outage is lost to them.
    let replies = r.broker.subscribe(
        Some(&r.broker.center),
        "porchlight/v1/gw/gw-1/reply",
        &["-c", "-i", "center-replies"],
    );
    let clips = r.broker.subscribe(
        Some(&r.broker.center),
        "porchlight/v1/gw/gw-1/clip/+",
        &["-c", "-i", "center-clips", "-F", "%r %t %x"],
    );
    let c = r
        .daemon
        .wait_camera("front", Duration::from_secs(60), "3 s buffered", |c| {
            c["buffered_to_ms"].as_i64().unwrap_or(0) - c["buffered_from_ms"].as_i64().unwrap_or(0)
                >= 3_000
        });
    let from = c["buffered_from_ms"].as_i64().unwrap() / 1000 + 1;
    for id in ["clip-kept", "clip-revoked"] {
        let mut req = claims(id, RequestKind::Clip);
        req.duration_s = None;
        req.from = Some(from);
        req.to = Some(from + 2);
        r.send(&req);
        r.reply(id, "pending");
    }
    std::thread::sleep(Duration::from_millis(500));
    r.broker.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.daemon.get("/api/v1/uplink")["state"] == "connected" {
        assert!(Instant::now() < deadline, "link still up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Granted while the link is down: everything goes into the outbox.
    r.cli(&["approve", "clip-kept"]);
    r.cli(&["approve", "clip-revoked"]);
    let queued = r.daemon.get("/api/v1/uplink")["outbox_messages"]
        .as_u64()
        .unwrap();
    assert!(queued >= 6, "clip chunks queued: {queued}");
    r.cli(&["revoke", "clip-revoked"]);
    let held = r.daemon.data_dir().join("held");
    assert!(
        std::fs::read_dir(&held).unwrap().count() >= 2,
        "queued clip pieces hold their segments"
    );
    r.daemon.wait_camera(
        "front",
        Duration::from_secs(90),
        "the clip's segments evicted",
        |c| c["buffered_from_ms"].as_i64().unwrap_or(0) > (from + 2) * 1000,
    );
    r.broker.restart();

    replies.wait(
        Duration::from_secs(30),
        "completed and revoked replies",
        |m| {
            m.iter().any(|m| is_reply(m, "clip-kept", "completed"))
                && m.iter().any(|m| is_reply(m, "clip-revoked", "revoked"))
        },
    );
    let got = clips.wait(Duration::from_secs(30), "the kept clip's manifest", |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/clip-kept")
                && hex::decode(m.payload.trim())
                    .ok()
                    .and_then(|p| framing::decode(&p).ok().map(|f| f.kind == Kind::End))
                    .unwrap_or(false)
        })
    });
    assert!(
        !got.iter().any(|m| m.topic.ends_with("/clip-revoked")),
        "a chunk of the revoked clip left the box"
    );
    let payloads: Vec<Vec<u8>> = got
        .iter()
        .filter(|m| m.topic.ends_with("/clip-kept"))
        .map(|m| hex::decode(m.payload.trim()).unwrap())
        .collect();
    let path = r.daemon.dir.path().join("kept.mp4");
    // Evicted from the buffer meanwhile, but what the manifest promised arrived.
    check_clip(&payloads, &path);
    support::ffprobe::decode_ok(&path);
    // Everything acknowledged (the last PUBACKs may trail the center's copy by a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = r.daemon.get("/api/v1/uplink");
        if st["outbox_messages"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Sent or dropped, every held piece is released.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&held).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "held clip pieces left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unanswered_ask_expires_and_the_audit_chain_shows_tampering() {
    let r = rig_with("[sharing]\nask_timeout = \"10s\"\n");
    r.cli(&["consent", "set", "front", "--live", "ask"]);
    let asked = Instant::now();
    r.send(&claims("ask-late", RequestKind::Live));
    let pending = r.reply("ask-late", "pending");
    let expired = r.reply("ask-late", "expired");
    assert!(asked.elapsed() >= Duration::from_secs(9), "{expired}");
    assert!(
        expired["ts"].as_i64() >= pending["until"].as_i64(),
        "{pending} {expired}"
    );
    let late = r.daemon.cli(&["approve", "ask-late"]);
    assert!(!late.status.success(), "a late approval must fail");
    assert!(r.live_messages("ask-late").is_empty());

    // The resident's record: intact now, and a tampered entry is caught.
    assert!(r.cli(&["audit", "verify"]).contains("audit chain OK"));
    let mut d = r.daemon;
    assert!(d.stop());
    {
        let db = sled::open(d.data_dir().join("index")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let (k, v) = tree.iter().nth(2).unwrap().unwrap();
        let edited = String::from_utf8(v.to_vec())
            .unwrap()
            .replace("\"center\"", "\"gateway\"");
        let edited = if edited.as_bytes() == v.as_ref() {
            String::from_utf8(v.to_vec())
                .unwrap()
                .replacen("\"ts\":", "\"ts\":1", 1)
        } else {
            edited
        };
        tree.insert(k, edited.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    d.restart();
    let out = d.cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("BROKEN"), "{text}");

    // An unreadable newest entry: the daemon still starts (no crash loop), keeps the old chain
    // untouched and starts a new one that says why.
    assert!(d.stop());
    {
        let db = sled::open(d.data_dir().join("index")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let (k, _) = tree.last().unwrap().unwrap();
        tree.insert(k, &b"\xff garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    d.restart();
    let list = d.cli_ok(&["audit", "list", "--json"]);
    assert!(list.contains("previous_chain_unreadable"), "{list}");
    assert!(d.cli_ok(&["audit", "verify"]).contains("audit chain OK"));
}
