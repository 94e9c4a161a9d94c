//! The audit log: an append-only, hash-chained record of every access, in a sled tree.
//!
//! The resident reads it; the center holds an anchor (the latest `seq` and `hash`, sent in
//! every heartbeat) and receives every entry on `{root}/gw/{gw}/audit`, so an entry edited,
//! removed, inserted or reordered after the fact shows.
//!
//! # Entry
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `seq` | integer | 1, 2, 3, … without gaps |
//! | `ts` | integer | UTC milliseconds when it was appended (given by the caller) |
//! | `kind` | string | [`AuditKind`], snake_case |
//! | `actor` | string | [`Actor`]: `resident`, `center` or `gateway` |
//! | `request_id` | string or null | the request (`jti`) concerned |
//! | `camera` | string or null | the camera concerned |
//! | `detail` | object | anything else (reason, case, requester, bytes, rule, …) |
//! | `prev` | string | `hash` of entry `seq - 1`; 64 `0`s for `seq` 1 |
//! | `hash` | string | see below |
//!
//! # Canonical encoding and hash
//!
//! `canonical(entry)` is the entry **without** `hash`, as JSON in the JSON Canonicalization
//! Scheme (RFC 8785, "JCS"), which for the values allowed here is simply:
//! - no whitespace anywhere; UTF-8;
//! - object members sorted by key (keys are ASCII, so byte order, UTF-16 order and JCS order
//!   agree); the entry's own keys in order: `actor, camera, detail, kind, prev, request_id,
//!   seq, ts`;
//! - strings escaped as JSON requires and no more: `"` → `\"`, `\` → `\\`, U+0008 → `\b`,
//!   U+0009 → `\t`, U+000A → `\n`, U+000C → `\f`, U+000D → `\r`, other U+0000..U+001F →
//!   `\u00xx` (lowercase hex); everything else, `/` and non-ASCII included, as itself;
//! - numbers are integers only, written in decimal without `+`, leading zeros or exponent,
//!   with magnitude at most 2^53 − 1 (so JCS's number rule gives the same digits); `true`,
//!   `false`, `null` as such.
//!
//! [`append`](AuditLog::append) refuses a `detail` that would break these rules (a float, a
//! non-ASCII key, a larger integer) with [`AuditError::InvalidDetail`].
//!
//! `hash = lowercase_hex(SHA-256(prev_bytes || canonical(entry)))`, where `prev_bytes` is the
//! 32 raw bytes that `prev` spells in hex. To re-verify an entry received on the audit topic
//! (which is canonical JSON *with* `hash`, i.e. exactly the stored bytes), the center removes
//! `hash`, re-encodes with any JCS implementation, and hashes as above.
//!
//! Example, `seq` 1 (detail keys sorted, no whitespace):
//!
//! ```text
//! {"actor":"center","camera":"porch","detail":{"reason":"burglary"},"kind":"request_received","prev":"000…000","request_id":"r1","seq":1,"ts":1700000000000}
//! ```
//!
//! # Storage
//!
//! Tree `audit` ([`TREE`]): key = `seq` as 8 bytes big-endian (so key order is `seq` order),
//! value = canonical JSON with `hash`. [`AuditLog::append`] holds a mutex while it takes the
//! next `seq` and inserts (`compare_and_swap` from empty, so a second writer on the same tree
//! is detected, not silently overwritten), then flushes sled (fsync) *outside* the mutex, so
//! concurrent appends share flushes; it returns only after its own entry is durable. sled's
//! log is replayed as a prefix after a crash, so a durable entry never follows a lost one.
//!
//! One [`AuditLog`] per database: share it as `Arc<AuditLog>`.
//!
//! `bytes_sent` entries should be batched by the caller (per grant, or per minute of a live
//! feed), not written per fragment: each append is an fsync.
//!
//! # What verification can and cannot see
//!
//! [`AuditLog::verify`] walks the chain and reports the first broken `seq`: an edited entry
//! (its hash no longer matches), a removed one (a gap), one inserted or reordered (key and
//! `seq` disagree, or `prev` does not match), entries removed from the start (the first is not
//! `seq` 1 with a zero `prev`). Removing the *newest* entries, or rewriting the whole chain
//! consistently, leaves a valid chain: only an anchor held elsewhere catches that, hence
//! [`AuditLog::verify_against`] with the center's last `(seq, hash)`.
//!
//! # After a damaged index
//!
//! The store moves a damaged sled database aside (`index.broken-<time>/`) and starts a new one
//! (see [`crate::store`]); this tree then starts empty, so the chain restarts at `seq` 1. That
//! is visible, not hidden: the center's anchor no longer matches ([`AuditError::Truncated`] or
//! [`AuditError::AnchorMismatch`]). The daemon should make the first entry of a new chain a
//! [`AuditKind::LogStarted`] whose detail says why (`{"reason":"index_rebuilt","previous":
//! "index.broken-…"}`, or `{"reason":"new"}` on first start), and publish it; the old chain
//! stays verifiable offline by opening the moved-aside database with [`AuditLog::open`].

#[cfg(test)]
mod tests;

use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Name of the sled tree.
pub const TREE: &str = "audit";

/// Largest canonical `detail`, bytes.
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;

/// Largest integer magnitude allowed in `detail` (2^53 − 1, exact in every JSON reader).
const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// `prev` of the first entry.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records (snake_case in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// The first entry of a chain: a new database, or one rebuilt after damage.
    LogStarted,
    /// A request from the center arrived and was valid.
    RequestReceived,
    /// A request was rejected (bad signature, wrong gateway, expired, replayed, …).
    RequestRejected,
    /// The consent decision on a request (granted, pending, denied).
    Decision,
    /// A grant began (by rule or by the resident's approval).
    GrantStart,
    /// A grant ended (expired, revoked, paused, cancelled, …).
    GrantEnd,
    /// Video bytes left the box for a grant (batched).
    BytesSent,
    /// The resident exported a clip locally.
    ClipExported,
    /// A clip was fully sent to the center.
    ClipSent,
    /// The resident revoked a grant.
    Revoke,
    /// The resident paused all sharing.
    Pause,
    /// The resident resumed sharing.
    Resume,
    /// The resident changed a camera's consent rules.
    ConsentRuleChanged,
    /// The box was paired with the center.
    Pairing,
    /// A camera was added.
    CameraAdded,
    /// A camera was removed.
    CameraRemoved,
}

impl AuditKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LogStarted => "log_started",
            AuditKind::RequestReceived => "request_received",
            AuditKind::RequestRejected => "request_rejected",
            AuditKind::Decision => "decision",
            AuditKind::GrantStart => "grant_start",
            AuditKind::GrantEnd => "grant_end",
            AuditKind::BytesSent => "bytes_sent",
            AuditKind::ClipExported => "clip_exported",
            AuditKind::ClipSent => "clip_sent",
            AuditKind::Revoke => "revoke",
            AuditKind::Pause => "pause",
            AuditKind::Resume => "resume",
            AuditKind::ConsentRuleChanged => "consent_rule_changed",
            AuditKind::Pairing => "pairing",
            AuditKind::CameraAdded => "camera_added",
            AuditKind::CameraRemoved => "camera_removed",
        }
    }
}

/// Who caused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The resident (web UI or CLI).
    Resident,
    /// The city's center (a signed request).
    Center,
    /// The box itself (expiry, sending, start-up).
    Gateway,
}

impl Actor {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Resident => "resident",
            Actor::Center => "center",
            Actor::Gateway => "gateway",
        }
    }
}

/// An entry to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// UTC milliseconds.
    pub ts: i64,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// The request concerned.
    pub request_id: Option<String>,
    /// The camera concerned.
    pub camera: Option<String>,
    /// Anything else: a JSON object (integers only, ASCII keys; see the module doc).
    pub detail: Value,
}

impl NewEntry {
    /// An entry with no request, no camera and an empty detail.
    pub fn new(ts: i64, kind: AuditKind, actor: Actor) -> Self {
        NewEntry {
            ts,
            kind,
            actor,
            request_id: None,
            camera: None,
            detail: Value::Object(Map::new()),
        }
    }

    /// Sets the request id.
    pub fn request(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the camera.
    pub fn camera(mut self, camera: impl Into<String>) -> Self {
        self.camera = Some(camera.into());
        self
    }

    /// Sets the detail object.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// An entry of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// UTC milliseconds.
    pub ts: i64,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// The request concerned.
    pub request_id: Option<String>,
    /// The camera concerned.
    pub camera: Option<String>,
    /// Anything else.
    pub detail: Map<String, Value>,
    /// `hash` of the previous entry (lowercase hex), [`ZERO_HASH`] for `seq` 1.
    pub prev: String,
    /// `SHA-256(prev_bytes || canonical)`, lowercase hex.
    pub hash: String,
}

impl Entry {
    /// The canonical encoding without `hash` (what is hashed).
    pub fn canonical(&self) -> Result<Vec<u8>, AuditError> {
        self.encode(false)
    }

    /// The canonical encoding with `hash`: the stored bytes and the audit topic's payload.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, AuditError> {
        self.encode(true)
    }

    /// The hash this entry should have, from its fields and `prev`.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        let prev = decode_hash(&self.prev).ok_or_else(|| {
            AuditError::InvalidDetail(format!("prev {:?} is not 64 hex digits", self.prev))
        })?;
        Ok(chain_hash(&prev, &self.canonical()?))
    }

    fn encode(&self, with_hash: bool) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(256);
        let opt = |out: &mut Vec<u8>, v: &Option<String>| match v {
            Some(s) => write_str(out, s),
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"actor\":");
        write_str(&mut out, self.actor.as_str());
        out.extend_from_slice(b",\"camera\":");
        opt(&mut out, &self.camera);
        out.extend_from_slice(b",\"detail\":");
        write_object(&mut out, &self.detail).map_err(AuditError::InvalidDetail)?;
        if with_hash {
            out.extend_from_slice(b",\"hash\":");
            write_str(&mut out, &self.hash);
        }
        out.extend_from_slice(b",\"kind\":");
        write_str(&mut out, self.kind.as_str());
        out.extend_from_slice(b",\"prev\":");
        write_str(&mut out, &self.prev);
        out.extend_from_slice(b",\"request_id\":");
        opt(&mut out, &self.request_id);
        write!(out, ",\"seq\":{},\"ts\":{}}}", self.seq, self.ts).expect("write to a Vec");
        Ok(out)
    }
}

fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    hex::encode(h.finalize())
}

fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as RFC 8785 asks: the short forms for \b \t \n \f \r, \u00xx
    // (lowercase) for other controls, `"` and `\`, nothing else.
    serde_json::to_writer(out, s).expect("write to a Vec");
}

fn write_object(out: &mut Vec<u8>, m: &Map<String, Value>) -> Result<(), String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if !k.is_ascii() {
            return Err(format!("detail key {k:?} is not ASCII"));
        }
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, &m[k])?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INT {
                    return Err(format!("integer {i} is beyond 2^53-1"));
                }
                write!(out, "{i}").expect("write to a Vec");
            } else if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INT {
                    return Err(format!("integer {u} is beyond 2^53-1"));
                }
                write!(out, "{u}").expect("write to a Vec");
            } else {
                return Err(format!("number {n} is not an integer"));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x)?;
            }
            out.push(b']');
        }
        Value::Object(m) => write_object(out, m)?,
    }
    Ok(())
}

/// What is wrong at the `seq` that [`AuditError::Broken`] names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum Break {
    /// The stored bytes are not an entry.
    Undecodable,
    /// The entry stored under key `key_seq` says it is `seq` (moved or reordered).
    KeyMismatch {
        /// The seq of the key it is stored under.
        key_seq: u64,
    },
    /// Entry `expected` is missing (removed); the chain continues at the reported seq.
    Missing {
        /// The seq that should have come next.
        expected: u64,
    },
    /// The first entry is not `seq` 1 with a zero `prev` (entries removed from the start).
    BadStart,
    /// `prev` is not the previous entry's hash (an entry inserted, removed or replaced before).
    PrevMismatch,
    /// The entry's hash does not match its content (the entry was edited).
    HashMismatch,
}

/// A chain that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many entries were checked.
    pub entries: u64,
    /// The last seq (0 for an empty log).
    pub last_seq: u64,
    /// The last hash ([`ZERO_HASH`] for an empty log).
    pub last_hash: String,
}

/// The newest entry's `seq` and `hash`: the anchor sent in every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last seq, 0 when empty.
    pub seq: u64,
    /// Its hash, lowercase hex; [`ZERO_HASH`] when empty.
    pub hash: String,
}

/// Which entries [`AuditLog::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this camera.
    pub camera: Option<String>,
    /// Only this request.
    pub request_id: Option<String>,
    /// Only this kind.
    pub kind: Option<AuditKind>,
    /// Only entries with `ts >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only entries with `seq > after_seq` (paging).
    pub after_seq: Option<u64>,
    /// At most this many (the first found in the chosen order).
    pub limit: Option<usize>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl Filter {
    fn matches(&self, e: &Entry) -> bool {
        self.camera
            .as_ref()
            .is_none_or(|c| e.camera.as_ref() == Some(c))
            && self
                .request_id
                .as_ref()
                .is_none_or(|r| e.request_id.as_ref() == Some(r))
            && self.kind.is_none_or(|k| e.kind == k)
            && self.since_ms.is_none_or(|t| e.ts >= t)
    }
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// sled failed (reading, inserting or flushing).
    #[error("audit store: {0}")]
    Db(#[from] sled::Error),
    /// The detail is not a JSON object that the canonical encoding allows (a float, a
    /// non-ASCII key, an integer beyond 2^53 − 1, too large).
    #[error("invalid audit detail: {0}")]
    InvalidDetail(String),
    /// A stored entry cannot be decoded (listing or opening).
    #[error("audit entry {seq} is corrupt: {reason}")]
    Corrupt {
        /// The key's seq.
        seq: u64,
        /// What failed.
        reason: String,
    },
    /// Another writer appended under the same seq (two logs open on one tree).
    #[error("audit entry {seq} was written by another writer")]
    Conflict {
        /// The seq taken.
        seq: u64,
    },
    /// The chain is broken at `seq`.
    #[error("audit chain broken at seq {seq}: {problem:?}")]
    Broken {
        /// The first seq (key) where the chain does not hold.
        seq: u64,
        /// What is wrong there.
        problem: Break,
    },
    /// The chain ends before the anchor: its newest entries were removed (or the log restarted).
    #[error("audit chain ends at seq {last_seq}, before the anchor at seq {anchor_seq}")]
    Truncated {
        /// The anchor's seq.
        anchor_seq: u64,
        /// The last seq present.
        last_seq: u64,
    },
    /// The entry at the anchor's seq has another hash: the chain was rewritten.
    #[error("audit entry {seq} does not match the anchor hash")]
    AnchorMismatch {
        /// The anchor's seq.
        seq: u64,
    },
    /// Writing an export failed.
    #[error("writing the audit export: {0}")]
    Io(#[from] std::io::Error),
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[8 - n..].copy_from_slice(&k[k.len() - n..]);
    u64::from_be_bytes(b)
}

fn decode(k: &[u8], v: &[u8]) -> Result<Entry, AuditError> {
    serde_json::from_slice(v).map_err(|e| AuditError::Corrupt {
        seq: key_seq(k),
        reason: e.to_string(),
    })
}

/// The audit log over one sled tree.
#[derive(Debug)]
pub struct AuditLog {
    tree: sled::Tree,
    head: Mutex<(u64, [u8; 32])>,
}

/// Name of the tree that says which tree holds the current chain (key `current`).
pub const META_TREE: &str = "audit.meta";

impl AuditLog {
    /// Opens the current chain of `db`: [`TREE`], or a newer tree started because an older
    /// chain could not be read (that one is kept untouched for forensics; never a crash loop).
    /// A chain that is empty (first start, or a rebuilt index) or new gets a `log_started`
    /// entry saying why, stamped by `now_ms`.
    pub fn open_current(db: &sled::Db, now_ms: i64) -> Result<Self, AuditError> {
        let meta = db.open_tree(META_TREE)?;
        let current = meta
            .get("current")?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .unwrap_or_else(|| TREE.to_owned());
        let (log, start_reason) = match AuditLog::open(db.open_tree(&current)?) {
            // Empty: first start, or the store rebuilt a damaged index (the old chain is kept
            // in the moved-aside index for offline checks).
            Ok(a) => (a, serde_json::json!({"reason": "new"})),
            Err(e) => {
                let next = format!("{TREE}.{now_ms}");
                tracing::error!(tree = %current, error = %e, new_tree = %next, "Audit chain unreadable; kept as is, starting a new chain");
                meta.insert("current", next.as_bytes())?;
                meta.flush()?;
                let a = AuditLog::open(db.open_tree(&next)?)?;
                let why = serde_json::json!({
                    "reason": "previous_chain_unreadable",
                    "previous_tree": current,
                    "error": e.to_string(),
                });
                (a, why)
            }
        };
        if log.is_empty() {
            log.append(
                NewEntry::new(now_ms, AuditKind::LogStarted, Actor::Gateway).detail(start_reason),
            )?;
        }
        Ok(log)
    }

    /// Opens the log in `db`'s [`TREE`].
    pub fn open_in(db: &sled::Db) -> Result<Self, AuditError> {
        Self::open(db.open_tree(TREE)?)
    }

    /// Opens the log in `tree`, continuing after its newest entry. Fails with
    /// [`AuditError::Corrupt`] if the newest entry cannot be decoded (run
    /// [`AuditLog::verify`]; the chain cannot be continued from it).
    pub fn open(tree: sled::Tree) -> Result<Self, AuditError> {
        let head = match tree.last()? {
            None => (0, [0u8; 32]),
            Some((k, v)) => {
                let e = decode(&k, &v)?;
                let hash = decode_hash(&e.hash).ok_or_else(|| AuditError::Corrupt {
                    seq: e.seq,
                    reason: "hash is not 64 lowercase hex digits".to_owned(),
                })?;
                (key_seq(&k), hash)
            }
        };
        Ok(AuditLog {
            tree,
            head: Mutex::new(head),
        })
    }

    /// Appends an entry and returns it once it is durable (sled flushed).
    pub fn append(&self, new: NewEntry) -> Result<Entry, AuditError> {
        let Value::Object(detail) = new.detail else {
            return Err(AuditError::InvalidDetail("detail is not an object".into()));
        };
        let mut probe = Vec::new();
        write_object(&mut probe, &detail).map_err(AuditError::InvalidDetail)?;
        if probe.len() > MAX_DETAIL_BYTES {
            return Err(AuditError::InvalidDetail(format!(
                "detail is {} bytes, more than {MAX_DETAIL_BYTES}",
                probe.len()
            )));
        }
        let entry = {
            let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            let mut entry = Entry {
                seq: head.0 + 1,
                ts: new.ts,
                kind: new.kind,
                actor: new.actor,
                request_id: new.request_id,
                camera: new.camera,
                detail,
                prev: hex::encode(head.1),
                hash: String::new(),
            };
            entry.hash = chain_hash(&head.1, &entry.canonical()?);
            let bytes = entry.to_json_bytes()?;
            match self
                .tree
                .compare_and_swap(key(entry.seq), None as Option<&[u8]>, Some(bytes))?
            {
                Ok(()) => {}
                Err(_) => return Err(AuditError::Conflict { seq: entry.seq }),
            }
            *head = (
                entry.seq,
                decode_hash(&entry.hash).expect("we just made it"),
            );
            entry
        };
        // Outside the lock: concurrent appends share this fsync.
        self.tree.flush()?;
        Ok(entry)
    }

    /// The newest `seq` and `hash` (for the heartbeat); `(0, ZERO_HASH)` when empty.
    pub fn latest(&self) -> Head {
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        Head {
            seq: head.0,
            hash: hex::encode(head.1),
        }
    }

    /// Whether the log has no entry (a new chain; append [`AuditKind::LogStarted`] first).
    pub fn is_empty(&self) -> bool {
        self.latest().seq == 0
    }

    /// One entry.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, AuditError> {
        match self.tree.get(key(seq))? {
            Some(v) => Ok(Some(decode(&key(seq), &v)?)),
            None => Ok(None),
        }
    }

    /// Entries matching `filter`, in seq order (or newest first).
    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        self.each(filter, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    fn each(
        &self,
        filter: &Filter,
        mut f: impl FnMut(Entry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let start = filter.after_seq.map_or(0, |s| s.saturating_add(1));
        let range = self.tree.range(key(start)..);
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if filter.newest_first {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut n = 0;
        for kv in iter {
            if n >= limit {
                break;
            }
            let (k, v) = kv?;
            let e = decode(&k, &v)?;
            if filter.matches(&e) {
                f(e)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Checks the whole chain; the error names the first broken seq.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut prev = [0u8; 32];
        let mut expected = 1u64;
        let mut entries = 0u64;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let at = key_seq(&k);
            let broken = |problem| AuditError::Broken { seq: at, problem };
            let e: Entry = serde_json::from_slice(&v).map_err(|_| broken(Break::Undecodable))?;
            if e.seq != at {
                return Err(AuditError::Broken {
                    seq: e.seq,
                    problem: Break::KeyMismatch { key_seq: at },
                });
            }
            if entries == 0 && (at != 1 || e.prev != ZERO_HASH) {
                return Err(broken(Break::BadStart));
            }
            if at != expected {
                return Err(broken(Break::Missing { expected }));
            }
            if decode_hash(&e.prev) != Some(prev) {
                return Err(broken(Break::PrevMismatch));
            }
            let canonical = e.canonical().map_err(|_| broken(Break::Undecodable))?;
            let hash = chain_hash(&prev, &canonical);
            if hash != e.hash {
                return Err(broken(Break::HashMismatch));
            }
            prev = decode_hash(&hash).expect("made by chain_hash");
            expected += 1;
            entries += 1;
        }
        Ok(VerifyReport {
            entries,
            last_seq: expected - 1,
            last_hash: hex::encode(prev),
        })
    }

    /// [`AuditLog::verify`], then checks that the chain still holds the anchor `(seq, hash)`
    /// the center received earlier: catches removed newest entries and a rewritten chain.
    /// An anchor of seq 0 (an empty log) always holds.
    pub fn verify_against(
        &self,
        anchor_seq: u64,
        anchor_hash: &str,
    ) -> Result<VerifyReport, AuditError> {
        let report = self.verify()?;
        if anchor_seq == 0 {
            return Ok(report);
        }
        if report.last_seq < anchor_seq {
            return Err(AuditError::Truncated {
                anchor_seq,
                last_seq: report.last_seq,
            });
        }
        match self.get(anchor_seq)? {
            Some(e) if e.hash.eq_ignore_ascii_case(anchor_hash) => Ok(report),
            _ => Err(AuditError::AnchorMismatch { seq: anchor_seq }),
        }
    }

    /// Writes matching entries as JSON lines (each the canonical bytes with `hash`, as stored
    /// and published). Returns how many.
    pub fn export_jsonl(&self, filter: &Filter, mut w: impl Write) -> Result<usize, AuditError> {
        let n = self.each(filter, |e| {
            w.write_all(&e.to_json_bytes()?)?;
            w.write_all(b"\n")?;
            Ok(())
        })?;
        w.flush()?;
        Ok(n)
    }

    /// Writes matching entries as CSV (RFC 4180, `\r\n` line ends, a header row
    /// `seq,ts,kind,actor,request_id,camera,detail,prev,hash`; `ts` in UTC ms, `detail` as
    /// canonical JSON, absent values empty). Returns how many entries.
    pub fn export_csv(&self, filter: &Filter, mut w: impl Write) -> Result<usize, AuditError> {
        w.write_all(b"seq,ts,kind,actor,request_id,camera,detail,prev,hash\r\n")?;
        let n = self.each(filter, |e| {
            let mut detail = Vec::new();
            write_object(&mut detail, &e.detail).map_err(AuditError::InvalidDetail)?;
            let detail = String::from_utf8(detail).expect("JSON is UTF-8");
            let fields = [
                e.seq.to_string(),
                e.ts.to_string(),
                e.kind.as_str().to_owned(),
                e.actor.as_str().to_owned(),
                e.request_id.clone().unwrap_or_default(),
                e.camera.clone().unwrap_or_default(),
                detail,
                e.prev.clone(),
                e.hash.clone(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            w.write_all(line.join(",").as_bytes())?;
            w.write_all(b"\r\n")?;
            Ok(())
        })?;
        w.flush()?;
        Ok(n)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
