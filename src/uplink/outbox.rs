//! The durable outbox: every QoS 1 message the box sends goes through it, so nothing that must
//! reach the city is lost to an outage, a restart or kill -9.
//!
//! # Format
//!
//! Two sled trees in the daemon's database ([`crate::store::Store::db`]):
//!
//! - `uplink.outbox`: key = `u64` big-endian, assigned in increasing order, so a scan returns
//!   messages in the order they were queued. Value = one [`Record`]:
//!
//!   ```text
//!   version u8 (=1) · flags u8 (bit 0 = retain, bit 1 = grant) · kind u8 · topic_len u16 BE
//!     · topic (UTF-8) · [grant_len u8 · grant (UTF-8), when bit 1] · body
//!   kind 1 Inline:     body = the MQTT payload
//!   kind 2 FileRange:  body = offset u64 BE · len u64 BE · path (UTF-8, to the end)
//!   kind 3 FramedFile: body = header_len u16 BE · header · offset u64 BE · len u64 BE · path
//!   ```
//!
//!   `grant` names the consent grant a message belongs to (clip chunks): before sending such a
//!   message the worker asks the gate ([`crate::uplink::UplinkHandle::set_gate`]) whether the grant
//!   still stands, and drops it if not — consent is checked again at send time, so a revoke
//!   or pause drops what is still queued.
//!
//!   `FileRange` is how large items (clip chunks, later) are queued: a reference to bytes in a
//!   segment file, read at send time, never a copy in sled (sled measured 3.2x write
//!   amplification on large values; see `store`).
//! - `uplink.meta`: `event_seq` (`u64` BE), the last per-box event `seq` handed out. It is bumped
//!   in the same sled transaction that queues the event, so a crash leaves neither a gap nor a
//!   reused number.
//!
//! # Order of writes
//!
//! 1. Queue: under the outbox lock, assign the key (and `seq`), insert (transaction), then
//!    `Db::flush` (sled fsyncs its log). Only then may the worker see the key, so a message is
//!    durable before it is sent.
//! 2. Send: the worker publishes queued keys in key order, at most `window` unacknowledged at a
//!    time, and remembers which MQTT packet id each got (see [`OutboxState`]).
//! 3. PUBACK: the key is removed from the tree without a flush. Killed before sled writes the
//!    removal: the message is sent again after the restart (at-least-once; the center drops
//!    duplicates by `seq`).
//! 4. Disconnect: everything not acknowledged is sent again, in key order, on the next
//!    connection; after a restart, everything in the tree is.
//!
//! # Invariants
//!
//! - `bytes` (the sum of the encoded sizes of the queued records) stays at most `limit`.
//! - A key is deleted only after the PUBACK for the packet that carried it (or by the
//!   [`WhenFull::DropOldest`] policy, which counts what it drops).
//! - Keys are sent in increasing order on each connection; a connection starts again at the
//!   oldest queued key. So after dropping duplicates by `seq`, the center sees every message in
//!   order.
//!
//! # When full
//!
//! [`WhenFull`] chooses, explicitly. `RejectNew` (the default) keeps what was already promised
//! and hands the new record back in [`OutboxError::Full`]; `DropOldest` deletes the oldest
//! queued messages until the new one fits. Either way the count is kept and, once there is room
//! again, the uplink queues an `outbox_full` event saying how many messages were refused or
//! dropped, so the loss is visible at the center.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// Name of the sled tree holding queued messages.
pub const OUTBOX_TREE: &str = "uplink.outbox";
/// Name of the sled tree holding the event sequence counter.
pub const META_TREE: &str = "uplink.meta";
const EVENT_SEQ_KEY: &[u8] = b"event_seq";
const RECORD_VERSION: u8 = 1;

pub use crate::protocol::messages::WhenFull;

/// The bytes of a queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The payload itself, stored in sled (events, replies, audit entries: small).
    Inline(Vec<u8>),
    /// A byte range of a file (a segment), read when the message is sent. For clip chunks.
    FileRange {
        /// The file.
        path: PathBuf,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// A small header (a PLM1 frame header) followed by a byte range of a file: a clip
    /// fragment, framed without copying the segment into sled.
    FramedFile {
        /// Bytes sent before the file's.
        header: Vec<u8>,
        /// The file.
        path: PathBuf,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl Payload {
    /// Bytes this payload puts on the wire.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::FileRange { len, .. } => *len,
            Payload::FramedFile { header, len, .. } => header.len() as u64 + *len,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One queued message: where it goes and what it carries. Always QoS 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Full MQTT topic.
    pub topic: String,
    /// MQTT retain flag.
    pub retain: bool,
    /// The payload.
    pub payload: Payload,
    /// The consent grant this message belongs to, checked again just before sending.
    pub grant: Option<String>,
    /// The record owns its file (a private hard link made when it was queued, so quota
    /// eviction of the original cannot take the bytes away): the file is deleted when the
    /// record is acknowledged, dropped or cleared.
    pub owns_file: bool,
}

impl Record {
    /// A record with an inline payload.
    pub fn inline(topic: impl Into<String>, retain: bool, payload: Vec<u8>) -> Record {
        Record {
            topic: topic.into(),
            retain,
            payload: Payload::Inline(payload),
            grant: None,
            owns_file: false,
        }
    }

    /// The file this record owns, if any (see [`Record::owns_file`]).
    pub fn owned_file(&self) -> Option<&std::path::Path> {
        if !self.owns_file {
            return None;
        }
        match &self.payload {
            Payload::Inline(_) => None,
            Payload::FileRange { path, .. } | Payload::FramedFile { path, .. } => Some(path),
        }
    }

    /// The same record, tied to a consent grant.
    pub fn for_grant(mut self, grant: impl Into<String>) -> Record {
        self.grant = Some(grant.into());
        self
    }

    /// The stored form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let mut out = Vec::with_capacity(5 + topic.len() + 32);
        out.push(RECORD_VERSION);
        // Grant ids are request ids, at most 64 bytes.
        let grant = self.grant.as_deref().filter(|g| g.len() <= 255);
        out.push(
            u8::from(self.retain)
                | (u8::from(grant.is_some()) << 1)
                | (u8::from(self.owns_file) << 2),
        );
        match &self.payload {
            Payload::Inline(_) => out.push(1),
            Payload::FileRange { .. } => out.push(2),
            Payload::FramedFile { .. } => out.push(3),
        }
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        if let Some(g) = grant {
            out.push(g.len() as u8);
            out.extend_from_slice(g.as_bytes());
        }
        match &self.payload {
            Payload::Inline(b) => out.extend_from_slice(b),
            Payload::FileRange { path, offset, len } => {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(path.as_os_str().as_encoded_bytes());
            }
            Payload::FramedFile {
                header,
                path,
                offset,
                len,
            } => {
                out.extend_from_slice(&(header.len() as u16).to_be_bytes());
                out.extend_from_slice(header);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(path.as_os_str().as_encoded_bytes());
            }
        }
        out
    }

    /// Parses the stored form; `None` when it is not a record this version wrote.
    pub fn decode(raw: &[u8]) -> Option<Record> {
        let (&version, rest) = raw.split_first()?;
        if version != RECORD_VERSION {
            return None;
        }
        let (&flags, rest) = rest.split_first()?;
        let (&kind, rest) = rest.split_first()?;
        let tlen = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let topic = std::str::from_utf8(rest.get(2..2 + tlen)?).ok()?.to_owned();
        let mut body = rest.get(2 + tlen..)?;
        let grant = if flags & 2 != 0 {
            let (&glen, r) = body.split_first()?;
            let g = std::str::from_utf8(r.get(..glen as usize)?)
                .ok()?
                .to_owned();
            body = &r[glen as usize..];
            Some(g)
        } else {
            None
        };
        let payload = match kind {
            1 => Payload::Inline(body.to_vec()),
            2 => {
                let offset = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
                let len = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
                let path = PathBuf::from(std::str::from_utf8(&body[16..]).ok()?);
                Payload::FileRange { path, offset, len }
            }
            3 => {
                let hlen = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
                let header = body.get(2..2 + hlen)?.to_vec();
                let rest = body.get(2 + hlen..)?;
                let offset = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let len = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
                let path = PathBuf::from(std::str::from_utf8(&rest[16..]).ok()?);
                Payload::FramedFile {
                    header,
                    path,
                    offset,
                    len,
                }
            }
            _ => return None,
        };
        Some(Record {
            topic,
            retain: flags & 1 != 0,
            payload,
            grant,
            owns_file: flags & 4 != 0,
        })
    }
}

/// Why the outbox could not take or give a message.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The outbox is at its byte limit and the policy is [`WhenFull::RejectNew`]. The record is
    /// handed back.
    #[error("the outbox is full ({bytes} of {limit} bytes queued); message to {} refused", record.topic)]
    Full {
        /// The refused record.
        record: Box<Record>,
        /// Bytes queued.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// One record is larger than the whole outbox.
    #[error("a {size}-byte message cannot fit an outbox limited to {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// sled failed.
    #[error("outbox database error: {0}")]
    Db(#[from] sled::Error),
    /// A stored record could not be parsed (it is skipped and deleted).
    #[error("outbox record {key} is damaged")]
    Corrupt {
        /// Its key.
        key: u64,
    },
}

/// What was sent on the current connection, in the order rumqttc will report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// An outbox message (its key).
    Tracked(u64),
    /// Anything else (heartbeat, online status): its packet id is not ours to track.
    Untracked,
    /// Not in the outbox, but the worker waits for its PUBACK (the offline status at shutdown).
    Watched,
}

/// A rumqttc event that does not match what was submitted: the connection must be dropped
/// and the outbox replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet id bookkeeping out of step with the MQTT client (pkid {0})")]
pub struct Desync(pub u16);

/// The pure bookkeeping of the outbox: which keys are queued, how big they are, what has been
/// sent on this connection and which packet id carries which key. No I/O (tested without
/// sockets, in the manner of rumqttc's `state.rs`).
#[derive(Debug)]
pub struct OutboxState {
    entries: BTreeMap<u64, u64>,
    bytes: u64,
    limit: u64,
    policy: WhenFull,
    next_key: u64,
    /// Smallest key not yet submitted on this connection.
    cursor: u64,
    submitted: VecDeque<Submitted>,
    inflight: HashMap<u16, u64>,
    /// Messages refused or dropped since the last `outbox_full` report.
    lost: u64,
}

/// A record admitted by [`OutboxState::admit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Its key.
    pub key: u64,
    /// Keys dropped to make room ([`WhenFull::DropOldest`]); the caller deletes them.
    pub evicted: Vec<u64>,
}

/// Why [`OutboxState::admit`] refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Full and the policy is reject-new.
    Full,
    /// Larger than the limit.
    TooLarge,
}

impl OutboxState {
    /// Empty bookkeeping.
    pub fn new(limit: u64, policy: WhenFull) -> Self {
        OutboxState {
            entries: BTreeMap::new(),
            bytes: 0,
            limit,
            policy,
            next_key: 0,
            cursor: 0,
            submitted: VecDeque::new(),
            inflight: HashMap::new(),
            lost: 0,
        }
    }

    /// Adds a record found in the tree at open.
    pub fn restore(&mut self, key: u64, size: u64) {
        self.entries.insert(key, size);
        self.bytes += size;
        self.next_key = self.next_key.max(key + 1);
    }

    /// Reserves a key for a record of `size` bytes, applying the [`WhenFull`] policy.
    pub fn admit(&mut self, size: u64) -> Result<Admitted, Refused> {
        if size > self.limit {
            self.lost += 1;
            return Err(Refused::TooLarge);
        }
        let mut evicted = Vec::new();
        if self.bytes + size > self.limit {
            match self.policy {
                WhenFull::RejectNew => {
                    self.lost += 1;
                    return Err(Refused::Full);
                }
                WhenFull::DropOldest => {
                    while self.bytes + size > self.limit {
                        let (k, s) = self.entries.pop_first().expect("bytes > 0 means entries");
                        self.bytes -= s;
                        self.lost += 1;
                        evicted.push(k);
                    }
                }
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        self.entries.insert(key, size);
        self.bytes += size;
        Ok(Admitted { key, evicted })
    }

    /// Forgets a key whose write failed after [`admit`](Self::admit).
    pub fn forget(&mut self, key: u64) {
        if let Some(s) = self.entries.remove(&key) {
            self.bytes -= s;
        }
    }

    /// Messages sent on this connection and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.inflight.len()
            + self
                .submitted
                .iter()
                .filter(|s| matches!(s, Submitted::Tracked(_)))
                .count()
    }

    /// The next key to send, if fewer than `window` are unacknowledged; records it as
    /// submitted. The caller must then hand exactly one QoS 1 publish to the MQTT client.
    pub fn next_to_send(&mut self, window: usize) -> Option<u64> {
        if self.unacked() >= window {
            return None;
        }
        let (&key, _) = self.entries.range(self.cursor..).next()?;
        self.cursor = key + 1;
        self.submitted.push_back(Submitted::Tracked(key));
        Some(key)
    }

    /// Records that a message outside the outbox (QoS 0 or status) was handed to the client.
    pub fn submit_untracked(&mut self) {
        self.submitted.push_back(Submitted::Untracked);
    }

    /// Messages handed to the MQTT client that it has not yet written (its request queue).
    pub fn queued(&self) -> usize {
        self.submitted.len()
    }

    /// Records that a message outside the outbox whose PUBACK the worker awaits was handed to
    /// the client; [`on_outgoing_publish`](Self::on_outgoing_publish) returns
    /// [`Submitted::Watched`] for it.
    pub fn submit_watched(&mut self) {
        self.submitted.push_back(Submitted::Watched);
    }

    /// Undoes the last [`next_to_send`](Self::next_to_send) or
    /// [`submit_untracked`](Self::submit_untracked) when the client refused the publish.
    pub fn unsubmit_last(&mut self) {
        if let Some(Submitted::Tracked(k)) = self.submitted.pop_back() {
            self.cursor = self.cursor.min(k);
        }
    }

    /// rumqttc reported `Outgoing::Publish(pkid)`: the oldest submitted message got `pkid`.
    /// Returns what it was.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Result<Submitted, Desync> {
        let s = self.submitted.pop_front().ok_or(Desync(pkid))?;
        if let Submitted::Tracked(key) = s {
            if pkid == 0 || self.inflight.insert(pkid, key).is_some() {
                return Err(Desync(pkid));
            }
        }
        Ok(s)
    }

    /// A PUBACK for `pkid` arrived. Returns the key to delete, if the packet carried an outbox
    /// message that is still queued.
    pub fn on_puback(&mut self, pkid: u16) -> Option<u64> {
        let key = self.inflight.remove(&pkid)?;
        let size = self.entries.remove(&key)?;
        self.bytes -= size;
        Some(key)
    }

    /// The connection is gone: everything not acknowledged is sent again on the next one.
    pub fn on_disconnect(&mut self) {
        self.submitted.clear();
        self.inflight.clear();
        self.cursor = 0;
    }

    /// Queued messages.
    pub fn messages(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Queued bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The byte limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The policy.
    pub fn policy(&self) -> WhenFull {
        self.policy
    }

    /// Messages refused or dropped and not yet reported.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// When messages were lost and the outbox is below 90 % of its limit again, returns how
    /// many and resets the count (the caller queues an `outbox_full` event).
    pub fn take_loss_report(&mut self, reserve: u64) -> Option<u64> {
        if self.lost > 0 && self.bytes + reserve <= self.limit / 10 * 9 {
            return Some(std::mem::take(&mut self.lost));
        }
        None
    }

    /// Gives back a loss count whose report could not be queued.
    pub fn restore_loss(&mut self, n: u64) {
        self.lost += n;
    }
}

/// The outbox in sled plus its bookkeeping. Blocking (sled flushes): call from a blocking
/// context or accept a few milliseconds on the caller's thread.
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    meta: sled::Tree,
    state: Mutex<OutboxState>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// Deletes the file a stored record owns (best effort: a leftover is cleaned up at start).
fn release_file(raw: &[u8]) {
    if let Some(path) = Record::decode(raw).as_ref().and_then(Record::owned_file) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), error = %e, "Cannot delete a sent clip piece");
            }
        }
    }
}

fn key_bytes(key: u64) -> [u8; 8] {
    key.to_be_bytes()
}

impl Outbox {
    /// Opens the trees and rebuilds the bookkeeping from what is queued. Damaged records are
    /// deleted (and logged) rather than blocking the queue forever.
    pub fn open(db: &sled::Db, limit: u64, policy: WhenFull) -> Result<Outbox, OutboxError> {
        let tree = db.open_tree(OUTBOX_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let mut state = OutboxState::new(limit, policy);
        for item in tree.iter() {
            let (k, v) = item?;
            let Ok(kb) = <[u8; 8]>::try_from(&k[..]) else {
                tracing::warn!("Removing a malformed outbox key");
                tree.remove(k)?;
                continue;
            };
            let key = u64::from_be_bytes(kb);
            if Record::decode(&v).is_none() {
                tracing::warn!(key, "Removing a damaged outbox record");
                tree.remove(k)?;
                continue;
            }
            state.restore(key, v.len() as u64 + 8);
        }
        Ok(Outbox {
            db: db.clone(),
            tree,
            meta,
            state: Mutex::new(state),
        })
    }

    /// Runs `f` on the bookkeeping.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut OutboxState) -> R) -> R {
        // The state is plain data updated in small steps; a panic in one step cannot leave it
        // worse than a restart would (which rebuilds it from sled), so poisoning is ignored.
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Queues a record durably (inserted and flushed before this returns).
    pub fn push(&self, record: Record) -> Result<u64, OutboxError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.push_locked(&mut st, record, None)
    }

    /// Queues an event: `build` gets the next per-box event `seq` and returns the record. The
    /// `seq` and the record are written in one transaction, under the outbox lock, so events
    /// are queued in `seq` order. Returns `(key, seq)`.
    pub fn push_event(&self, build: impl FnOnce(u64) -> Record) -> Result<(u64, u64), OutboxError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.last_event_seq()? + 1;
        let key = self.push_locked(&mut st, build(seq), Some(seq))?;
        Ok((key, seq))
    }

    /// The last event `seq` handed out.
    pub fn last_event_seq(&self) -> Result<u64, OutboxError> {
        Ok(self
            .meta
            .get(EVENT_SEQ_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    fn push_locked(
        &self,
        st: &mut OutboxState,
        record: Record,
        seq: Option<u64>,
    ) -> Result<u64, OutboxError> {
        let value = record.encode();
        let size = value.len() as u64 + 8;
        let admitted = match st.admit(size) {
            Ok(a) => a,
            Err(Refused::TooLarge) => {
                return Err(OutboxError::TooLarge {
                    size,
                    limit: st.limit(),
                })
            }
            Err(Refused::Full) => {
                return Err(OutboxError::Full {
                    record: Box::new(record),
                    bytes: st.bytes(),
                    limit: st.limit(),
                })
            }
        };
        let key = admitted.key;
        let res: Result<(), TransactionError<()>> =
            (&self.tree, &self.meta).transaction(|(tree, meta)| {
                for k in &admitted.evicted {
                    tree.remove(&key_bytes(*k))?;
                }
                tree.insert(&key_bytes(key), value.as_slice())?;
                if let Some(seq) = seq {
                    meta.insert(EVENT_SEQ_KEY, &seq.to_be_bytes())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        let res = res.map_err(|e| match e {
            TransactionError::Storage(e) => OutboxError::Db(e),
            TransactionError::Abort(()) => OutboxError::Corrupt { key },
        });
        if let Err(e) = res.and_then(|()| self.db.flush().map(|_| ()).map_err(OutboxError::from)) {
            st.forget(key);
            return Err(e);
        }
        if !admitted.evicted.is_empty() {
            tracing::warn!(
                dropped = admitted.evicted.len(),
                "Outbox full: dropped the oldest messages (policy drop_oldest)"
            );
        }
        Ok(key)
    }

    /// Reads a queued record.
    pub fn get(&self, key: u64) -> Result<Option<Record>, OutboxError> {
        match self.tree.get(key_bytes(key))? {
            None => Ok(None),
            Some(v) => Record::decode(&v)
                .map(Some)
                .ok_or(OutboxError::Corrupt { key }),
        }
    }

    /// Deletes an acknowledged record (no flush: a lost delete only means a duplicate), and
    /// the file it owns.
    pub fn remove(&self, key: u64) -> Result<(), OutboxError> {
        if let Some(old) = self.tree.remove(key_bytes(key))? {
            release_file(&old);
        }
        Ok(())
    }

    /// Deletes a damaged record from tree and bookkeeping.
    pub fn discard(&self, key: u64) -> Result<(), OutboxError> {
        self.with_state(|s| s.forget(key));
        self.remove(key)
    }

    /// Deletes every queued record (unpairing: they were addressed to the old identity).
    /// Returns how many there were.
    pub fn clear(&self) -> Result<u64, OutboxError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, _) = item?;
            if let Ok(kb) = <[u8; 8]>::try_from(&k[..]) {
                st.forget(u64::from_be_bytes(kb));
            }
            if let Some(old) = self.tree.remove(k)? {
                release_file(&old);
            }
            n += 1;
        }
        self.db.flush()?;
        Ok(n)
    }

    /// Every file that queued records own (for cleaning up leftovers at start).
    pub fn owned_files(&self) -> Result<std::collections::HashSet<PathBuf>, OutboxError> {
        let mut out = std::collections::HashSet::new();
        for item in self.tree.iter() {
            let (_, v) = item?;
            if let Some(p) = Record::decode(&v).as_ref().and_then(Record::owned_file) {
                out.insert(p.to_owned());
            }
        }
        Ok(out)
    }

    /// Flushes pending deletions.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(n: u64) -> OutboxState {
        let mut s = OutboxState::new(1_000, WhenFull::RejectNew);
        for _ in 0..n {
            s.admit(10).unwrap();
        }
        s
    }

    #[test]
    fn keys_are_sent_in_order_within_the_window() {
        let mut s = state_with(5);
        assert_eq!(s.next_to_send(2), Some(0));
        assert_eq!(s.next_to_send(2), Some(1));
        assert_eq!(s.next_to_send(2), None, "window of 2 is full");
        assert_eq!(s.on_outgoing_publish(1), Ok(Submitted::Tracked(0)));
        assert_eq!(s.on_outgoing_publish(2), Ok(Submitted::Tracked(1)));
        assert_eq!(s.on_puback(1), Some(0));
        assert_eq!(s.next_to_send(2), Some(2));
        assert_eq!((s.messages(), s.bytes()), (4, 40));
    }

    #[test]
    fn puback_maps_packet_id_to_key_with_untracked_in_between() {
        let mut s = state_with(2);
        s.submit_untracked(); // status, QoS 1 but not in the outbox
        assert_eq!(s.next_to_send(10), Some(0));
        s.submit_untracked(); // heartbeat, QoS 0
        assert_eq!(s.next_to_send(10), Some(1));
        assert_eq!(s.on_outgoing_publish(1), Ok(Submitted::Untracked));
        assert_eq!(s.on_outgoing_publish(2), Ok(Submitted::Tracked(0)));
        assert_eq!(s.on_outgoing_publish(0), Ok(Submitted::Untracked));
        assert_eq!(s.on_outgoing_publish(3), Ok(Submitted::Tracked(1)));
        assert_eq!(s.on_puback(1), None, "status ack is not an outbox key");
        assert_eq!(s.on_puback(3), Some(1));
        assert_eq!(s.on_puback(2), Some(0));
        assert_eq!(s.messages(), 0);
    }

    #[test]
    fn unacked_messages_are_replayed_from_the_oldest_after_disconnect() {
        let mut s = state_with(4);
        for pkid in 1..=3u16 {
            let k = s.next_to_send(10).unwrap();
            assert_eq!(s.on_outgoing_publish(pkid), Ok(Submitted::Tracked(k)));
        }
        assert_eq!(s.on_puback(2), Some(1));
        s.on_disconnect();
        assert_eq!(s.on_puback(1), None, "acks of the old connection are void");
        let replay: Vec<u64> = std::iter::from_fn(|| s.next_to_send(10)).collect();
        assert_eq!(replay, vec![0, 2, 3]);
    }

    #[test]
    fn reused_packet_id_after_ack_maps_to_the_new_key() {
        let mut s = state_with(2);
        s.next_to_send(1).unwrap();
        s.on_outgoing_publish(1).unwrap();
        assert_eq!(s.on_puback(1), Some(0));
        s.next_to_send(1).unwrap();
        s.on_outgoing_publish(1).unwrap();
        assert_eq!(s.on_puback(1), Some(1));
    }

    #[test]
    fn duplicate_packet_id_in_flight_is_a_desync() {
        let mut s = state_with(2);
        s.next_to_send(10);
        s.next_to_send(10);
        s.on_outgoing_publish(7).unwrap();
        assert_eq!(s.on_outgoing_publish(7), Err(Desync(7)));
        assert_eq!(
            s.on_outgoing_publish(8),
            Err(Desync(8)),
            "nothing submitted"
        );
    }

    #[test]
    fn reject_new_when_full_keeps_the_queue_and_counts_the_loss() {
        let mut s = OutboxState::new(100, WhenFull::RejectNew);
        for _ in 0..10 {
            s.admit(10).unwrap();
        }
        assert_eq!(s.admit(1), Err(Refused::Full));
        assert_eq!(s.admit(101), Err(Refused::TooLarge));
        assert_eq!((s.messages(), s.bytes(), s.lost()), (10, 100, 2));
        assert_eq!(s.take_loss_report(10), None, "no room yet");
        for pkid in 1..=3 {
            s.next_to_send(10);
            s.on_outgoing_publish(pkid).unwrap();
            s.on_puback(pkid);
        }
        assert_eq!(s.take_loss_report(10), Some(2));
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn drop_oldest_when_full_evicts_from_the_front() {
        let mut s = OutboxState::new(100, WhenFull::DropOldest);
        for _ in 0..10 {
            s.admit(10).unwrap();
        }
        let a = s.admit(25).unwrap();
        assert_eq!(
            a,
            Admitted {
                key: 10,
                evicted: vec![0, 1, 2]
            }
        );
        assert_eq!((s.messages(), s.bytes(), s.lost()), (8, 95, 3));
        assert_eq!(s.next_to_send(10), Some(3));
    }

    #[test]
    fn evicted_message_in_flight_is_not_double_counted() {
        let mut s = OutboxState::new(20, WhenFull::DropOldest);
        s.admit(10).unwrap();
        s.admit(10).unwrap();
        s.next_to_send(10);
        s.on_outgoing_publish(1).unwrap();
        s.admit(10).unwrap(); // evicts key 0, which is in flight
        assert_eq!(s.on_puback(1), None);
        assert_eq!(s.bytes(), 20);
    }

    #[test]
    fn unsubmit_rewinds_the_cursor() {
        let mut s = state_with(3);
        assert_eq!(s.next_to_send(10), Some(0));
        assert_eq!(s.next_to_send(10), Some(1));
        s.unsubmit_last();
        assert_eq!(s.next_to_send(10), Some(1));
    }

    #[test]
    fn restore_continues_keys_after_the_last() {
        let mut s = OutboxState::new(1000, WhenFull::RejectNew);
        s.restore(4, 10);
        s.restore(9, 10);
        assert_eq!(s.admit(1).unwrap().key, 10);
        assert_eq!(s.next_to_send(10), Some(4));
    }

    #[test]
    fn an_owned_file_goes_with_its_record_and_a_referenced_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let ob = Outbox::open(&db, 1 << 20, WhenFull::RejectNew).unwrap();
        let (owned, referenced) = (dir.path().join("held-1"), dir.path().join("seg"));
        std::fs::write(&owned, b"x").unwrap();
        std::fs::write(&referenced, b"y").unwrap();
        let rec = |path: &std::path::Path, owns_file: bool| Record {
            topic: "t".into(),
            retain: false,
            payload: Payload::FileRange {
                path: path.to_owned(),
                offset: 0,
                len: 1,
            },
            grant: None,
            owns_file,
        };
        let a = ob.push(rec(&owned, true)).unwrap();
        let b = ob.push(rec(&referenced, false)).unwrap();
        assert_eq!(
            ob.owned_files().unwrap(),
            std::collections::HashSet::from([owned.clone()])
        );
        ob.remove(a).unwrap();
        ob.remove(b).unwrap();
        assert!(
            !owned.exists(),
            "an acknowledged record deletes its own file"
        );
        assert!(
            referenced.exists(),
            "never a file the record only refers to"
        );
    }

    #[test]
    fn record_round_trips_every_payload_kind_with_and_without_grant() {
        for r in [
            Record::inline("porchlight/v1/gw/a/event", false, b"{\"seq\":1}".to_vec()),
            Record::inline("porchlight/v1/gw/a/clip/r1", false, b"PLM1...".to_vec())
                .for_grant("r1"),
            Record {
                topic: "t/clip/x".into(),
                retain: true,
                payload: Payload::FileRange {
                    path: "/var/lib/porchlight/segments/c/1_2.m4s".into(),
                    offset: 7,
                    len: 262_144,
                },
                grant: None,
                owns_file: false,
            },
            Record {
                topic: "t/clip/y".into(),
                retain: false,
                payload: Payload::FramedFile {
                    header: b"PLM1\x02\0\0\0\x01\0\0\0\0\0\0\0\x09".to_vec(),
                    path: "/var/lib/porchlight/segments/c/3_4.m4s".into(),
                    offset: 0,
                    len: 1_000_000,
                },
                grant: Some("req-7".into()),
                owns_file: true,
            },
        ] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
        assert_eq!(Record::decode(&[9, 0, 1, 0, 0]), None);
        assert_eq!(
            Record::decode(&[1, 0, 1, 0, 5, b'a']),
            None,
            "truncated topic"
        );
    }

    #[test]
    fn outbox_survives_reopen_and_keeps_event_seq() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let ob = Outbox::open(&db, 1 << 20, WhenFull::RejectNew).unwrap();
        for _ in 0..3 {
            ob.push_event(|seq| Record::inline("t", false, seq.to_string().into_bytes()))
                .unwrap();
        }
        drop(ob);
        let ob = Outbox::open(&db, 1 << 20, WhenFull::RejectNew).unwrap();
        assert_eq!(ob.with_state(|s| s.messages()), 3);
        let (key, seq) = ob
            .push_event(|seq| Record::inline("t", false, seq.to_string().into_bytes()))
            .unwrap();
        assert_eq!((key, seq), (3, 4));
        let k = ob.with_state(|s| s.next_to_send(10)).unwrap();
        assert_eq!(
            ob.get(k).unwrap().unwrap().payload,
            Payload::Inline(b"1".to_vec())
        );
    }
}
