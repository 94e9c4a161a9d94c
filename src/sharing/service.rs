//! The sharing service: requests in, consent decisions, replies, live feeds, resident actions,
//! all on the record.
//!
//! One [`Sharing`] per daemon. It owns the consent [`Engine`] behind one mutex and persists its
//! state (rules, pause, pending requests, grants) to the sled tree `consent` after every change,
//! so a restart keeps the resident's rules and running grants. Every step is appended to the
//! audit chain, and each appended entry is queued to `{root}/gw/{gw}/audit` (QoS 1, outbox).
//!
//! Flow of a request: the uplink's durable inbox hands over the raw JWS → [`super::request`] verifies it
//! (signature, gateway, time, replay, camera, fields) → anything invalid gets a `rejected` reply
//! and a `request_rejected` entry → a valid one goes to the engine → `granted`, `pending` or
//! `denied` reply and a `decision` entry → a live grant starts a feed ([`super::live`]) that asks
//! the engine before every fragment. Revoke, pause, cancel and expiry stop the feed through its
//! stop channel at once, and the engine's send-time check refuses anything still in flight.
//!
//! Replies are `{"request_id","status","reason","until","ts","seq"}` with a per-box `seq`
//! persisted in the `consent` tree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::live::{self, EndReason as LiveEnd};
use super::request::{ReplayGuard, RequestBody, RequestVerifier};
use crate::audit::{Actor, AuditKind, AuditLog, NewEntry};
use crate::clock::Clock;
use crate::consent::{
    self, CameraRules, Cancelled, Engine, EngineOptions, EngineState, Event, Kind, Now, Refusal,
    Verdict,
};
use crate::protocol::framing;
use crate::protocol::manifest::Manifest;
use crate::protocol::messages::{Reply, ReplyStatus};
use crate::store::Store;
use crate::uplink::outbox::{Payload, Record};
use crate::uplink::UplinkHandle;
use std::path::PathBuf;

/// Why a resident action or a request could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    /// The consent engine refused (unknown id, paused, expired…).
    #[error(transparent)]
    Consent(#[from] consent::ConsentError),
    /// The audit log failed: nothing is done without its record.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// sled failed.
    #[error("consent state: {0}")]
    Db(#[from] sled::Error),
    /// No such camera.
    #[error("no camera {0:?}")]
    UnknownCamera(String),
}

/// Tunables of sharing.
#[derive(Clone, Debug)]
pub struct SharingOptions {
    /// How long an `ask` request waits for the resident.
    pub ask_timeout: std::time::Duration,
    /// Bitrate cap of one live feed, bits per second.
    pub live_max_bitrate: u64,
    /// Where "now" comes from: the wall clock in the daemon, a manual or tokio-driven clock
    /// in tests (expiry, replay windows and every stamp follow it).
    pub clock: Clock,
    /// Requests that fail before their signature verifies (garbage, too large, unsigned, bad
    /// signature) are not audited one by one: one summary entry per this period, and at most
    /// [`UNVERIFIED_REPLIES_PER_PERIOD`] `rejected` replies in it.
    pub unverified_summary_every: std::time::Duration,
    /// Refuse requests issued before this time (UTC seconds) as `replayed`: set when the
    /// replay record may have been lost (the store rebuilt its index at start).
    pub reject_issued_before: Option<i64>,
}

/// `rejected` replies to unverified requests per summary period; beyond it they are counted.
pub const UNVERIFIED_REPLIES_PER_PERIOD: u64 = 10;

/// Requests rejected before their signature verified, since the last summary entry.
#[derive(Debug, Default)]
struct Unverified {
    /// When the first of them arrived (UTC ms); `None`: nothing to summarise.
    since_ms: Option<i64>,
    /// How many, by reason.
    reasons: std::collections::BTreeMap<String, u64>,
    /// Replies sent in this period.
    replied: u64,
    /// Replies left out (over the budget).
    replies_suppressed: u64,
}

const STATE_KEY: &[u8] = b"state";
const REPLY_SEQ_KEY: &[u8] = b"reply_seq";

/// The sharing service.
pub struct Sharing {
    engine: Mutex<Engine>,
    tree: sled::Tree,
    audit: Arc<AuditLog>,
    /// The city link; `None` while the box is not paired. Swapped by [`Sharing::attach`] and
    /// [`Sharing::detach`] (pairing and unpairing happen without a restart).
    link: std::sync::RwLock<Option<Arc<SharingLink>>>,
    /// Bumped on every attach/detach, so the request intake follows the current link.
    link_generation: watch::Sender<u64>,
    replay: ReplayGuard,
    /// The current cameras (they come and go at run time): which exist, and their live feeds.
    cameras: Arc<crate::cameras::CameraSet>,
    options: SharingOptions,
    feeds: Mutex<HashMap<String, watch::Sender<Option<LiveEnd>>>>,
    store: Arc<Store>,
    unverified: Mutex<Unverified>,
    /// When the replay record was last pruned (UTC ms).
    pruned_ms: Mutex<i64>,
}

/// What sharing needs from the city link: the uplink, the verifier of the center's requests
/// (absent when no request key is known: every request is then rejected) and the box's
/// certificate key, which signs clip manifests.
pub struct SharingLink {
    /// The uplink.
    pub uplink: UplinkHandle,
    /// Verifies the center's signed requests.
    pub verifier: Option<RequestVerifier>,
    /// The box's private key file (PEM).
    pub box_key: Option<PathBuf>,
}

impl Sharing {
    /// Opens the consent state and replay record in `db`. Until [`Sharing::attach`] gives it
    /// a city link (not paired), the resident can still set rules; nothing is shared.
    pub fn open(
        store: Arc<Store>,
        audit: Arc<AuditLog>,
        cameras: Arc<crate::cameras::CameraSet>,
        options: SharingOptions,
    ) -> Result<Arc<Sharing>, SharingError> {
        let db = store.db();
        let tree = db.open_tree("consent")?;
        let state: EngineState = match tree.get(STATE_KEY)? {
            Some(raw) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
                warn!(error = %e, "Consent state unreadable; starting from deny-by-default");
                EngineState::default()
            }),
            None => EngineState::default(),
        };
        let engine_options = EngineOptions {
            ask_timeout: options.ask_timeout,
            ..EngineOptions::default()
        };
        let replay = ReplayGuard::open_in(db).map_err(|e| match e {
            super::request::RequestError::Store(e) => SharingError::Db(e),
            other => SharingError::Db(sled::Error::Unsupported(other.to_string())),
        })?;
        let sharing = Arc::new(Sharing {
            engine: Mutex::new(Engine::restore(engine_options, state)),
            tree,
            audit,
            link: std::sync::RwLock::new(None),
            link_generation: watch::channel(0).0,
            replay,
            cameras,
            options,
            feeds: Mutex::new(HashMap::new()),
            store: store.clone(),
            unverified: Mutex::new(Unverified::default()),
            pruned_ms: Mutex::new(0),
        });
        Ok(sharing)
    }

    /// Gives sharing its city link (at start when paired, or when pairing completes): from
    /// now on requests are taken from its inbox and replies, audit entries and video go out
    /// through it.
    pub fn attach(self: &Arc<Self>, mut link: SharingLink) {
        if let Some(t) = self.options.reject_issued_before {
            link.verifier = link.verifier.map(|v| v.reject_issued_before(t));
        }
        // Queued clip chunks leave only while their grant stands (checked at send time).
        let weak = Arc::downgrade(self);
        link.uplink.set_gate(Arc::new(move |grant: &str| {
            weak.upgrade().is_some_and(|s| {
                let e = s.engine();
                !e.is_paused() && e.grant(grant).is_some()
            })
        }));
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(link));
        self.link_generation.send_modify(|g| *g += 1);
    }

    /// Takes the city link away (unpairing): every live feed ends, every grant is revoked
    /// (audited), and nothing more is shared until the next [`Sharing::attach`].
    pub fn detach(&self) -> Result<(), SharingError> {
        let ids: Vec<String> = self.engine().grants().map(|g| g.id.clone()).collect();
        for id in ids {
            if let Ok(grant) = self.engine().revoke(&id) {
                self.persist()?;
                self.stop_feed(&grant.id, LiveEnd::Revoked);
                self.record(
                    NewEntry::new(self.now_ms(), AuditKind::GrantEnd, Actor::Gateway)
                        .request(&grant.id)
                        .camera(&grant.camera)
                        .detail(json!({"reason": "unpaired"})),
                )?;
            }
        }
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.link_generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Ends live grants that outlived a restart (their feed is gone): a `failed` reply with
    /// `gateway_restarted` and an audit entry each. Called once after start-up (after
    /// [`Sharing::attach`] when paired, so the replies reach the center).
    pub fn end_stale_live_grants(&self) -> Result<(), SharingError> {
        let stale: Vec<String> = self
            .engine()
            .grants()
            .filter(|g| g.kind() == Kind::Live)
            .map(|g| g.id.clone())
            .collect();
        for id in stale {
            let ended = self.engine().revoke(&id);
            if let Ok(grant) = ended {
                self.persist()?;
                self.reply(
                    &grant.id,
                    ReplyStatus::Failed,
                    Some("gateway_restarted"),
                    None,
                );
                self.record(
                    NewEntry::new(self.now_ms(), AuditKind::GrantEnd, Actor::Gateway)
                        .request(&grant.id)
                        .camera(&grant.camera)
                        .detail(json!({"reason": "gateway_restarted"})),
                )?;
            }
        }
        Ok(())
    }

    /// Appends an entry to the audit chain (and queues it to the center when paired): for
    /// events outside sharing — pairing, a camera added or removed. The detail must not name
    /// addresses, URLs or credentials (the entry leaves the house).
    pub fn append_audit(&self, entry: NewEntry) -> Result<(), SharingError> {
        self.record(entry)
    }

    /// `{store}/held`: hard links of the segments queued clips still have to send (0700).
    fn held_dir(&self) -> Option<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let d = self.store.dir().join("held");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .ok()
            .map(|()| d)
    }

    /// Deletes held clip pieces no queued message owns (left by a crash between linking and
    /// queueing, or by unpairing). Returns how many.
    pub fn clean_held(&self) -> usize {
        let Some(dir) = self.held_dir() else { return 0 };
        let owned = match self.link() {
            Some(l) => match l.uplink.owned_files() {
                Ok(o) => o,
                Err(e) => {
                    warn!(error = %e, "Cannot list the outbox's clip pieces; none deleted");
                    return 0;
                }
            },
            None => Default::default(),
        };
        let mut n = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !owned.contains(&e.path()) && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Now, UTC ms, from the service's clock.
    fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// The current city link, if paired.
    fn link(&self) -> Option<Arc<SharingLink>> {
        self.link.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self) -> Result<(), SharingError> {
        let state = serde_json::to_vec(self.engine().state()).expect("engine state serialises");
        self.tree.insert(STATE_KEY, state)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Appends to the audit chain and queues the entry to the center.
    fn record(&self, entry: NewEntry) -> Result<(), SharingError> {
        let e = self.audit.append(entry)?;
        if let (Some(link), Ok(bytes)) = (self.link(), e.to_json_bytes()) {
            let up = &link.uplink;
            if let Err(err) = up.queue(Record::inline(up.topics().audit(), false, bytes)) {
                warn!(error = %err, seq = e.seq, "Audit entry not queued to the center");
            }
        }
        Ok(())
    }

    fn next_reply_seq(&self) -> u64 {
        let next = self
            .tree
            .update_and_fetch(REPLY_SEQ_KEY, |old| {
                let n = old
                    .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
                    .unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .ok()
            .flatten()
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        next
    }

    /// Queues a reply to the center (QoS 1 through the outbox).
    fn reply(
        &self,
        request_id: &str,
        status: ReplyStatus,
        reason: Option<&str>,
        until: Option<i64>,
    ) {
        let Some(link) = self.link() else { return };
        let up = &link.uplink;
        let r = Reply {
            request_id: request_id.to_owned(),
            status,
            reason: reason.map(str::to_owned),
            until,
            ts: self.now_ms(),
            seq: self.next_reply_seq(),
        };
        let body = serde_json::to_vec(&r).expect("reply serialises");
        if let Err(e) = up.queue(Record::inline(up.topics().reply(), false, body)) {
            warn!(error = %e, request_id, status = status.as_str(), "Reply not queued");
        }
    }

    /// Takes requests from the current uplink's inbox until shutdown, following attach and
    /// detach.
    pub async fn run_intake(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut generation = self.link_generation.subscribe();
        loop {
            generation.mark_unchanged();
            match self.link() {
                Some(link) => {
                    let inbox = link.uplink.inbox().clone();
                    drop(link);
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => return,
                        _ = generation.changed() => {}
                        _ = self.clone().take_requests(inbox) => {}
                    }
                }
                None => tokio::select! {
                    biased;
                    _ = shutdown.wait() => return,
                    _ = generation.changed() => {}
                },
            }
        }
    }

    /// Handles requests from `inbox` one at a time, for as long as it is polled.
    async fn take_requests(self: Arc<Self>, inbox: crate::uplink::inbox::Inbox) {
        let mut reader = inbox.reader();
        loop {
            let (key, payload) = reader.next().await;
            let me = self.clone();
            let handled = tokio::task::spawn_blocking(move || me.handle_request(&payload)).await;
            match handled {
                Ok(Ok(())) => {
                    if let Err(e) = inbox.done(key) {
                        warn!(error = %e, "Cannot remove a handled request from the inbox");
                    }
                }
                // Left in the inbox: handled again after a restart (idempotent per jti).
                Ok(Err(e)) => warn!(error = %e, "Request handling failed"),
                Err(e) => warn!(error = %e, "Request handling panicked"),
            }
        }
    }

    /// Handles one raw request from the center.
    pub fn handle_request(self: &Arc<Self>, payload: &[u8]) -> Result<(), SharingError> {
        let now = self.now_ms();
        let peek = super::request::peek_jti(payload).unwrap_or_default();
        let link = self.link();
        let Some(verifier) = link.as_ref().and_then(|l| l.verifier.as_ref()) else {
            return self.reject_unverified(&peek, "no_request_key", now);
        };
        // Nothing is written for a request that is not the center's (a flood of junk on the
        // request topic must not fill the disk): it is counted into the next summary.
        let token = match verifier.authentic(payload) {
            Ok(t) => t,
            Err(e) => return self.reject_unverified(&peek, &e.reason(), now),
        };
        self.record(
            NewEntry::new(now, AuditKind::RequestReceived, Actor::Center)
                .request(&peek)
                .detail(json!({"bytes": payload.len()})),
        )?;
        let valid = match verifier.accept_authentic(
            &token,
            now / 1000,
            |c| self.cameras.contains(c),
            &self.replay,
        ) {
            Ok(v) => v,
            Err(e) => return self.reject(&peek, &e.reason()),
        };
        let detail = json!({
            "kind": match valid.body {
                RequestBody::Live { .. } => "live",
                RequestBody::Clip { .. } => "clip",
                RequestBody::Cancel { .. } => "cancel",
            },
            "reason": valid.reason,
            "case": valid.case,
            "requester": valid.requester,
            "emergency": valid.emergency,
        });
        if let RequestBody::Cancel { target } = &valid.body {
            return self.cancel(&valid.jti, target, &valid.camera, now);
        }
        let Some(req) = valid.to_consent() else {
            return self.reject(&valid.jti, "malformed: kind");
        };
        let local = Now {
            utc_ms: now,
            utc_offset_s: self.options.clock.utc_offset_s(),
        };
        let decision = self.engine().decide(&req, local);
        let decision = match decision {
            Ok(d) => d,
            Err(e) => return self.reject(&valid.jti, &e.to_string()),
        };
        self.persist()?;
        let (status, reason, until) = match &decision.verdict {
            Verdict::Granted(g) => (ReplyStatus::Granted, None, Some(g.until_ms)),
            Verdict::Pending { expires_at_ms } => {
                (ReplyStatus::Pending, None, Some(*expires_at_ms))
            }
            Verdict::Denied { reason } => (ReplyStatus::Denied, Some(reason.as_str()), None),
        };
        let mut d = detail;
        d["verdict"] = json!(status.as_str());
        d["notify_resident"] = json!(decision.notify_resident);
        if let Some(r) = reason {
            d["deny_reason"] = json!(r);
        }
        self.record(
            NewEntry::new(now, AuditKind::Decision, Actor::Gateway)
                .request(&valid.jti)
                .camera(&valid.camera)
                .detail(d),
        )?;
        if decision.notify_resident {
            info!(request = %valid.jti, camera = %valid.camera, status = status.as_str(), emergency = valid.emergency, "Police request needs the resident's attention");
        }
        self.reply(&valid.jti, status, reason, until);
        if let Verdict::Granted(g) = decision.verdict {
            self.start_grant(g)?;
        }
        Ok(())
    }

    fn reject(&self, id: &str, reason: &str) -> Result<(), SharingError> {
        self.record(
            NewEntry::new(self.now_ms(), AuditKind::RequestRejected, Actor::Gateway)
                .request(id)
                .detail(json!({ "reason": reason })),
        )?;
        self.reply(id, ReplyStatus::Rejected, Some(reason), None);
        Ok(())
    }

    /// A request rejected before its signature verified: counted for the summary entry, and
    /// answered `rejected` within the reply budget.
    fn reject_unverified(&self, id: &str, reason: &str, now: i64) -> Result<(), SharingError> {
        let reply = {
            let mut u = self.unverified.lock().unwrap_or_else(|p| p.into_inner());
            u.since_ms.get_or_insert(now);
            *u.reasons.entry(reason.to_owned()).or_default() += 1;
            if u.replied < UNVERIFIED_REPLIES_PER_PERIOD {
                u.replied += 1;
                true
            } else {
                u.replies_suppressed += 1;
                false
            }
        };
        if reply {
            self.reply(id, ReplyStatus::Rejected, Some(reason), None);
        }
        Ok(())
    }

    /// Writes the summary of unverified requests (and those the uplink dropped for their
    /// size) once its period is over, or at once with `force` (shutdown).
    fn summarise_unverified(&self, now: i64, force: bool) -> Result<(), SharingError> {
        let oversized = self.link().map_or(0, |l| l.uplink.take_oversized());
        let entry = {
            let mut u = self.unverified.lock().unwrap_or_else(|p| p.into_inner());
            if oversized > 0 {
                u.since_ms.get_or_insert(now);
                *u.reasons.entry("too_large".into()).or_default() += oversized;
            }
            let Some(since) = u.since_ms else {
                return Ok(());
            };
            let period = self.options.unverified_summary_every.as_millis() as i64;
            if !force && now - since < period {
                return Ok(());
            }
            let u = std::mem::take(&mut *u);
            let count: u64 = u.reasons.values().sum();
            warn!(count, reasons = ?u.reasons, "Requests rejected before their signature verified");
            NewEntry::new(now, AuditKind::RequestRejected, Actor::Gateway).detail(json!({
                "unverified": true,
                "count": count,
                "reasons": u.reasons,
                "from_ms": since,
                "to_ms": now,
                "replies_suppressed": u.replies_suppressed,
            }))
        };
        self.record(entry)
    }

    fn cancel(&self, id: &str, target: &str, camera: &str, now: i64) -> Result<(), SharingError> {
        let cancelled = self.engine().cancel(target, camera);
        match cancelled {
            Ok(c) => {
                self.persist()?;
                let cam = match &c {
                    Cancelled::Grant(g) => g.camera.clone(),
                    Cancelled::Pending(p) => p.request.camera.clone(),
                };
                self.stop_feed(target, LiveEnd::Cancelled);
                self.record(
                    NewEntry::new(now, AuditKind::GrantEnd, Actor::Center)
                        .request(target)
                        .camera(cam)
                        .detail(json!({"reason": "cancelled", "by": id})),
                )?;
                self.reply(target, ReplyStatus::Revoked, Some("cancelled"), None);
                self.reply(id, ReplyStatus::Completed, None, None);
                Ok(())
            }
            Err(e) => self.reject(id, &format!("cancel: {e}")),
        }
    }

    fn start_grant(self: &Arc<Self>, grant: consent::Grant) -> Result<(), SharingError> {
        self.record(
            NewEntry::new(self.now_ms(), AuditKind::GrantStart, Actor::Gateway)
                .request(&grant.id)
                .camera(&grant.camera)
                .detail(json!({"kind": grant.kind(), "until": grant.until_ms, "granted_by": grant.granted_by})),
        )?;
        match grant.kind() {
            Kind::Live => self.start_feed(grant),
            Kind::Clip => {
                if let Err(reason) = self.queue_clip(&grant) {
                    warn!(request = %grant.id, reason, "Clip not sent");
                    self.engine().revoke(&grant.id).ok();
                    self.persist()?;
                    self.reply(&grant.id, ReplyStatus::Failed, Some(reason), None);
                    self.record(
                        NewEntry::new(self.now_ms(), AuditKind::GrantEnd, Actor::Gateway)
                            .request(&grant.id)
                            .camera(&grant.camera)
                            .detail(json!({ "reason": reason })),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Queues a granted clip through the outbox: init, one message per stored segment (a
    /// reference to its file, read at send time), the signed manifest, then `completed`. Every
    /// message is tied to the grant, so a revoke or pause drops whatever is still queued.
    fn queue_clip(&self, grant: &consent::Grant) -> Result<(), &'static str> {
        use sha2::Digest;
        let Some(link) = self.link() else {
            return Err("not_connected");
        };
        let up = &link.uplink;
        let consent::Scope::Clip { from_ms, to_ms } = grant.scope else {
            return Err("not_a_clip");
        };
        let plan = crate::export::plan(&self.store, &grant.camera, from_ms, to_ms)
            .map_err(|_| "nothing_buffered")?;
        let init = self
            .store
            .read_init(&grant.camera, plan.parts[0].init)
            .map_err(|_| "store_error")?;
        let topic = up.topics().clip(&grant.id);
        let mut hash = sha2::Sha256::new();
        let mut bytes = init.len() as u64;
        hash.update(&init);
        let queue = |r: Record| {
            up.queue(r.for_grant(&grant.id)).map_err(|e| match e {
                crate::uplink::UplinkError::TooLarge { .. } => "segment_too_large",
                _ => "outbox_full",
            })
        };
        queue(Record::inline(
            topic.clone(),
            false,
            framing::encode(framing::Kind::Init, 0, 0, &init),
        ))?;
        let mut seq = 1u32;
        let mut fragments = 0u64;
        // A stored segment (one GOP) larger than one MQTT packet goes as consecutive kind-2
        // messages cut at byte boundaries: the bodies still concatenate to the same fMP4
        // (docs/protocol.md, "Clips").
        let max_body = up
            .max_payload(&topic)
            .saturating_sub(framing::HEADER_LEN)
            .max(1) as u64;
        let held = self.held_dir();
        for part in &plan.parts {
            let original = self.store.segment_file(part);
            // Each queued piece holds its own hard link to the segment, so quota eviction of
            // the original cannot change what the manifest promises; the link goes when the
            // piece is acknowledged or dropped. Where links are impossible, the original is
            // referenced (and an evicted piece is dropped at send time, as before).
            let link = |seq: u32| -> Option<PathBuf> {
                let l = held.as_ref()?.join(format!("{}-{seq}.m4s", grant.id));
                let _ = std::fs::remove_file(&l);
                std::fs::hard_link(&original, &l).ok().map(|()| l)
            };
            let first = link(seq);
            let body = std::fs::read(first.as_ref().unwrap_or(&original))
                .map_err(|_| "segment_evicted")?;
            hash.update(&body);
            let len = body.len() as u64;
            bytes += len;
            let mut offset = 0u64;
            let mut piece = first;
            while offset < len {
                let n = max_body.min(len - offset);
                let owned = if offset == 0 { piece.take() } else { link(seq) };
                queue(Record {
                    topic: topic.clone(),
                    retain: false,
                    payload: Payload::FramedFile {
                        header: framing::header(
                            framing::Kind::Fragment,
                            seq,
                            part.start_ms.max(0) as u64,
                        )
                        .to_vec(),
                        path: owned.clone().unwrap_or_else(|| original.clone()),
                        offset,
                        len: n,
                    },
                    grant: None,
                    owns_file: owned.is_some(),
                })?;
                seq += 1;
                fragments += 1;
                offset += n;
            }
        }
        let manifest = Manifest {
            request_id: grant.id.clone(),
            camera: grant.camera.clone(),
            from: plan.from_ms,
            to: plan.to_ms,
            fragments,
            bytes,
            sha256: hex::encode(hash.finalize()),
        };
        let body = match &link.box_key {
            Some(key) => manifest.signed_body(key).map_err(|e| {
                warn!(error = %e, "Clip manifest not signed");
                "cannot_sign"
            })?,
            None => return Err("cannot_sign"),
        };
        queue(Record::inline(
            topic,
            false,
            framing::encode(framing::Kind::End, seq, 0, &body),
        ))?;
        let completed = Reply {
            request_id: grant.id.clone(),
            status: ReplyStatus::Completed,
            reason: None,
            until: None,
            ts: self.now_ms(),
            seq: self.next_reply_seq(),
        };
        queue(Record::inline(
            up.topics().reply(),
            false,
            serde_json::to_vec(&completed).expect("reply serialises"),
        ))?;
        let entry = NewEntry::new(self.now_ms(), AuditKind::ClipSent, Actor::Gateway)
            .request(&grant.id)
            .camera(&grant.camera)
            .detail(json!({"queued": true, "fragments": manifest.fragments, "bytes": manifest.bytes, "sha256": manifest.sha256, "from": manifest.from, "to": manifest.to}));
        if let Err(e) = self.record(entry) {
            warn!(error = %e, "Audit of a queued clip failed");
        }
        Ok(())
    }

    fn start_feed(self: &Arc<Self>, grant: consent::Grant) {
        let (Some(up), Some(feed)) = (
            self.link().map(|l| l.uplink.clone()),
            self.cameras.live(&grant.camera),
        ) else {
            return;
        };
        let (tx, rx) = watch::channel(None);
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(grant.id.clone(), tx);
        let me = self.clone();
        tokio::spawn(async move {
            let id = grant.id.clone();
            let camera = grant.camera.clone();
            let gate = |now: i64| -> Result<(), LiveEnd> {
                me.engine()
                    .may_send(&id, &camera, Kind::Live, Some(now..now), now)
                    .map(|_| ())
                    .map_err(|r| match r {
                        Refusal::Paused => LiveEnd::Paused,
                        Refusal::GrantExpired => LiveEnd::Expired,
                        Refusal::NoGrant => LiveEnd::Revoked,
                        other => LiveEnd::Refused(other.to_string()),
                    })
            };
            let (reason, report) = live::run_live(
                &feed,
                &up,
                &id,
                me.options.live_max_bitrate,
                &me.options.clock,
                gate,
                rx,
            )
            .await;
            me.feeds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            info!(request = %id, camera = %camera, reason = reason.as_str(), bytes = report.bytes, "Live feed ended");
            let entry = NewEntry::new(me.now_ms(), AuditKind::BytesSent, Actor::Gateway)
                .request(&id)
                .camera(&camera)
                .detail(json!({"kind": "live", "bytes": report.bytes, "messages": report.messages, "dropped": report.dropped, "end": reason.as_str()}));
            if let Err(e) = me.record(entry) {
                warn!(error = %e, "Audit of a live feed failed");
            }
            // A feed that ended on its own (camera lost) while its grant still runs.
            if matches!(reason, LiveEnd::CameraLost) && me.engine().grant(&id).is_some() {
                let _ = me.engine().revoke(&id);
                let _ = me.persist();
                me.reply(&id, ReplyStatus::Failed, Some("camera_lost"), None);
            }
        });
    }

    fn stop_feed(&self, id: &str, reason: LiveEnd) {
        if let Some(tx) = self.feeds.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            let _ = tx.send(Some(reason));
        }
    }

    /// Ends what the engine ended: reply, audit, stop feeds.
    fn ended(&self, events: Vec<Event>, actor: Actor) -> Result<(), SharingError> {
        for ev in events {
            let reason = ev.reason();
            let (status, camera) = match &ev {
                Event::PendingEnded { pending, .. } => (
                    if reason == consent::EndReason::Denied {
                        ReplyStatus::Denied
                    } else {
                        ReplyStatus::Expired
                    },
                    pending.request.camera.clone(),
                ),
                Event::GrantEnded { grant, .. } => (
                    if reason == consent::EndReason::Expired {
                        ReplyStatus::Expired
                    } else {
                        ReplyStatus::Revoked
                    },
                    grant.camera.clone(),
                ),
            };
            let live_reason = match reason {
                consent::EndReason::Expired => LiveEnd::Expired,
                consent::EndReason::Paused => LiveEnd::Paused,
                consent::EndReason::Cancelled => LiveEnd::Cancelled,
                _ => LiveEnd::Revoked,
            };
            self.stop_feed(ev.id(), live_reason);
            let kind = match (&ev, reason) {
                (Event::PendingEnded { .. }, _) => AuditKind::Decision,
                (_, consent::EndReason::Revoked) => AuditKind::Revoke,
                _ => AuditKind::GrantEnd,
            };
            self.record(
                NewEntry::new(self.now_ms(), kind, actor)
                    .request(ev.id())
                    .camera(camera)
                    .detail(json!({"reason": reason.as_str(), "status": status})),
            )?;
            self.reply(ev.id(), status, Some(reason.as_str()), None);
        }
        Ok(())
    }

    /// Forgets seen request ids whose `exp` has passed, once a minute (they would be refused
    /// as `expired` anyway), so the replay record stays bounded.
    fn prune_replay(&self, now: i64) {
        let mut last = self.pruned_ms.lock().unwrap_or_else(|p| p.into_inner());
        if now - *last < 60_000 {
            return;
        }
        *last = now;
        if let Err(e) = self.replay.prune(now / 1000) {
            warn!(error = %e, "Pruning the replay record failed");
        }
    }

    /// Expires pending requests and grants whose time is up. Call about once a second.
    pub fn tick(&self) -> Result<(), SharingError> {
        let now = self.now_ms();
        self.summarise_unverified(now, false)?;
        self.prune_replay(now);
        let events = self.engine().expire(now);
        if events.is_empty() {
            return Ok(());
        }
        self.persist()?;
        self.ended(events, Actor::Gateway)
    }

    /// The resident approves a pending request.
    pub fn approve(self: &Arc<Self>, id: &str) -> Result<consent::Grant, SharingError> {
        let grant = self.engine().approve(id, self.now_ms())?;
        self.persist()?;
        self.record(
            NewEntry::new(self.now_ms(), AuditKind::Decision, Actor::Resident)
                .request(id)
                .camera(&grant.camera)
                .detail(json!({"verdict": "granted", "by": "resident"})),
        )?;
        self.reply(id, ReplyStatus::Granted, None, Some(grant.until_ms));
        self.start_grant(grant.clone())?;
        Ok(grant)
    }

    /// The resident denies a pending request.
    pub fn deny(&self, id: &str) -> Result<(), SharingError> {
        let p = self.engine().deny(id)?;
        self.persist()?;
        self.ended(
            vec![Event::PendingEnded {
                pending: p,
                reason: consent::EndReason::Denied,
            }],
            Actor::Resident,
        )
    }

    /// The resident revokes a grant: its feed stops at once.
    pub fn revoke(&self, id: &str) -> Result<(), SharingError> {
        let g = self.engine().revoke(id)?;
        self.persist()?;
        self.ended(
            vec![Event::GrantEnded {
                grant: g,
                reason: consent::EndReason::Revoked,
            }],
            Actor::Resident,
        )
    }

    /// Pauses all sharing: every grant and pending request ends.
    pub fn pause(&self) -> Result<(), SharingError> {
        let events = self.engine().pause();
        self.persist()?;
        self.record(NewEntry::new(
            self.now_ms(),
            AuditKind::Pause,
            Actor::Resident,
        ))?;
        self.ended(events, Actor::Resident)
    }

    /// Resumes sharing (ended grants stay ended).
    pub fn resume(&self) -> Result<(), SharingError> {
        self.engine().resume();
        self.persist()?;
        self.record(NewEntry::new(
            self.now_ms(),
            AuditKind::Resume,
            Actor::Resident,
        ))
    }

    /// The resident changes a camera's rules.
    pub fn set_rules(&self, camera: &str, rules: CameraRules) -> Result<(), SharingError> {
        if !self.cameras.contains(camera) {
            return Err(SharingError::UnknownCamera(camera.to_owned()));
        }
        let before = self.engine().rules(camera);
        let events = self.engine().set_rules(camera, rules)?;
        self.persist()?;
        self.record(
            NewEntry::new(
                self.now_ms(),
                AuditKind::ConsentRuleChanged,
                Actor::Resident,
            )
            .camera(camera)
            .detail(json!({"before": before, "after": rules})),
        )?;
        self.ended(events, Actor::Resident)
    }

    /// The rules of every camera (deny-by-default for cameras never set).
    pub fn rules(&self) -> Vec<(String, CameraRules)> {
        let engine = self.engine();
        self.cameras
            .ids()
            .into_iter()
            .map(|c| {
                let r = engine.rules(&c);
                (c, r)
            })
            .collect()
    }

    /// Pending requests and active grants, for the resident.
    pub fn requests(&self) -> serde_json::Value {
        let e = self.engine();
        json!({
            "paused": e.is_paused(),
            "pending": e.pending().collect::<Vec<_>>(),
            "grants": e.grants().collect::<Vec<_>>(),
        })
    }

    /// Whether sharing is paused.
    pub fn is_paused(&self) -> bool {
        self.engine().is_paused()
    }

    /// Active grants.
    pub fn grants_active(&self) -> u64 {
        self.engine().grants().count() as u64
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Ends every feed (shutdown).
    pub fn stop_all(&self) {
        for tx in self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = tx.send(Some(LiveEnd::Shutdown));
        }
        // The summary of rejected requests is not left for a period that never ends.
        if let Err(e) = self.summarise_unverified(self.now_ms(), true) {
            warn!(error = %e, "Summary of rejected requests not written");
        }
    }
}

#[cfg(test)]
mod tests;
