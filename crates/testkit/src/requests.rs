//! Signed requests as a city center makes them, for tests that play the police side without
//! `porchlight-center`: the request key written where a box's config can point at it, and the
//! claims of a live request.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use porchlight_protocol::request::{Claims, RequestKind};

/// A request key from a fixed seed (tests only) and its public half written as SPKI PEM to
/// `dir/name` (what `uplink.center_request_key_file` takes); returns both.
pub fn request_key(dir: &Path, name: &str, seed: u8) -> (SigningKey, PathBuf) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let path = dir.join(name);
    std::fs::write(
        &path,
        key.verifying_key()
            .to_public_key_pem(Default::default())
            .expect("an Ed25519 key encodes"),
    )
    .expect("write the request key");
    (key, path)
}

/// The claims of a live request for `camera` of gateway `gw`, issued at `now_s` (UTC seconds),
/// valid five minutes, asking ten seconds.
pub fn live_claims(jti: &str, gw: &str, camera: &str, now_s: i64) -> Claims {
    Claims {
        jti: jti.into(),
        iat: now_s,
        exp: now_s + 300,
        gw: gw.into(),
        kind: RequestKind::Live,
        camera: camera.into(),
        from: None,
        to: None,
        duration_s: Some(10),
        target: None,
        reason: Some("test".into()),
        case: None,
        requester: Some("officer".into()),
        emergency: false,
    }
}
