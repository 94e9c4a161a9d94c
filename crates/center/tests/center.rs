//! `porchlight-center` against a real Mosquitto (TLS, per-certificate ACLs): keygen output that
//! openssl and the box's verifier accept, signed requests as a box receives them, replies
//! followed with `--wait`, and `receive` reassembling a real fMP4 (made by ffmpeg, framed by
//! hand, published by `mosquitto_pub`, judged by ffprobe), clip manifests right and wrong.

use porchlight_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use porchlight::sharing::request::{RequestBody, RequestVerifier, VerifyOptions};
use sha2::{Digest, Sha256};
use support::center::{center_bin, center_command, Running};
use support::ffprobe;
use support::mosquitto::{Broker, Sub};
use support::pki::Identity;

const ROOT: &str = "porchlight/v1";

/// `porchlight-center` as the `center` identity of `broker`.
fn center(broker: &Broker) -> Command {
    let mut c = center_command(broker);
    c.env("RUST_LOG", "warn");
    c
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(center_bin())
        .args(["keygen", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("request-key.pem"), dir.join("request-key.pub.pem"))
}

/// `mosquitto_sub` as gateway `gw` on its whole subtree, ready once it has seen the retained
/// marker published before it started.
fn box_listener(broker: &Broker, gw: &Identity, name: &str) -> Sub {
    let status = format!("{ROOT}/gw/{name}/status");
    let out = broker.publish(Some(gw), &status, r#"{"online":true}"#, true);
    assert!(out.status.success(), "{out:?}");
    let sub = broker.subscribe(Some(gw), &format!("{ROOT}/gw/{name}/#"), &[]);
    sub.wait(Duration::from_secs(20), "retained status", |m| {
        m.iter().any(|m| m.topic == status)
    });
    sub
}

fn publish_file(broker: &Broker, id: &Identity, topic: &str, file: &Path) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &broker.port.to_string()])
        .arg("--cafile")
        .arg(&broker.ca.pem_file)
        .arg("--cert")
        .arg(&id.cert)
        .arg("--key")
        .arg(&id.key)
        .args(["-t", topic, "-q", "1", "-f"])
        .arg(file)
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub -f {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keygen_writes_a_0600_private_key_and_a_public_key_openssl_and_the_box_accept() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&dir.path().join("keys"));
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-in"])
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl refuses the public key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // openssl reads the private key too, and derives the same public key from it.
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl refuses the private key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_pem = std::fs::read_to_string(&public).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), public_pem);
    RequestVerifier::from_pem(&public_pem, "gw-1", VerifyOptions::default())
        .expect("the box's verifier takes the public key");

    // A second keygen does not replace the key; --force does.
    let again = Command::new(center_bin())
        .args(["keygen", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_pem);
    let forced = Command::new(center_bin())
        .args(["keygen", "--force", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert_ne!(std::fs::read_to_string(&public).unwrap(), public_pem);
}

#[test]
fn signed_requests_reach_the_box_and_verify_with_its_verifier() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let sub = box_listener(&broker, &gw, "gw-1");
    let verifier = RequestVerifier::from_pem(
        &std::fs::read_to_string(&public).unwrap(),
        "gw-1",
        VerifyOptions::default(),
    )
    .unwrap();

    let run = |args: &[&str]| -> String {
        let out = center(&broker)
            .arg("request")
            .args(args)
            .args(["--gw", "gw-1", "--camera", "porch", "--key"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "request {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jti = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(porchlight_protocol::ids::valid_jti(&jti), "{jti:?}");
        jti
    };
    let live = run(&[
        "live",
        "--duration",
        "60s",
        "--reason",
        "burglary in progress",
        "--requester",
        "Officer Diaz",
        "--case",
        "2026-00017",
        "--emergency",
    ]);
    let clip = run(&[
        "clip",
        "--from",
        "2026-03-01T12:00:00Z",
        "--to",
        "2026-03-01T12:05:00Z",
        "--reason",
        "hit and run",
        "--requester",
        "Unit 7",
        "--ttl",
        "10m",
    ]);
    let cancel = run(&["cancel", "--target", &live]);
    assert!(live != clip && clip != cancel);

    let requests = sub.wait(Duration::from_secs(20), "three requests", |m| {
        m.iter().filter(|m| m.topic.ends_with("/request")).count() >= 3
    });
    let now = jiff::Timestamp::now().as_second();
    let mut got = Vec::new();
    for m in requests.iter().filter(|m| m.topic.ends_with("/request")) {
        assert_eq!(m.topic, format!("{ROOT}/gw/gw-1/request"));
        let v = verifier
            .verify(m.payload.as_bytes(), now, |c| c == "porch")
            .unwrap_or_else(|e| panic!("the box rejects {}: {e}", m.payload));
        got.push(v);
    }
    assert_eq!(got[0].jti, live);
    assert_eq!(got[0].body, RequestBody::Live { duration_s: 60 });
    assert_eq!(
        (
            got[0].reason.as_str(),
            got[0].requester.as_str(),
            got[0].case.as_deref(),
            got[0].emergency
        ),
        (
            "burglary in progress",
            "Officer Diaz",
            Some("2026-00017"),
            true
        )
    );
    assert!(got[0].exp - got[0].iat == 300 && (got[0].iat - now).abs() < 30);
    assert_eq!(got[1].jti, clip);
    assert_eq!(
        got[1].body,
        RequestBody::Clip {
            from: 1_772_366_400,
            to: 1_772_366_700
        }
    );
    assert_eq!(got[1].exp - got[1].iat, 600);
    assert_eq!(got[2].jti, cancel);
    assert_eq!(got[2].body, RequestBody::Cancel { target: live });
    // Another box's verifier refuses them: the `gw` claim is signed.
    let other = RequestVerifier::from_pem(
        &std::fs::read_to_string(&public).unwrap(),
        "gw-2",
        VerifyOptions::default(),
    )
    .unwrap();
    assert!(other
        .verify(requests.last().unwrap().payload.as_bytes(), now, |_| true)
        .is_err());
}

#[test]
fn request_wait_prints_the_replies_and_exits_by_status() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path());
    let sub = box_listener(&broker, &gw, "gw-1");
    let reply_topic = format!("{ROOT}/gw/gw-1/reply");

    for (n, (id, statuses, code)) in [
        ("wait-granted", &["pending", "granted"][..], 0),
        ("wait-denied", &["denied"][..], 3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = center(&broker);
        cmd.args(["request", "live", "--gw", "gw-1", "--camera", "porch"])
            .args(["--duration", "30s", "--reason", "r", "--requester", "o"])
            .args(["--id", id, "--wait", "20s", "--key"])
            .arg(&key);
        let running = Running::spawn(cmd);
        // The request reaching the box proves the reply topic was subscribed first.
        sub.wait(Duration::from_secs(20), "the request", |m| {
            m.iter().filter(|m| m.topic.ends_with("/request")).count() > n
        });
        // A reply for another request is not ours.
        broker.publish(
            Some(&gw),
            &reply_topic,
            r#"{"request_id":"someone-else","status":"granted","reason":null,"until":null,"ts":1,"seq":1}"#,
            false,
        );
        for (i, st) in statuses.iter().enumerate() {
            let until = if *st == "granted" {
                "1900000000000"
            } else {
                "null"
            };
            let reason = if *st == "denied" {
                "\"rule_never\""
            } else {
                "null"
            };
            let payload = format!(
                r#"{{"request_id":"{id}","status":"{st}","reason":{reason},"until":{until},"ts":1,"seq":{}}}"#,
                i + 2
            );
            let out = broker.publish(Some(&gw), &reply_topic, &payload, false);
            assert!(out.status.success());
        }
        let (st, stdout, stderr) = running.finish(Duration::from_secs(30));
        assert_eq!(st.code(), Some(code), "{id}: {stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], id);
        assert_eq!(lines.len(), statuses.len() + 2, "{stdout}");
        for (line, want) in lines[1..].iter().zip(statuses.iter()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                (v["request_id"].as_str(), v["status"].as_str()),
                (Some(id), Some(*want))
            );
        }
        assert_eq!(
            *lines.last().unwrap(),
            format!("status: {}", statuses.last().unwrap())
        );
        assert!(!stdout.contains("someone-else"));
    }
}

#[test]
fn without_a_box_request_wait_and_receive_time_out_clearly() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path());
    let started = Instant::now();
    let out = center(&broker)
        .args(["request", "live", "--gw", "gw-9", "--camera", "porch"])
        .args(["--duration", "30s", "--reason", "r", "--requester", "o"])
        .args(["--wait", "2s", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no reply to request") && stderr.contains("within 2s"),
        "{stderr}"
    );
    assert!(stdout.ends_with("status: none\n"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(15));

    let out = center(&broker)
        .args([
            "receive",
            "--gw",
            "gw-9",
            "--request",
            "nothing",
            "--timeout",
            "1s",
        ])
        .arg("-o")
        .arg(dir.path().join("none.mp4"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no end message"));

    // No broker at all: an error (exit 1) in plain words.
    let out = Command::new(center_bin())
        .args([
            "--broker",
            &format!("mqtts://127.0.0.1:{}", support::free_port()),
        ])
        .arg("--ca")
        .arg(&broker.ca.pem_file)
        .arg("--cert")
        .arg(&broker.center.cert)
        .arg("--key")
        .arg(&broker.center.key)
        .args(["watch", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real fMP4 from ffmpeg: 3 s of 320x240 at 15 fps, a keyframe every 15 frames, one
/// fragment per keyframe.
fn test_fmp4(dir: &Path) -> Vec<u8> {
    let path = dir.join("x.mp4");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .args(["testsrc=size=320x240:rate=15", "-t", "3", "-c:v", "libx264"])
        .args(["-pix_fmt", "yuv420p", "-g", "15", "-bf", "0", "-movflags"])
        .args(["+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// Splits an fMP4 into init (`ftyp`+`moov`) and fragments (`moof`+`mdat`), by its top-level
/// boxes; anything else (`mfra`) is left out.
fn split_fmp4(data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut init = Vec::new();
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &data[pos + 4..pos + 8];
        let size = match size32 {
            0 => data.len() - pos,
            1 => u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()) as usize,
            n => n,
        };
        let b = &data[pos..pos + size];
        match kind {
            b"ftyp" | b"moov" => init.extend_from_slice(b),
            b"moof" => fragments.push(b.to_vec()),
            b"mdat" => fragments
                .last_mut()
                .expect("mdat after moof")
                .extend_from_slice(b),
            _ => {}
        }
        pos += size;
    }
    assert!(!init.is_empty() && !fragments.is_empty());
    (init, fragments)
}

/// A PLM1 payload, framed here by hand (not by the crate's codec).
fn plm1(kind: u8, seq: u32, ts_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut p = b"PLM1".to_vec();
    p.push(kind);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts_ms.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// Frames init, fragments (in `order`) and the end body into files and publishes each with
/// `mosquitto_pub -f` as the box.
#[allow(clippy::too_many_arguments)]
fn publish_stream(
    broker: &Broker,
    gw: &Identity,
    topic: &str,
    dir: &Path,
    init: &[u8],
    fragments: &[Vec<u8>],
    order: &[usize],
    end: &[u8],
) {
    let n = fragments.len() as u32;
    let mut messages = vec![(0u32, plm1(1, 0, 0, init))];
    for &i in order {
        let ts = 1_795_000_000_000 + i as u64 * 1000;
        messages.push((i as u32 + 1, plm1(2, i as u32 + 1, ts, &fragments[i])));
    }
    messages.push((n + 1, plm1(3, n + 1, 1_795_000_009_000, end)));
    for (seq, payload) in messages {
        let file = dir.join(format!("{}-{seq}.plm1", topic.replace('/', "_")));
        std::fs::write(&file, payload).unwrap();
        publish_file(broker, gw, topic, &file);
    }
}

fn receive(broker: &Broker, id: &str, out: &Path, json: bool) -> Running {
    let mut cmd = center(broker);
    cmd.args([
        "receive",
        "--gw",
        "gw-1",
        "--request",
        id,
        "--timeout",
        "20s",
    ])
    .arg("-o")
    .arg(out);
    if json {
        cmd.arg("--json");
    }
    let mut r = Running::spawn(cmd);
    r.wait_stderr("Waiting on", Duration::from_secs(20));
    r
}

#[test]
fn receive_reassembles_a_live_feed_published_by_mosquitto_pub() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let original = test_fmp4(dir.path());
    let (init, fragments) = split_fmp4(&original);
    assert!(fragments.len() >= 3, "{} fragments", fragments.len());
    let out = dir.path().join("out.mp4");
    let rx = receive(&broker, "live-r1", &out, false);

    let topic = format!("{ROOT}/gw/gw-1/live/live-r1");
    let order: Vec<usize> = (0..fragments.len()).collect();
    // Fragment seq 1 once more, as a QoS 1 redelivery would: dropped.
    publish_stream(
        &broker,
        &gw,
        &topic,
        dir.path(),
        &init,
        &fragments,
        &order,
        br#"{"reason":"expired"}"#,
    );
    let dup = dir.path().join("dup.plm1");
    std::fs::write(&dup, plm1(2, 1, 1_795_000_000_000, &fragments[0])).unwrap();
    publish_file(&broker, &gw, &topic, &dup);

    let (st, stdout, stderr) = rx.finish(Duration::from_secs(30));
    assert!(st.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(r#"end: {"reason":"expired"}"#), "{stdout}");
    let n = fragments.len();
    assert!(
        stdout.contains(&format!(
            "messages: {} (1 init, {n} fragments, 1 end, 0 duplicates, 0 malformed)",
            n + 2
        )) && stdout.contains("missing seqs: none"),
        "{stdout}"
    );
    let mut want = init.clone();
    for f in &fragments {
        want.extend_from_slice(f);
    }
    let got = std::fs::read(&out).unwrap();
    assert!(got == want, "out.mp4 is not init + fragments in order");
    assert!(
        stdout.contains(&format!("bytes: {}", want.len())),
        "{stdout}"
    );
    let p = ffprobe::probe(&out);
    assert_eq!(
        (p.codec_name.as_str(), p.width, p.height, p.nb_frames),
        ("h264", 320, 240, 45)
    );
    ffprobe::decode_ok(&out);
}

#[test]
fn receive_checks_a_clip_manifest_right_and_wrong() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let (init, fragments) = split_fmp4(&test_fmp4(dir.path()));
    let mut whole = init.clone();
    for f in &fragments {
        whole.extend_from_slice(f);
    }
    let sha = hex::encode(Sha256::digest(&whole));
    let manifest = |id: &str, sha256: &str| {
        serde_json::json!({
            "request_id": id, "camera": "porch", "from": 1_795_000_000, "to": 1_795_000_003,
            "fragments": fragments.len(), "bytes": whole.len(), "sha256": sha256,
            "signature": "not-checked-yet",
        })
        .to_string()
    };
    let (ok_out, bad_out) = (dir.path().join("ok.mp4"), dir.path().join("bad.mp4"));
    let ok = receive(&broker, "clip-ok", &ok_out, false);
    let bad = receive(&broker, "clip-bad", &bad_out, true);

    // Fragments 1 and 2 swapped on the wire: receive puts them back in seq order.
    let mut order: Vec<usize> = (0..fragments.len()).collect();
    order.swap(0, 1);
    publish_stream(
        &broker,
        &gw,
        &format!("{ROOT}/gw/gw-1/clip/clip-ok"),
        dir.path(),
        &init,
        &fragments,
        &order,
        manifest("clip-ok", &sha).as_bytes(),
    );
    let wrong = hex::encode(Sha256::digest(b"something else"));
    publish_stream(
        &broker,
        &gw,
        &format!("{ROOT}/gw/gw-1/clip/clip-bad"),
        dir.path(),
        &init,
        &fragments,
        &(0..fragments.len()).collect::<Vec<_>>(),
        manifest("clip-bad", &wrong).as_bytes(),
    );

    let (st, stdout, stderr) = ok.finish(Duration::from_secs(30));
    assert!(st.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("sha256: match ({sha})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("manifest: bytes match, fragments match, request_id match, seqs complete, signature present (not verified: give --box-cert)"),
        "{stdout}"
    );
    assert!(std::fs::read(&ok_out).unwrap() == whole);
    assert_eq!(ffprobe::probe(&ok_out).nb_frames, 45);

    let (st, stdout, stderr) = bad.finish(Duration::from_secs(30));
    assert_eq!(st.code(), Some(5), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["stream"], "clip");
    assert_eq!(v["ended"], true);
    assert_eq!(v["manifest"]["sha256_match"], false);
    assert_eq!(v["manifest"]["computed_sha256"], sha.as_str());
    assert_eq!(v["manifest"]["bytes_match"], true);
    assert_eq!(v["missing"], serde_json::json!([]));
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
}

#[test]
fn watch_prints_one_line_per_box_message() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let mut cmd = center(&broker);
    cmd.args(["watch", "--gw", "+", "--count", "3", "--for", "20s"]);
    let mut w = Running::spawn(cmd);
    w.wait_stderr("Watching", Duration::from_secs(20));
    for (kind, payload) in [
        (
            "event",
            r#"{"seq":1,"ts":2,"kind":"started","version":"0.1.0"}"#,
        ),
        ("heartbeat", r#"{"ts":3,"seq":0}"#),
        // Not watched: video.
        ("live/x", "PLM1"),
        (
            "reply",
            r#"{"request_id":"a","status":"denied","reason":null,"until":null,"ts":4,"seq":2}"#,
        ),
    ] {
        let out = broker.publish(Some(&gw), &format!("{ROOT}/gw/gw-1/{kind}"), payload, false);
        assert!(out.status.success());
    }
    let (st, stdout, stderr) = w.finish(Duration::from_secs(30));
    assert!(st.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].ends_with(r#" gw-1 event {"seq":1,"ts":2,"kind":"started","version":"0.1.0"}"#)
    );
    assert!(lines[1].contains(" gw-1 heartbeat "));
    assert!(lines[2].contains(" gw-1 reply ") && lines[2].contains("denied"));
}

#[test]
fn the_real_box_answers_requests_from_the_center() {
    let broker = Broker::start();
    let gw = broker.identity("gw-1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("center"));
    let (stranger_key, _) = keygen(&dir.path().join("stranger"));
    let status = broker.subscribe(
        Some(&broker.center),
        &format!("{ROOT}/gw/gw-1/heartbeat"),
        &[],
    );
    let body = format!(
        "[uplink]\nbroker = \"{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\ncenter_request_key_file = {:?}\nheartbeat_interval = \"1s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n{}",
        broker.url(),
        broker.ca.pem_file,
        gw.cert,
        gw.key,
        public,
        // A camera that never answers: consent is decided without video.
        support::camera_toml("porch", "rtsp://127.0.0.1:9/x", ""),
    );
    let daemon = support::Daemon::start(&body);
    // A heartbeat comes after the box subscribed to its requests.
    status.wait(Duration::from_secs(20), "a heartbeat", |m| !m.is_empty());

    let ask = |camera: &str, key: &Path| {
        let out = center(&broker)
            .args(["request", "live", "--gw", "gw-1", "--camera", camera])
            .args(["--duration", "30s", "--reason", "r", "--requester", "o"])
            .args(["--wait", "15s", "--key"])
            .arg(key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = stdout.lines().last().unwrap_or_default().to_owned();
        (out.status.code(), last, stdout, daemon.logs())
    };
    // Deny by default: every camera starts as `never`.
    let (code, last, stdout, logs) = ask("porch", &key);
    assert_eq!(
        (code, last.as_str()),
        (Some(3), "status: denied"),
        "{stdout}\n{logs}"
    );
    let (code, last, stdout, logs) = ask("nope", &key);
    assert_eq!(
        (code, last.as_str()),
        (Some(3), "status: rejected"),
        "{stdout}\n{logs}"
    );
    assert!(stdout.contains("unknown_camera"), "{stdout}");
    let (code, last, stdout, logs) = ask("porch", &stranger_key);
    assert_eq!(
        (code, last.as_str()),
        (Some(3), "status: rejected"),
        "{stdout}\n{logs}"
    );
    assert!(stdout.contains("bad_signature"), "{stdout}");
}
