//! Signed requests from the center: JWS compact serialization (RFC 7515) with EdDSA (Ed25519,
//! RFC 8037), verified with the center's request key.
//!
//! # Format
//!
//! `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`, base64url **without**
//! padding and with canonical trailing bits (RFC 7515 §2); padding, the standard alphabet,
//! whitespace inside, or anything but three parts is `malformed`. Trailing ASCII whitespace
//! after the token (a newline from `mosquitto_pub -f`) is ignored.
//!
//! The header is a JSON object whose `alg` must be `EdDSA`; other header fields are ignored
//! (docs/design.md), `crit` included. The signature (64 bytes) is checked with
//! `verify_strict` (no small-order keys, no malleable `s`) over the ASCII bytes
//! `header "." payload`, before the payload is decoded.
//!
//! The payload is a JSON object of claims ([`Claims`]); unknown claims are ignored, a
//! repeated claim is `malformed`:
//!
//! | claim | kinds | rule |
//! |---|---|---|
//! | `jti` | all | `[A-Za-z0-9_-]{1,64}` (becomes a topic level); never accepted twice |
//! | `iat`, `exp` | all | integers, UTC seconds; `exp > now`, `iat <= now + max_clock_skew`, `iat < exp`, `exp - iat <= max_lifetime` |
//! | `gw` | all | this box's gateway id |
//! | `kind` | all | `live`, `clip` or `cancel` |
//! | `camera` | all | a known camera id |
//! | `duration_s` | live only | integer >= 1 (the consent engine clamps it) |
//! | `from`, `to` | clip only | integers, UTC seconds, `0 <= from < to` <= year 9999 |
//! | `target` | cancel only | the `jti` of the request to cancel (an addition to docs/design.md's list: a cancel must name what it ends, and its own `jti` must be fresh) |
//! | `reason`, `requester` | live, clip: required; cancel: optional | non-empty, at most 512 / 128 bytes, no control characters |
//! | `case` | optional | at most 128 bytes, no control characters |
//! | `emergency` | optional | bool, default false |
//!
//! Fields of another kind (`from` on a live request, …) are `malformed`: an ambiguous request
//! is refused rather than guessed at.
//!
//! # Rejections
//!
//! Every rejection is a [`RequestError`] whose [`RequestError::reason`] is the short string for
//! the `rejected` reply and the audit entry: `too_large`, `malformed: …`, `bad_signature`,
//! `wrong_gateway`, `expired`, `not_yet_valid`, `replayed`, `unknown_camera`,
//! `internal_error`. The checks run in the order of that list (size first, before any
//! parsing; replay last, so an invalid request does not use up its `jti`). Nothing echoes
//! attacker-controlled text in the reason. [`peek_jti`] gives the reply a `request_id` for a
//! rejected request when the payload holds a well-formed `jti` (unverified: use it only to
//! address the reply).
//!
//! # Replay
//!
//! [`ReplayGuard`] keeps every accepted `jti` in a sled tree ([`REPLAY_TREE`]) until its `exp`
//! (after which the request is `expired` anyway), flushed before the request is accepted;
//! [`ReplayGuard::prune`] drops the rest. If the store rebuilt a damaged index the tree starts
//! empty; set [`VerifyOptions::reject_issued_before`] to the time of the rebuild so requests
//! issued before it (which may have been seen) are refused as `replayed`.

use std::borrow::Cow;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::consent;
use crate::protocol::ids::{valid_camera_id, valid_jti};
pub use crate::protocol::request::{
    parse_compact, peek_jti, Claims, Compact, JwsError, RequestKind, MAX_REQUEST_BYTES,
};

/// Name of the sled tree of seen `jti`s.
pub const REPLAY_TREE: &str = "sharing.seen_jti";

const MAX_REASON_BYTES: usize = 512;
const MAX_SHORT_BYTES: usize = 128;
/// 9999-12-31T23:59:59Z: clip times beyond it are malformed (and their ms fit in i64).
const MAX_TIME_S: i64 = 253_402_300_799;

/// The claims as read: everything optional so a missing claim gets its own message. serde's
/// derive refuses a repeated key; unknown keys are ignored.
#[derive(Deserialize)]
struct RawClaims {
    jti: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    gw: Option<String>,
    kind: Option<String>,
    camera: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    duration_s: Option<u64>,
    target: Option<String>,
    reason: Option<String>,
    case: Option<String>,
    requester: Option<String>,
    emergency: Option<bool>,
}

/// What a valid request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RequestBody {
    /// A live feed of up to `duration_s` seconds.
    Live {
        /// Seconds asked for (>= 1).
        duration_s: u64,
    },
    /// A clip of `[from, to)`, UTC seconds.
    Clip {
        /// Start, UTC seconds.
        from: i64,
        /// End (exclusive), UTC seconds.
        to: i64,
    },
    /// End the center's own request `target` (pending or granted).
    Cancel {
        /// The `jti` of the request to end.
        target: String,
    },
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidRequest {
    /// Its id; the grant id and the `{request_id}` topic level.
    pub jti: String,
    /// Issued at, UTC seconds.
    pub iat: i64,
    /// Expires at, UTC seconds.
    pub exp: i64,
    /// The camera.
    pub camera: String,
    /// What it asks for.
    pub body: RequestBody,
    /// Why (empty only for a cancel that gave none).
    pub reason: String,
    /// Case number.
    pub case: Option<String>,
    /// Who asks (empty only for a cancel that gave none).
    pub requester: String,
    /// An emergency.
    pub emergency: bool,
}

impl ValidRequest {
    /// The request as the consent engine takes it; `None` for a cancel (use
    /// [`consent::Engine::cancel`] with `target` and `camera`).
    pub fn to_consent(&self) -> Option<consent::Request> {
        let scope = match &self.body {
            RequestBody::Live { duration_s } => consent::RequestScope::Live {
                duration_s: *duration_s,
            },
            RequestBody::Clip { from, to } => consent::RequestScope::Clip {
                from_ms: from * 1000,
                to_ms: to * 1000,
            },
            RequestBody::Cancel { .. } => return None,
        };
        Some(consent::Request {
            id: self.jti.clone(),
            camera: self.camera.clone(),
            scope,
            emergency: self.emergency,
            reason: self.reason.clone(),
            case: self.case.clone(),
            requester: self.requester.clone(),
        })
    }
}

/// Why a request was rejected (or, for [`RequestError::Store`] and [`RequestError::Key`], could
/// not be checked).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Longer than the limit; not parsed at all.
    #[error("request is {len} bytes, more than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed request; the text says what (static, never echoes input).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `EdDSA` (`none`, `HS256`, …).
    #[error("unsupported JWS alg (only EdDSA is accepted)")]
    UnsupportedAlg,
    /// The signature does not verify with the center's key.
    #[error("bad signature")]
    BadSignature,
    /// `gw` names another box.
    #[error("request is for gateway {gw:?}, not this one")]
    WrongGateway {
        /// The `gw` claim.
        gw: String,
    },
    /// `exp` has passed.
    #[error("request expired at {exp} (now {now})")]
    Expired {
        /// The `exp` claim.
        exp: i64,
        /// The time of the check.
        now: i64,
    },
    /// `iat` is further in the future than the allowed clock skew.
    #[error("request issued at {iat}, in the future (now {now})")]
    NotYetValid {
        /// The `iat` claim.
        iat: i64,
        /// The time of the check.
        now: i64,
    },
    /// The `jti` was accepted before (or the request predates a reset of the replay record).
    #[error("request {jti} was already received")]
    Replayed {
        /// The `jti`.
        jti: String,
    },
    /// The camera is not one of this box's.
    #[error("unknown camera {camera:?}")]
    UnknownCamera {
        /// The `camera` claim (a well-formed id).
        camera: String,
    },
    /// The replay record could not be read or written.
    #[error("replay record: {0}")]
    Store(#[from] sled::Error),
    /// The center's request key could not be read.
    #[error("center request key: {0}")]
    Key(String),
}

impl From<JwsError> for RequestError {
    fn from(e: JwsError) -> RequestError {
        match e {
            JwsError::TooLarge { len, max } => RequestError::TooLarge { len, max },
            JwsError::Malformed(what) => RequestError::Malformed(what),
            JwsError::UnsupportedAlg => RequestError::UnsupportedAlg,
            JwsError::BadSignature => RequestError::BadSignature,
            JwsError::Key(e) => RequestError::Key(format!("not an Ed25519 public key in PEM: {e}")),
        }
    }
}

/// Reads the center's Ed25519 public key from PEM (SPKI, as `openssl pkey -pubout` writes it).
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, RequestError> {
    Ok(crate::protocol::request::public_key_from_pem(pem)?)
}

impl RequestError {
    /// The short reason for the `rejected` reply and the audit entry.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            RequestError::TooLarge { .. } => "too_large".into(),
            RequestError::Malformed(what) => format!("malformed: {what}").into(),
            RequestError::UnsupportedAlg => "malformed: alg must be EdDSA".into(),
            RequestError::BadSignature => "bad_signature".into(),
            RequestError::WrongGateway { .. } => "wrong_gateway".into(),
            RequestError::Expired { .. } => "expired".into(),
            RequestError::NotYetValid { .. } => "not_yet_valid".into(),
            RequestError::Replayed { .. } => "replayed".into(),
            RequestError::UnknownCamera { .. } => "unknown_camera".into(),
            RequestError::Store(_) | RequestError::Key(_) => "internal_error".into(),
        }
    }
}

/// Limits of [`RequestVerifier`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Largest request, bytes (default [`MAX_REQUEST_BYTES`]).
    pub max_bytes: usize,
    /// How far `iat` may lie in the future, seconds (default 300).
    pub max_clock_skew_s: i64,
    /// Longest `exp - iat`, seconds (default 3600); bounds how long a `jti` must be kept.
    pub max_lifetime_s: i64,
    /// Refuse, as `replayed`, requests issued before this time (UTC seconds): set it when the
    /// replay record was lost (a rebuilt index).
    pub reject_issued_before: Option<i64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            max_bytes: MAX_REQUEST_BYTES,
            max_clock_skew_s: 300,
            max_lifetime_s: 3600,
            reject_issued_before: None,
        }
    }
}

fn text(
    v: Option<String>,
    max: usize,
    missing: &'static str,
    bad: &'static str,
) -> Result<Option<String>, RequestError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Err(RequestError::Malformed(missing)),
        Some(s) if s.len() > max || s.chars().any(char::is_control) => {
            Err(RequestError::Malformed(bad))
        }
        Some(s) => Ok(Some(s)),
    }
}

/// A token whose signature verified with the center's key; its claims are not checked yet.
#[derive(Debug)]
pub struct Authentic<'t>(Compact<'t>);

/// Verifies requests for one gateway with the center's key.
#[derive(Clone, Debug)]
pub struct RequestVerifier {
    key: VerifyingKey,
    gateway_id: String,
    options: VerifyOptions,
}

impl RequestVerifier {
    /// A verifier for `gateway_id` (the CN of this box's certificate).
    pub fn new(key: VerifyingKey, gateway_id: impl Into<String>, options: VerifyOptions) -> Self {
        RequestVerifier {
            key,
            gateway_id: gateway_id.into(),
            options,
        }
    }

    /// A verifier with the key read from PEM ([`public_key_from_pem`]).
    pub fn from_pem(
        pem: &str,
        gateway_id: impl Into<String>,
        options: VerifyOptions,
    ) -> Result<Self, RequestError> {
        Ok(Self::new(public_key_from_pem(pem)?, gateway_id, options))
    }

    /// The options.
    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The same verifier, refusing requests issued before `t` (UTC seconds) as `replayed`
    /// (see [`VerifyOptions::reject_issued_before`]); the later of `t` and any earlier cutoff.
    pub fn reject_issued_before(mut self, t: i64) -> Self {
        self.options.reject_issued_before = Some(
            self.options
                .reject_issued_before
                .map_or(t, |old| old.max(t)),
        );
        self
    }

    /// `token` as a JWS signed by the center's key (size, format and signature only; no claim
    /// is read yet): what runs before anything about a request is written down. The claims
    /// are then checked once, with [`RequestVerifier::accept_authentic`].
    pub fn authentic<'t>(&self, token: &'t [u8]) -> Result<Authentic<'t>, RequestError> {
        let c = parse_compact(token, self.options.max_bytes)?;
        let sig = Signature::from_bytes(&c.signature);
        self.key
            .verify_strict(c.signing_input, &sig)
            .map_err(|_| RequestError::BadSignature)?;
        Ok(Authentic(c))
    }

    /// Every check, replay included: what the uplink calls for each request. `now_s` is UTC
    /// seconds; `is_known_camera` says whether a (well-formed) camera id is one of this box's.
    pub fn accept(
        &self,
        token: &[u8],
        now_s: i64,
        is_known_camera: impl Fn(&str) -> bool,
        replay: &ReplayGuard,
    ) -> Result<ValidRequest, RequestError> {
        self.accept_authentic(&self.authentic(token)?, now_s, is_known_camera, replay)
    }

    /// [`RequestVerifier::accept`] for a token whose signature [`RequestVerifier::authentic`]
    /// has checked already: the claims, then replay.
    pub fn accept_authentic(
        &self,
        token: &Authentic<'_>,
        now_s: i64,
        is_known_camera: impl Fn(&str) -> bool,
        replay: &ReplayGuard,
    ) -> Result<ValidRequest, RequestError> {
        let req = self.claims(token, now_s, is_known_camera)?;
        replay.check_and_record(&req.jti, req.exp)?;
        Ok(req)
    }

    /// Every check **except replay** (see [`RequestVerifier::accept`]).
    pub fn verify(
        &self,
        token: &[u8],
        now_s: i64,
        is_known_camera: impl Fn(&str) -> bool,
    ) -> Result<ValidRequest, RequestError> {
        self.claims(&self.authentic(token)?, now_s, is_known_camera)
    }

    /// The checks of the claims of an authentic token, in the documented order.
    fn claims(
        &self,
        token: &Authentic<'_>,
        now_s: i64,
        is_known_camera: impl Fn(&str) -> bool,
    ) -> Result<ValidRequest, RequestError> {
        use RequestError::Malformed;
        let c = &token.0;
        let raw: RawClaims =
            serde_json::from_slice(&c.payload).map_err(|_| Malformed("claims json"))?;

        let gw = raw.gw.ok_or(Malformed("missing gw"))?;
        if gw != self.gateway_id {
            return Err(RequestError::WrongGateway { gw });
        }
        let iat = raw.iat.ok_or(Malformed("missing iat"))?;
        let exp = raw.exp.ok_or(Malformed("missing exp"))?;
        if exp <= now_s {
            return Err(RequestError::Expired { exp, now: now_s });
        }
        if iat > now_s.saturating_add(self.options.max_clock_skew_s) {
            return Err(RequestError::NotYetValid { iat, now: now_s });
        }
        if exp <= iat {
            return Err(Malformed("exp not after iat"));
        }
        if exp.saturating_sub(iat) > self.options.max_lifetime_s {
            return Err(Malformed("exp too far after iat"));
        }
        let jti = raw.jti.ok_or(Malformed("missing jti"))?;
        if !valid_jti(&jti) {
            return Err(Malformed("jti must match [A-Za-z0-9_-]{1,64}"));
        }
        if self.options.reject_issued_before.is_some_and(|t| iat < t) {
            return Err(RequestError::Replayed { jti });
        }
        let kind = match raw.kind.as_deref() {
            Some("live") => RequestKind::Live,
            Some("clip") => RequestKind::Clip,
            Some("cancel") => RequestKind::Cancel,
            Some(_) => return Err(Malformed("kind must be live, clip or cancel")),
            None => return Err(Malformed("missing kind")),
        };
        let camera = raw.camera.ok_or(Malformed("missing camera"))?;
        if !valid_camera_id(&camera) {
            return Err(Malformed("camera is not a valid camera id"));
        }
        let body = match kind {
            RequestKind::Live => {
                if raw.from.is_some() || raw.to.is_some() || raw.target.is_some() {
                    return Err(Malformed("live request with clip or cancel fields"));
                }
                match raw.duration_s {
                    Some(d) if d >= 1 => RequestBody::Live { duration_s: d },
                    Some(_) => return Err(Malformed("duration_s must be at least 1")),
                    None => return Err(Malformed("missing duration_s")),
                }
            }
            RequestKind::Clip => {
                if raw.duration_s.is_some() || raw.target.is_some() {
                    return Err(Malformed("clip request with live or cancel fields"));
                }
                let from = raw.from.ok_or(Malformed("missing from"))?;
                let to = raw.to.ok_or(Malformed("missing to"))?;
                if !(0..=MAX_TIME_S).contains(&from) || !(0..=MAX_TIME_S).contains(&to) {
                    return Err(Malformed("from/to out of range"));
                }
                if from >= to {
                    return Err(Malformed("from must be before to"));
                }
                RequestBody::Clip { from, to }
            }
            RequestKind::Cancel => {
                if raw.duration_s.is_some() || raw.from.is_some() || raw.to.is_some() {
                    return Err(Malformed("cancel request with live or clip fields"));
                }
                let target = raw.target.ok_or(Malformed("missing target"))?;
                if !valid_jti(&target) {
                    return Err(Malformed("target must match [A-Za-z0-9_-]{1,64}"));
                }
                RequestBody::Cancel { target }
            }
        };
        let reason = text(
            raw.reason,
            MAX_REASON_BYTES,
            "empty reason",
            "reason too long or has control characters",
        )?;
        let requester = text(
            raw.requester,
            MAX_SHORT_BYTES,
            "empty requester",
            "requester too long or has control characters",
        )?;
        let case = text(
            raw.case,
            MAX_SHORT_BYTES,
            "empty case",
            "case too long or has control characters",
        )?;
        if kind != RequestKind::Cancel {
            if reason.is_none() {
                return Err(Malformed("missing reason"));
            }
            if requester.is_none() {
                return Err(Malformed("missing requester"));
            }
        }
        if !is_known_camera(&camera) {
            return Err(RequestError::UnknownCamera { camera });
        }
        Ok(ValidRequest {
            jti,
            iat,
            exp,
            camera,
            body,
            reason: reason.unwrap_or_default(),
            case,
            requester: requester.unwrap_or_default(),
            emergency: raw.emergency.unwrap_or(false),
        })
    }
}

/// Remembers accepted `jti`s until their `exp`, in a sled tree (key `jti`, value `exp` as
/// 8 bytes big-endian).
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    tree: sled::Tree,
}

impl ReplayGuard {
    /// The guard over `db`'s [`REPLAY_TREE`].
    pub fn open_in(db: &sled::Db) -> Result<Self, RequestError> {
        Ok(ReplayGuard {
            tree: db.open_tree(REPLAY_TREE)?,
        })
    }

    /// The guard over `tree`.
    pub fn new(tree: sled::Tree) -> Self {
        ReplayGuard { tree }
    }

    /// Records `jti` (kept until `exp`, UTC seconds) and flushes, or fails with
    /// [`RequestError::Replayed`] if it was recorded before. Atomic: of two concurrent calls
    /// with one `jti`, one fails.
    pub fn check_and_record(&self, jti: &str, exp: i64) -> Result<(), RequestError> {
        let swapped = self.tree.compare_and_swap(
            jti.as_bytes(),
            None as Option<&[u8]>,
            Some(&exp.to_be_bytes()[..]),
        )?;
        if swapped.is_err() {
            return Err(RequestError::Replayed {
                jti: jti.to_owned(),
            });
        }
        self.tree.flush()?;
        Ok(())
    }

    /// Whether `jti` is recorded.
    pub fn contains(&self, jti: &str) -> Result<bool, RequestError> {
        Ok(self.tree.contains_key(jti.as_bytes())?)
    }

    /// Forgets `jti`s whose `exp` is at or before `now_s` (such requests are `expired` anyway).
    /// Returns how many. Unreadable values are dropped too.
    pub fn prune(&self, now_s: i64) -> Result<usize, RequestError> {
        let mut n = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let exp = <[u8; 8]>::try_from(&v[..]).map_or(i64::MIN, i64::from_be_bytes);
            if exp <= now_s {
                self.tree.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many `jti`s are recorded.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether none is recorded.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests;
