//! Valid requests, every rejection, hostile encodings, and a no-panic property.

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;
use crate::protocol::request::{sign_raw, sign_request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// A key pair made with `openssl genpkey -algorithm ed25519` (test only).
const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIE2NBbZX07FuUauZ2CoSsY5aohRyzvMsxlIPERhts9er
-----END PRIVATE KEY-----
";
/// `openssl pkey -in key.pem -pubout` of it.
const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAvchWRJDW7ae697iScWkbQBXf58COQWUGZSs/jrhVKSU=
-----END PUBLIC KEY-----
";
/// Signed by `openssl pkeyutl -sign -rawin` with that key (not by our code): header
/// `{"alg":"EdDSA","typ":"JWT"}`, a live request for `porch` on `gw-test`, iat 1700000000,
/// exp 1700000600.
const OPENSSL_TOKEN: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJqdGkiOiJvcGVuc3NsLTEiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDYwMCwiZ3ciOiJndy10ZXN0Iiwia2luZCI6ImxpdmUiLCJjYW1lcmEiOiJwb3JjaCIsImR1cmF0aW9uX3MiOjYwLCJyZWFzb24iOiJpbnRlcm9wIiwicmVxdWVzdGVyIjoib3BlbnNzbCJ9.gfvn47V4-9hs7mrtvokpfBf9tLovKKljChR2U_ALh-pfJKs9LBhfJb243mrzDGHwRIiM6InoENVD8aFHkiZBDw";

const NOW: i64 = 1_700_000_100;
const GW: &str = "gw-test";

fn key() -> SigningKey {
    SigningKey::from_pkcs8_pem(OPENSSL_PRIVATE_PEM).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn verifier() -> RequestVerifier {
    RequestVerifier::from_pem(OPENSSL_PUBLIC_PEM, GW, VerifyOptions::default()).unwrap()
}

fn known(c: &str) -> bool {
    c == "porch" || c == "garden"
}

fn live_claims() -> Claims {
    Claims {
        jti: "req-1".into(),
        iat: NOW - 5,
        exp: NOW + 300,
        gw: GW.into(),
        kind: RequestKind::Live,
        camera: "porch".into(),
        from: None,
        to: None,
        duration_s: Some(120),
        target: None,
        reason: Some("burglary in progress".into()),
        case: Some("2024-00017".into()),
        requester: Some("Officer Diaz".into()),
        emergency: false,
    }
}

fn clip_claims() -> Claims {
    Claims {
        kind: RequestKind::Clip,
        duration_s: None,
        from: Some(NOW - 600),
        to: Some(NOW - 300),
        ..live_claims()
    }
}

fn cancel_claims() -> Claims {
    Claims {
        jti: "req-2".into(),
        kind: RequestKind::Cancel,
        duration_s: None,
        target: Some("req-1".into()),
        reason: None,
        case: None,
        requester: None,
        ..live_claims()
    }
}

fn verify(token: &str) -> Result<ValidRequest, RequestError> {
    verifier().verify(token.as_bytes(), NOW, known)
}

fn reason_of(token: &str) -> String {
    verify(token).unwrap_err().reason().into_owned()
}

/// Opens sled at `path`, retrying while a just-dropped `Db`'s background thread still holds
/// its file lock (sled releases it asynchronously).
fn open_retry(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

fn temp_guard() -> ReplayGuard {
    ReplayGuard::open_in(&sled::Config::new().temporary(true).open().unwrap()).unwrap()
}

#[test]
fn openssl_signed_request_verifies() {
    let r = verify(OPENSSL_TOKEN).unwrap();
    assert_eq!(r.jti, "openssl-1");
    assert_eq!(r.body, RequestBody::Live { duration_s: 60 });
    assert_eq!(r.requester, "openssl");
    assert!(!r.emergency);
}

#[test]
fn our_signature_matches_openssl_key_format() {
    assert_eq!(
        public_key_from_pem(OPENSSL_PUBLIC_PEM).unwrap(),
        key().verifying_key()
    );
    assert!(
        public_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
    assert!(public_key_from_pem(OPENSSL_PRIVATE_PEM).is_err());
    assert_eq!(
        RequestVerifier::from_pem("junk", GW, VerifyOptions::default())
            .unwrap_err()
            .reason(),
        "internal_error"
    );
}

#[test]
fn valid_live_clip_and_cancel() {
    let r = verify(&sign_request(&live_claims(), &key())).unwrap();
    assert_eq!(r.body, RequestBody::Live { duration_s: 120 });
    assert_eq!(r.case.as_deref(), Some("2024-00017"));
    let c = r.to_consent().unwrap();
    assert_eq!(c.id, "req-1");
    assert_eq!(c.scope, consent::RequestScope::Live { duration_s: 120 });

    let r = verify(&sign_request(&clip_claims(), &key())).unwrap();
    assert_eq!(
        r.body,
        RequestBody::Clip {
            from: NOW - 600,
            to: NOW - 300
        }
    );
    assert_eq!(
        r.to_consent().unwrap().scope,
        consent::RequestScope::Clip {
            from_ms: (NOW - 600) * 1000,
            to_ms: (NOW - 300) * 1000
        }
    );

    let r = verify(&sign_request(&cancel_claims(), &key())).unwrap();
    assert_eq!(
        r.body,
        RequestBody::Cancel {
            target: "req-1".into()
        }
    );
    assert!(r.to_consent().is_none());

    let mut em = live_claims();
    em.emergency = true;
    assert!(verify(&sign_request(&em, &key())).unwrap().emergency);
}

#[test]
fn trailing_newline_is_tolerated() {
    let t = sign_request(&live_claims(), &key()) + "\n";
    verify(&t).unwrap();
}

#[test]
fn rejections_have_short_reasons() {
    type Edit = fn(&mut Claims);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "other gateway",
            |c| c.gw = "gw-other".into(),
            "wrong_gateway",
        ),
        ("expired", |c| c.exp = NOW, "expired"),
        (
            "long expired",
            |c| {
                c.iat = NOW - 7200;
                c.exp = NOW - 3600
            },
            "expired",
        ),
        (
            "iat far in the future",
            |c| {
                c.iat = NOW + 301;
                c.exp = NOW + 600
            },
            "not_yet_valid",
        ),
        (
            "iat within skew",
            |c| {
                c.iat = NOW + 300;
                c.exp = NOW + 600
            },
            "",
        ),
        (
            "exp before iat",
            |c| {
                c.iat = NOW + 100;
                c.exp = NOW + 50
            },
            "malformed: exp not after iat",
        ),
        (
            "lifetime too long",
            |c| c.exp = c.iat + 3601,
            "malformed: exp too far after iat",
        ),
        (
            "unknown camera",
            |c| c.camera = "attic".into(),
            "unknown_camera",
        ),
        (
            "bad camera id",
            |c| c.camera = "../etc".into(),
            "malformed: camera is not a valid camera id",
        ),
        (
            "empty jti",
            |c| c.jti = String::new(),
            "malformed: jti must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            "jti with slash",
            |c| c.jti = "a/b".into(),
            "malformed: jti must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            "jti with plus",
            |c| c.jti = "a+b".into(),
            "malformed: jti must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            "jti 65 chars",
            |c| c.jti = "a".repeat(65),
            "malformed: jti must match [A-Za-z0-9_-]{1,64}",
        ),
        ("jti 64 chars", |c| c.jti = "a".repeat(64), ""),
        (
            "live without duration",
            |c| c.duration_s = None,
            "malformed: missing duration_s",
        ),
        (
            "live zero duration",
            |c| c.duration_s = Some(0),
            "malformed: duration_s must be at least 1",
        ),
        (
            "live with from",
            |c| c.from = Some(1),
            "malformed: live request with clip or cancel fields",
        ),
        (
            "clip missing to",
            |c| {
                c.kind = RequestKind::Clip;
                c.duration_s = None;
                c.from = Some(1)
            },
            "malformed: missing to",
        ),
        (
            "clip with duration",
            |c| {
                c.kind = RequestKind::Clip;
                c.from = Some(1);
                c.to = Some(2)
            },
            "malformed: clip request with live or cancel fields",
        ),
        (
            "clip from == to",
            |c| {
                c.kind = RequestKind::Clip;
                c.duration_s = None;
                c.from = Some(5);
                c.to = Some(5)
            },
            "malformed: from must be before to",
        ),
        (
            "clip negative",
            |c| {
                c.kind = RequestKind::Clip;
                c.duration_s = None;
                c.from = Some(-5);
                c.to = Some(5)
            },
            "malformed: from/to out of range",
        ),
        (
            "clip year 10000",
            |c| {
                c.kind = RequestKind::Clip;
                c.duration_s = None;
                c.from = Some(5);
                c.to = Some(i64::MAX)
            },
            "malformed: from/to out of range",
        ),
        (
            "cancel without target",
            |c| {
                c.kind = RequestKind::Cancel;
                c.duration_s = None
            },
            "malformed: missing target",
        ),
        (
            "cancel bad target",
            |c| {
                c.kind = RequestKind::Cancel;
                c.duration_s = None;
                c.target = Some("x y".into())
            },
            "malformed: target must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            "missing reason",
            |c| c.reason = None,
            "malformed: missing reason",
        ),
        (
            "empty reason",
            |c| c.reason = Some(String::new()),
            "malformed: empty reason",
        ),
        (
            "reason too long",
            |c| c.reason = Some("x".repeat(513)),
            "malformed: reason too long or has control characters",
        ),
        (
            "reason with escape",
            |c| c.reason = Some("a\u{1b}[31mred".into()),
            "malformed: reason too long or has control characters",
        ),
        (
            "missing requester",
            |c| c.requester = None,
            "malformed: missing requester",
        ),
        (
            "case too long",
            |c| c.case = Some("x".repeat(129)),
            "malformed: case too long or has control characters",
        ),
    ];
    for (name, edit, want) in cases {
        let mut c = live_claims();
        edit(&mut c);
        let got = match verify(&sign_request(&c, &key())) {
            Ok(_) => String::new(),
            Err(e) => e.reason().into_owned(),
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn missing_and_mistyped_claims() {
    let k = key();
    let h = br#"{"alg":"EdDSA"}"#;
    let base = serde_json::to_value(live_claims()).unwrap();
    for (field, want) in [
        ("jti", "malformed: missing jti"),
        ("iat", "malformed: missing iat"),
        ("exp", "malformed: missing exp"),
        ("gw", "malformed: missing gw"),
        ("kind", "malformed: missing kind"),
        ("camera", "malformed: missing camera"),
    ] {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        let t = sign_raw(h, &serde_json::to_vec(&v).unwrap(), &k);
        assert_eq!(reason_of(&t), want, "{field}");
    }
    let typed: [(&str, &[u8]); 7] = [
        ("kind unknown", br#"{"kind":"delete"}"#),
        ("iat float", br#"{"iat":1.5}"#),
        ("iat string", br#"{"iat":"1700000000"}"#),
        ("emergency string", br#"{"emergency":"yes"}"#),
        ("duration negative", br#"{"duration_s":-1}"#),
        ("array", br#"[1,2,3]"#),
        ("duplicate claim", br#"{"gw":"gw-test","gw":"gw-test"}"#),
    ];
    for (name, payload) in typed {
        let r = reason_of(&sign_raw(h, payload, &k));
        assert!(r.starts_with("malformed"), "{name}: {r}");
    }
    // Unknown claims are ignored.
    let mut v = base.clone();
    v.as_object_mut()
        .unwrap()
        .insert("nbf".into(), serde_json::json!(1));
    verify(&sign_raw(h, &serde_json::to_vec(&v).unwrap(), &k)).unwrap();
}

#[test]
fn only_eddsa_is_accepted() {
    let k = key();
    let payload = serde_json::to_vec(&live_claims()).unwrap();
    for header in [
        &br#"{"alg":"none"}"#[..],
        br#"{"alg":"HS256"}"#,
        br#"{"alg":"ES256"}"#,
        br#"{"alg":"eddsa"}"#,
        br#"{"alg":"Ed25519"}"#,
    ] {
        assert_eq!(
            reason_of(&sign_raw(header, &payload, &k)),
            "malformed: alg must be EdDSA"
        );
    }
    // alg none with an empty signature.
    let t = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    assert_eq!(reason_of(&t), "malformed: alg must be EdDSA");
    // Missing alg, header not an object, duplicate alg.
    for header in [
        &br#"{"typ":"JWT"}"#[..],
        br#""EdDSA""#,
        br#"{"alg":"EdDSA","alg":"none"}"#,
    ] {
        assert_eq!(
            reason_of(&sign_raw(header, &payload, &k)),
            "malformed: header json"
        );
    }
    // Other header fields are ignored.
    verify(&sign_raw(
        br#"{"kid":"x","alg":"EdDSA","crit":["b64"]}"#,
        &payload,
        &k,
    ))
    .unwrap();
}

#[test]
fn tampering_breaks_the_signature() {
    let good = sign_request(&live_claims(), &key());
    let parts: Vec<&str> = good.split('.').collect();
    // Another header with the same alg.
    let h2 = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"jwt"}"#);
    assert_eq!(
        reason_of(&format!("{h2}.{}.{}", parts[1], parts[2])),
        "bad_signature"
    );
    // Another payload.
    let mut c = live_claims();
    c.duration_s = Some(3600);
    let p2 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    assert_eq!(
        reason_of(&format!("{}.{p2}.{}", parts[0], parts[2])),
        "bad_signature"
    );
    // Every single flipped signature byte.
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] ^= 0x01;
        let t = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&s));
        assert_eq!(reason_of(&t), "bad_signature", "byte {i}");
    }
    // Short signature, another key.
    let t = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(&sig[..63])
    );
    assert_eq!(reason_of(&t), "bad_signature");
    assert_eq!(
        reason_of(&sign_request(&live_claims(), &other_key())),
        "bad_signature"
    );
}

#[test]
fn non_canonical_base64_is_malformed() {
    let good = sign_request(&live_claims(), &key());
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    // Padding on a part whose length needs it.
    let padded: Vec<String> = parts
        .iter()
        .map(|p| {
            let mut p = p.clone();
            while p.len() % 4 != 0 {
                p.push('=');
            }
            p
        })
        .collect();
    assert!(
        padded.iter().any(|p| p.ends_with('=')),
        "test needs padding"
    );
    assert!(reason_of(&padded.join(".")).starts_with("malformed"));
    // The standard alphabet.
    let std_alpha = good.replace('-', "+").replace('_', "/");
    assert_ne!(std_alpha, good, "test needs - or _");
    assert!(reason_of(&std_alpha).starts_with("malformed"));
    // Non-canonical trailing bits on the signature (86 chars: last one carries 2 spare bits).
    let mut s = parts[2].clone();
    let last = s.pop().unwrap();
    let idx = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .iter()
        .position(|&b| b == last as u8)
        .unwrap();
    s.push(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[idx | 1] as char);
    if s != parts[2] {
        let t = format!("{}.{}.{s}", parts[0], parts[1]);
        assert_eq!(reason_of(&t), "malformed: signature base64");
    }
    // Whitespace inside, too few and too many parts.
    assert!(reason_of(&good.replacen('.', " .", 1)).starts_with("malformed"));
    assert_eq!(
        reason_of(&parts[..2].join(".")),
        "malformed: JWS must have three parts"
    );
    assert_eq!(
        reason_of(&format!("{good}.")),
        "malformed: JWS must have three parts"
    );
    assert_eq!(reason_of(""), "malformed: JWS must have three parts");
    // JWS JSON serialization is not accepted.
    assert!(reason_of(r#"{"payload":"x","signatures":[]}"#).starts_with("malformed"));
}

#[test]
fn huge_request_is_rejected_before_parsing() {
    let mut c = live_claims();
    c.reason = Some("x".repeat(9000));
    let t = sign_request(&c, &key());
    let e = verify(&t).unwrap_err();
    assert!(matches!(e, RequestError::TooLarge { .. }));
    assert_eq!(e.reason(), "too_large");
    // Not even valid: still too_large, never parsed.
    let junk = vec![0xffu8; MAX_REQUEST_BYTES + 1];
    assert_eq!(
        verifier().verify(&junk, NOW, known).unwrap_err().reason(),
        "too_large"
    );
    // The limit is configurable.
    let small = RequestVerifier::new(
        key().verifying_key(),
        GW,
        VerifyOptions {
            max_bytes: 100,
            ..VerifyOptions::default()
        },
    );
    assert_eq!(
        small
            .verify(sign_request(&live_claims(), &key()).as_bytes(), NOW, known)
            .unwrap_err()
            .reason(),
        "too_large"
    );
}

#[test]
fn non_utf8_and_nested_garbage_are_malformed() {
    let k = key();
    assert!(verifier()
        .verify(b"\xff\xfe.\x00\x01.\x80", NOW, known)
        .unwrap_err()
        .reason()
        .starts_with("malformed"));
    // Signed payloads that are not claims.
    let deep = "[".repeat(5000);
    let payloads: [&[u8]; 5] = [
        b"\xff\xfe\xfd",
        deep.as_bytes(),
        b"{\"jti\":{\"a\":[[[[[[[[[]]]]]]]]]}}",
        b"",
        b"null",
    ];
    for p in payloads {
        let r = reason_of(&sign_raw(br#"{"alg":"EdDSA"}"#, p, &k));
        assert_eq!(r, "malformed: claims json");
    }
    // A header that is not JSON, or deeply nested.
    let t = sign_raw("[".repeat(7000).as_bytes(), b"{}", &k);
    assert_eq!(reason_of(&t), "too_large");
    let t = sign_raw(&b"[".repeat(1000), b"{}", &k);
    assert_eq!(reason_of(&t), "malformed: header json");
}

#[test]
fn replay_is_rejected_and_pruned() {
    let g = temp_guard();
    let v = verifier();
    let t = sign_request(&live_claims(), &key());
    v.accept(t.as_bytes(), NOW, known, &g).unwrap();
    let e = v.accept(t.as_bytes(), NOW, known, &g).unwrap_err();
    assert_eq!(e.reason(), "replayed");
    // Same jti, otherwise different request.
    let mut c = live_claims();
    c.duration_s = Some(5);
    assert_eq!(
        v.accept(sign_request(&c, &key()).as_bytes(), NOW, known, &g)
            .unwrap_err()
            .reason(),
        "replayed"
    );
    // An invalid request does not use up its jti.
    let mut c = live_claims();
    c.jti = "req-9".into();
    c.camera = "attic".into();
    assert!(v
        .accept(sign_request(&c, &key()).as_bytes(), NOW, known, &g)
        .is_err());
    assert!(!g.contains("req-9").unwrap());
    // Pruned only after exp.
    assert_eq!(g.prune(NOW + 299).unwrap(), 0);
    assert_eq!(g.len(), 1);
    assert_eq!(g.prune(NOW + 300).unwrap(), 1);
    assert!(g.is_empty());
    // After exp the token is refused as expired anyway.
    assert_eq!(
        v.accept(t.as_bytes(), NOW + 300, known, &g)
            .unwrap_err()
            .reason(),
        "expired"
    );
}

#[test]
fn replay_record_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = sign_request(&live_claims(), &key());
    {
        let g = ReplayGuard::open_in(&open_retry(dir.path())).unwrap();
        verifier().accept(t.as_bytes(), NOW, known, &g).unwrap();
    }
    let g = ReplayGuard::open_in(&open_retry(dir.path())).unwrap();
    assert_eq!(
        verifier()
            .accept(t.as_bytes(), NOW, known, &g)
            .unwrap_err()
            .reason(),
        "replayed"
    );
}

#[test]
fn requests_issued_before_a_reset_are_refused() {
    let v = RequestVerifier::new(
        key().verifying_key(),
        GW,
        VerifyOptions {
            reject_issued_before: Some(NOW - 1),
            ..VerifyOptions::default()
        },
    );
    let t = sign_request(&live_claims(), &key()); // iat = NOW - 5
    assert_eq!(
        v.verify(t.as_bytes(), NOW, known).unwrap_err().reason(),
        "replayed"
    );
    let mut c = live_claims();
    c.iat = NOW;
    v.verify(sign_request(&c, &key()).as_bytes(), NOW, known)
        .unwrap();
}

#[test]
fn peek_jti_only_returns_well_formed_ids() {
    assert_eq!(
        peek_jti(OPENSSL_TOKEN.as_bytes()).as_deref(),
        Some("openssl-1")
    );
    let mut c = live_claims();
    c.jti = "../../x".into();
    assert_eq!(peek_jti(sign_request(&c, &key()).as_bytes()), None);
    assert_eq!(peek_jti(b"garbage"), None);
    // Unverified: a request signed by someone else still yields its id (for the reply only).
    assert_eq!(
        peek_jti(sign_request(&live_claims(), &other_key()).as_bytes()).as_deref(),
        Some("req-1")
    );
}

#[test]
fn claims_serialise_without_absent_fields() {
    let json = serde_json::to_string(&cancel_claims()).unwrap();
    assert!(!json.contains("from") && !json.contains("duration_s") && !json.contains("reason"));
    let back: Claims = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cancel_claims());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Random bytes never panic the parser or the verifier.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_compact(&bytes, MAX_REQUEST_BYTES);
        let _ = verifier().verify(&bytes, NOW, known);
        let _ = peek_jti(&bytes);
    }

    /// Random base64url-ish tokens (three parts of the right alphabet) never panic either.
    #[test]
    fn random_jws_shaped_tokens_never_panic(
        h in "[A-Za-z0-9_-]{0,60}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{0,90}"
    ) {
        let t = format!("{h}.{p}.{s}");
        let r = verifier().verify(t.as_bytes(), NOW, known);
        prop_assert!(r.is_err());
    }

}

proptest! {
    // Debug builds of curve25519-dalek are slow; 64 cases keep this to a few seconds.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any signed JSON payload is either accepted or rejected, never a panic; and flipping any
    /// byte of a valid token never yields an accepted request with other claims.
    #[test]
    fn flipped_byte_never_accepted_with_other_claims(i in 0usize..400, bit in 0u8..8) {
        let t = sign_request(&live_claims(), &key()).into_bytes();
        let i = i % t.len();
        let mut m = t.clone();
        m[i] ^= 1 << bit;
        if let Ok(r) = verifier().verify(&m, NOW, known) {
            // Only possible if the flip changed nothing that is signed (impossible) — or the
            // decoded bytes are identical, which canonical base64 rules out.
            prop_assert_eq!(r, verify(std::str::from_utf8(&t).unwrap()).unwrap());
        }
    }
}
