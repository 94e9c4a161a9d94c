//! Signed requests, center → box: JWS compact serialization (RFC 7515) with EdDSA (Ed25519,
//! RFC 8037), and the claims they carry.
//!
//! `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`, base64url **without**
//! padding and with canonical trailing bits (RFC 7515 §2); padding, the standard alphabet,
//! whitespace inside, or anything but three parts is malformed. Trailing ASCII whitespace
//! after the token (a newline from `mosquitto_pub -f`) is ignored. The header's `alg` must be
//! `EdDSA`; other header fields are ignored. The payload is [`Claims`] as JSON.
//!
//! This module is the format both sides share: the center signs with [`sign_request`]; the
//! box splits with [`parse_compact`] and then checks signature and claims itself
//! (`porchlight::sharing::request`, which holds the rules of each claim and the replay guard).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::valid_jti;

/// Largest request accepted, bytes; larger ones are refused before any parsing.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A live feed.
    Live,
    /// A clip of buffered video.
    Clip,
    /// Cancel the center's own earlier request (`target`).
    Cancel,
}

impl RequestKind {
    /// The word, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Live => "live",
            RequestKind::Clip => "clip",
            RequestKind::Cancel => "cancel",
        }
    }
}

/// The claims of a request, as the center signs them ([`sign_request`]). Absent options are
/// left out of the JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Unique id, `[A-Za-z0-9_-]{1,64}`.
    pub jti: String,
    /// Issued at, UTC seconds.
    pub iat: i64,
    /// Expires at, UTC seconds.
    pub exp: i64,
    /// The gateway id it is for.
    pub gw: String,
    /// What it asks for.
    pub kind: RequestKind,
    /// The camera id.
    pub camera: String,
    /// Clip start, UTC seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Clip end (exclusive), UTC seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Live duration, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// For `cancel`: the `jti` of the request to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Case number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// An emergency.
    #[serde(default)]
    pub emergency: bool,
}

/// Why a token is not a well-formed EdDSA JWS (or a key not an Ed25519 key).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Longer than the limit; not parsed at all.
    #[error("request is {len} bytes, more than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed JWS; the text says what (static, never echoes input).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `EdDSA` (`none`, `HS256`, …).
    #[error("unsupported JWS alg (only EdDSA is accepted)")]
    UnsupportedAlg,
    /// The signature part is not 64 bytes.
    #[error("bad signature")]
    BadSignature,
    /// A public key that is not Ed25519 SPKI PEM.
    #[error("not an Ed25519 public key in PEM: {0}")]
    Key(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Reads the center's Ed25519 public key from PEM (SPKI, `-----BEGIN PUBLIC KEY-----`, as
/// `openssl pkey -pubout` writes it).
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, JwsError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| JwsError::Key(e.to_string()))
}

/// The three decoded parts of a JWS compact serialization, signature not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compact<'a> {
    /// `header "." payload`, the signed bytes.
    pub signing_input: &'a [u8],
    /// The decoded payload (claims JSON).
    pub payload: Vec<u8>,
    /// The signature.
    pub signature: [u8; 64],
}

fn b64(part: &[u8], what: &'static str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed(what))
}

/// Splits and decodes a JWS compact serialization and checks its header (`alg` = `EdDSA`).
/// Does not check the signature or the claims: the entry point for fuzzing.
pub fn parse_compact(token: &[u8], max_bytes: usize) -> Result<Compact<'_>, JwsError> {
    if token.len() > max_bytes {
        return Err(JwsError::TooLarge {
            len: token.len(),
            max: max_bytes,
        });
    }
    let end = token
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let token = &token[..end];
    if !token
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(JwsError::Malformed(
            "not base64url JWS compact serialization",
        ));
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("JWS must have three parts"));
    };
    let header = b64(h, "header base64")?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| JwsError::Malformed("header json"))?;
    if header.alg != "EdDSA" {
        return Err(JwsError::UnsupportedAlg);
    }
    let sig = b64(s, "signature base64")?;
    let signature: [u8; 64] = sig.try_into().map_err(|_| JwsError::BadSignature)?;
    let payload = b64(p, "payload base64")?;
    Ok(Compact {
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// The `jti` of a request if its payload holds a well-formed one, **without** verifying
/// anything: only to address the `rejected` reply.
pub fn peek_jti(token: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct J {
        jti: String,
    }
    let c = parse_compact(token, MAX_REQUEST_BYTES).ok()?;
    let j: J = serde_json::from_slice(&c.payload).ok()?;
    valid_jti(&j.jti).then_some(j.jti)
}

/// Signs claims as the center does: header `{"alg":"EdDSA","typ":"JWT"}`, base64url without
/// padding.
pub fn sign_request(claims: &Claims, key: &SigningKey) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    sign_raw(br#"{"alg":"EdDSA","typ":"JWT"}"#, &payload, key)
}

/// Signs arbitrary header and payload bytes (tests build hostile requests with it).
pub fn sign_raw(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn claims() -> Claims {
        Claims {
            jti: "r1".into(),
            iat: 10,
            exp: 20,
            gw: "gw-1".into(),
            kind: RequestKind::Live,
            camera: "front".into(),
            from: None,
            to: None,
            duration_s: Some(30),
            target: None,
            reason: Some("why".into()),
            case: None,
            requester: Some("officer".into()),
            emergency: false,
        }
    }

    #[test]
    fn a_signed_request_parses_back_and_its_signature_verifies() {
        let token = sign_request(&claims(), &key());
        let c = parse_compact(token.as_bytes(), MAX_REQUEST_BYTES).unwrap();
        let back: Claims = serde_json::from_slice(&c.payload).unwrap();
        assert_eq!(back, claims());
        let sig = ed25519_dalek::Signature::from_bytes(&c.signature);
        key()
            .verifying_key()
            .verify_strict(c.signing_input, &sig)
            .unwrap();
        assert_eq!(peek_jti(token.as_bytes()).as_deref(), Some("r1"));
    }

    #[test]
    fn absent_options_are_left_out_of_the_json() {
        let v = serde_json::to_value(claims()).unwrap();
        for k in ["from", "to", "target", "case"] {
            assert!(v.get(k).is_none(), "{k}");
        }
        assert_eq!(v["kind"], "live");
    }

    #[test]
    fn malformed_tokens_are_refused_before_the_signature() {
        assert_eq!(
            parse_compact(&[b'a'; 100], 10),
            Err(JwsError::TooLarge { len: 100, max: 10 })
        );
        assert!(matches!(
            parse_compact(b"a.b", 100),
            Err(JwsError::Malformed(_))
        ));
        let none = sign_raw(br#"{"alg":"none"}"#, b"{}", &key());
        assert_eq!(
            parse_compact(none.as_bytes(), 1000),
            Err(JwsError::UnsupportedAlg)
        );
        let padded = format!("{}=", sign_request(&claims(), &key()));
        assert!(parse_compact(padded.as_bytes(), 1000).is_err());
    }
}
