//! Decisions and grant bookkeeping (see the module doc of [`crate::consent`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{CameraRules, Kind, Mode};
use super::ConsentError;

/// The time of a decision: UTC milliseconds and the local UTC offset (for [`super::Hours`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// UTC milliseconds since the Unix epoch.
    pub utc_ms: i64,
    /// Local time minus UTC, seconds (e.g. `-18000` for UTC-5).
    pub utc_offset_s: i32,
}

impl Now {
    /// `utc_ms` in UTC (offset 0).
    pub fn utc(utc_ms: i64) -> Self {
        Now {
            utc_ms,
            utc_offset_s: 0,
        }
    }
}

/// Tunables of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// How long an `ask` request waits for the resident before it expires (default 10 min).
    pub ask_timeout: Duration,
    /// How long a clip grant may be used to send its window (default 24 h).
    pub clip_grant_ttl: Duration,
    /// How much older than the grant's start the first live video may be, so a feed can start
    /// at the last keyframe of the pre-roll (default 10 s).
    pub live_preroll: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            ask_timeout: Duration::from_secs(600),
            clip_grant_ttl: Duration::from_secs(86_400),
            live_preroll: Duration::from_secs(10),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RequestScope {
    /// A live feed for up to `duration_s` seconds (at least 1).
    Live {
        /// Seconds asked for.
        duration_s: u64,
    },
    /// A clip of the video in `[from_ms, to_ms)` (UTC ms, `from_ms < to_ms`).
    Clip {
        /// Window start, UTC ms.
        from_ms: i64,
        /// Window end (exclusive), UTC ms.
        to_ms: i64,
    },
}

impl RequestScope {
    /// The kind of sharing asked for.
    pub fn kind(&self) -> Kind {
        match self {
            RequestScope::Live { .. } => Kind::Live,
            RequestScope::Clip { .. } => Kind::Clip,
        }
    }
}

/// A validated request from the center (built by `sharing::request`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The request id (`jti`); becomes the grant id.
    pub id: String,
    /// The camera id.
    pub camera: String,
    /// What is asked for.
    pub scope: RequestScope,
    /// Whether the center flagged it as an emergency.
    pub emergency: bool,
    /// Why, in the center's words (shown to the resident).
    pub reason: String,
    /// Case number, if any.
    pub case: Option<String>,
    /// Who asked (officer or unit).
    pub requester: String,
}

/// Who granted a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantedBy {
    /// The camera's `always` rule.
    Rule,
    /// The resident approved an `ask` request.
    Resident,
}

/// What a grant covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scope {
    /// Live video from `start - live_preroll` while `now < until`.
    Live,
    /// Video of the window `[from_ms, to_ms)`.
    Clip {
        /// Window start, UTC ms.
        from_ms: i64,
        /// Window end (exclusive), UTC ms.
        to_ms: i64,
    },
}

/// An active grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The request id (`jti`).
    pub id: String,
    /// The camera.
    pub camera: String,
    /// What it covers.
    pub scope: Scope,
    /// When it began, UTC ms.
    pub start_ms: i64,
    /// When it ends, UTC ms (exclusive): nothing is sent at or after it.
    pub until_ms: i64,
    /// Whether the request was an emergency.
    pub emergency: bool,
    /// The rule or the resident.
    pub granted_by: GrantedBy,
    /// The request, for listings and the audit log.
    pub request: Request,
}

impl Grant {
    /// The kind of sharing granted.
    pub fn kind(&self) -> Kind {
        match self.scope {
            Scope::Live => Kind::Live,
            Scope::Clip { .. } => Kind::Clip,
        }
    }
}

/// A request waiting for the resident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The request.
    pub request: Request,
    /// When it arrived, UTC ms.
    pub received_ms: i64,
    /// When it expires unanswered, UTC ms.
    pub expires_at_ms: i64,
}

/// Why a request was denied (short, snake_case: the `reason` of the `denied` reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// Sharing is paused.
    Paused,
    /// The camera's mode for this kind is `never`.
    NotAllowed,
    /// Outside the camera's hours.
    OutsideHours,
    /// The clip window is longer than `max_clip_window_s`.
    WindowTooLong,
}

impl DenyReason {
    /// The reply's `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Paused => "paused",
            DenyReason::NotAllowed => "not_allowed",
            DenyReason::OutsideHours => "outside_hours",
            DenyReason::WindowTooLong => "window_too_long",
        }
    }
}

/// The outcome of a request.
// Decisions are rare (one per request); boxing the grant would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Granted now (mode `always`); the grant is active.
    Granted(Grant),
    /// Waiting for the resident (mode `ask`) until `expires_at_ms`.
    Pending {
        /// When it expires unanswered, UTC ms.
        expires_at_ms: i64,
    },
    /// Denied.
    Denied {
        /// Why.
        reason: DenyReason,
    },
}

/// A decision on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Granted, pending or denied.
    pub verdict: Verdict,
    /// Whether the resident must be shown it now: every emergency request, whatever the
    /// verdict, and every pending one.
    pub notify_resident: bool,
}

/// Why a pending request or a grant ended (snake_case: the live end message's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Unanswered in time, or the grant ran out.
    Expired,
    /// The resident denied the pending request.
    Denied,
    /// The resident revoked the grant.
    Revoked,
    /// Sharing was paused.
    Paused,
    /// The center cancelled its own request.
    Cancelled,
    /// The resident changed the camera's rules so that this kind is `never`.
    RuleChanged,
    /// The camera was removed.
    CameraRemoved,
}

impl EndReason {
    /// The snake_case string.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Denied => "denied",
            EndReason::Revoked => "revoked",
            EndReason::Paused => "paused",
            EndReason::Cancelled => "cancelled",
            EndReason::RuleChanged => "rule_changed",
            EndReason::CameraRemoved => "camera_removed",
        }
    }
}

/// Something that ended, for replies, end messages and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A pending request ended without a grant.
    PendingEnded {
        /// The request.
        pending: PendingRequest,
        /// Why.
        reason: EndReason,
    },
    /// A grant ended: its stream stops, its queued clip chunks are dropped.
    GrantEnded {
        /// The grant.
        grant: Grant,
        /// Why.
        reason: EndReason,
    },
}

impl Event {
    /// The request id concerned.
    pub fn id(&self) -> &str {
        match self {
            Event::PendingEnded { pending, .. } => &pending.request.id,
            Event::GrantEnded { grant, .. } => &grant.id,
        }
    }

    /// Why it ended.
    pub fn reason(&self) -> EndReason {
        match self {
            Event::PendingEnded { reason, .. } | Event::GrantEnded { reason, .. } => *reason,
        }
    }
}

/// What [`Engine::cancel`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// A request that was still pending.
    Pending(PendingRequest),
    /// An active grant.
    Grant(Grant),
}

/// Why [`Engine::may_send`] refused (short, snake_case, for logs and the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Sharing is paused.
    #[error("paused")]
    Paused,
    /// No active grant has this id (never granted, or ended).
    #[error("no_grant")]
    NoGrant,
    /// The grant is for another camera.
    #[error("wrong_camera")]
    WrongCamera,
    /// The grant is for the other kind.
    #[error("wrong_kind")]
    WrongKind,
    /// `now` is outside `[start, until)` of the grant.
    #[error("grant_expired")]
    GrantExpired,
    /// The video's time is outside what the grant covers.
    #[error("outside_grant")]
    OutsideGrant,
}

/// Everything the engine knows, for persisting across restarts (serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    /// Rules by camera id; a camera without an entry has [`CameraRules::default`].
    pub rules: BTreeMap<String, CameraRules>,
    /// Whether sharing is paused.
    pub paused: bool,
    /// Pending requests by id.
    pub pending: BTreeMap<String, PendingRequest>,
    /// Active grants by id.
    pub grants: BTreeMap<String, Grant>,
}

/// The consent engine: rules, pause switch, pending requests and active grants. Not
/// synchronised; the daemon holds it behind one mutex.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    options: EngineOptions,
    state: EngineState,
}

/// Decides `request` against `rules` without changing anything (the [`Engine::decide`] rules;
/// a granted verdict's grant starts at `now`).
pub fn evaluate(
    rules: &CameraRules,
    paused: bool,
    options: &EngineOptions,
    request: &Request,
    now: Now,
) -> Decision {
    let emergency = request.emergency;
    let verdict = evaluate_verdict(rules, paused, options, request, now);
    let notify_resident = emergency || matches!(verdict, Verdict::Pending { .. });
    Decision {
        verdict,
        notify_resident,
    }
}

fn evaluate_verdict(
    rules: &CameraRules,
    paused: bool,
    options: &EngineOptions,
    request: &Request,
    now: Now,
) -> Verdict {
    let denied = |reason| Verdict::Denied { reason };
    if paused {
        return denied(DenyReason::Paused);
    }
    let kind = request.scope.kind();
    let mode = rules.mode(kind, request.emergency);
    if mode == Mode::Never {
        return denied(DenyReason::NotAllowed);
    }
    if let RequestScope::Clip { from_ms, to_ms } = request.scope {
        let window_ms = to_ms.saturating_sub(from_ms);
        if window_ms > limit_ms(rules.max_clip_window_s) {
            return denied(DenyReason::WindowTooLong);
        }
    }
    // The end of the allowed hours, for clamping a live grant.
    let mut hours_end = i64::MAX;
    if let (Some(hours), false) = (rules.hours, request.emergency) {
        match request.scope {
            RequestScope::Live { .. } => match hours.span_end(now.utc_ms, now.utc_offset_s) {
                Some(end) => hours_end = end,
                None => return denied(DenyReason::OutsideHours),
            },
            RequestScope::Clip { from_ms, to_ms } => {
                if !hours.covers(from_ms, to_ms, now.utc_offset_s) {
                    return denied(DenyReason::OutsideHours);
                }
            }
        }
    }
    match mode {
        Mode::Never => unreachable!("handled above"),
        Mode::Ask => Verdict::Pending {
            expires_at_ms: now.utc_ms.saturating_add(ms(options.ask_timeout)),
        },
        Mode::Always => {
            let mut grant = make_grant(rules, options, request, now.utc_ms, GrantedBy::Rule);
            grant.until_ms = grant.until_ms.min(hours_end);
            Verdict::Granted(grant)
        }
    }
}

fn limit_ms(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)
}

fn make_grant(
    rules: &CameraRules,
    options: &EngineOptions,
    request: &Request,
    now_ms: i64,
    granted_by: GrantedBy,
) -> Grant {
    let (scope, until_ms) = match request.scope {
        RequestScope::Live { duration_s } => {
            let secs = duration_s.min(rules.max_live_s);
            (Scope::Live, now_ms.saturating_add(limit_ms(secs)))
        }
        RequestScope::Clip { from_ms, to_ms } => (
            Scope::Clip { from_ms, to_ms },
            now_ms.saturating_add(ms(options.clip_grant_ttl)),
        ),
    };
    Grant {
        id: request.id.clone(),
        camera: request.camera.clone(),
        scope,
        start_ms: now_ms,
        until_ms,
        emergency: request.emergency,
        granted_by,
        request: request.clone(),
    }
}

impl Engine {
    /// An engine with no rules (everything `never`), not paused, nothing pending.
    pub fn new(options: EngineOptions) -> Self {
        Engine {
            options,
            state: EngineState::default(),
        }
    }

    /// An engine restored from a snapshot taken with [`Engine::state`].
    pub fn restore(options: EngineOptions, state: EngineState) -> Self {
        Engine { options, state }
    }

    /// Everything the engine knows, to persist.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The camera's rules ([`CameraRules::default`] when none were set).
    pub fn rules(&self, camera: &str) -> CameraRules {
        self.state.rules.get(camera).copied().unwrap_or_default()
    }

    /// Sets a camera's rules (a resident call: the center has no path here). Active grants
    /// and pending requests of a kind that became `never` end with
    /// [`EndReason::RuleChanged`]; live grants are shortened to the new `max_live_s`.
    pub fn set_rules(
        &mut self,
        camera: &str,
        rules: CameraRules,
    ) -> Result<Vec<Event>, ConsentError> {
        rules.validate()?;
        self.state.rules.insert(camera.to_owned(), rules);
        let mut events = Vec::new();
        let gone = |emergency: bool, kind: Kind| rules.mode(kind, emergency) == Mode::Never;
        let ended: Vec<String> = self
            .state
            .grants
            .values()
            .filter(|g| g.camera == camera && gone(g.emergency, g.kind()))
            .map(|g| g.id.clone())
            .collect();
        for id in ended {
            let grant = self.state.grants.remove(&id).expect("listed above");
            events.push(Event::GrantEnded {
                grant,
                reason: EndReason::RuleChanged,
            });
        }
        let limit = limit_ms(rules.max_live_s);
        for g in self.state.grants.values_mut() {
            if g.camera == camera && g.kind() == Kind::Live {
                g.until_ms = g.until_ms.min(g.start_ms.saturating_add(limit));
            }
        }
        let ended: Vec<String> = self
            .state
            .pending
            .values()
            .filter(|p| {
                p.request.camera == camera && gone(p.request.emergency, p.request.scope.kind())
            })
            .map(|p| p.request.id.clone())
            .collect();
        for id in ended {
            let pending = self.state.pending.remove(&id).expect("listed above");
            events.push(Event::PendingEnded {
                pending,
                reason: EndReason::RuleChanged,
            });
        }
        Ok(events)
    }

    /// Forgets a camera: its rules go, its grants and pending requests end with
    /// [`EndReason::CameraRemoved`].
    pub fn remove_camera(&mut self, camera: &str) -> Vec<Event> {
        self.state.rules.remove(camera);
        let mut events = Vec::new();
        self.state.grants.retain(|_, g| {
            if g.camera == camera {
                events.push(Event::GrantEnded {
                    grant: g.clone(),
                    reason: EndReason::CameraRemoved,
                });
                false
            } else {
                true
            }
        });
        self.state.pending.retain(|_, p| {
            if p.request.camera == camera {
                events.push(Event::PendingEnded {
                    pending: p.clone(),
                    reason: EndReason::CameraRemoved,
                });
                false
            } else {
                true
            }
        });
        events
    }

    /// Decides a request and records the outcome: a grant becomes active, a pending request
    /// waits. A denied request leaves no state. Fails only for an id already pending or
    /// granted.
    pub fn decide(&mut self, request: &Request, now: Now) -> Result<Decision, ConsentError> {
        if self.state.pending.contains_key(&request.id)
            || self.state.grants.contains_key(&request.id)
        {
            return Err(ConsentError::DuplicateId {
                id: request.id.clone(),
            });
        }
        let rules = self.rules(&request.camera);
        let decision = evaluate(&rules, self.state.paused, &self.options, request, now);
        match &decision.verdict {
            Verdict::Granted(grant) => {
                self.state.grants.insert(grant.id.clone(), grant.clone());
            }
            Verdict::Pending { expires_at_ms } => {
                self.state.pending.insert(
                    request.id.clone(),
                    PendingRequest {
                        request: request.clone(),
                        received_ms: now.utc_ms,
                        expires_at_ms: *expires_at_ms,
                    },
                );
            }
            Verdict::Denied { .. } => {}
        }
        Ok(decision)
    }

    /// The resident approves a pending request: it becomes a grant starting at `now_ms`,
    /// within the camera's current limits. A clip window now longer than `max_clip_window_s`
    /// is granted for its first `max_clip_window_s` (the resident consented to less, not more).
    pub fn approve(&mut self, id: &str, now_ms: i64) -> Result<Grant, ConsentError> {
        let pending = self
            .state
            .pending
            .get(id)
            .ok_or_else(|| ConsentError::NotFound { id: id.to_owned() })?;
        if self.state.paused {
            return Err(ConsentError::Paused);
        }
        if now_ms >= pending.expires_at_ms {
            return Err(ConsentError::Expired { id: id.to_owned() });
        }
        let pending = self.state.pending.remove(id).expect("checked above");
        let rules = self.rules(&pending.request.camera);
        let mut grant = make_grant(
            &rules,
            &self.options,
            &pending.request,
            now_ms,
            GrantedBy::Resident,
        );
        if let Scope::Clip { from_ms, to_ms } = &mut grant.scope {
            *to_ms = (*to_ms).min(from_ms.saturating_add(limit_ms(rules.max_clip_window_s)));
        }
        self.state.grants.insert(grant.id.clone(), grant.clone());
        Ok(grant)
    }

    /// The resident denies a pending request.
    pub fn deny(&mut self, id: &str) -> Result<PendingRequest, ConsentError> {
        self.state
            .pending
            .remove(id)
            .ok_or_else(|| ConsentError::NotFound { id: id.to_owned() })
    }

    /// The resident revokes an active grant; [`Engine::may_send`] refuses it at once.
    pub fn revoke(&mut self, id: &str) -> Result<Grant, ConsentError> {
        self.state
            .grants
            .remove(id)
            .ok_or_else(|| ConsentError::NotFound { id: id.to_owned() })
    }

    /// The center cancels its own request `id`, pending or granted. `camera` is the camera
    /// named in the cancel request and must match.
    pub fn cancel(&mut self, id: &str, camera: &str) -> Result<Cancelled, ConsentError> {
        let wrong = || ConsentError::WrongCamera {
            id: id.to_owned(),
            camera: camera.to_owned(),
        };
        if let Some(g) = self.state.grants.get(id) {
            if g.camera != camera {
                return Err(wrong());
            }
            let g = self.state.grants.remove(id).expect("checked above");
            return Ok(Cancelled::Grant(g));
        }
        if let Some(p) = self.state.pending.get(id) {
            if p.request.camera != camera {
                return Err(wrong());
            }
            let p = self.state.pending.remove(id).expect("checked above");
            return Ok(Cancelled::Pending(p));
        }
        Err(ConsentError::NotFound { id: id.to_owned() })
    }

    /// Pauses all sharing: every grant ends with [`EndReason::Paused`] and every pending
    /// request too (nothing can be approved while paused); new requests are denied until
    /// [`Engine::resume`].
    pub fn pause(&mut self) -> Vec<Event> {
        self.state.paused = true;
        let mut events: Vec<Event> = std::mem::take(&mut self.state.grants)
            .into_values()
            .map(|grant| Event::GrantEnded {
                grant,
                reason: EndReason::Paused,
            })
            .collect();
        events.extend(
            std::mem::take(&mut self.state.pending)
                .into_values()
                .map(|pending| Event::PendingEnded {
                    pending,
                    reason: EndReason::Paused,
                }),
        );
        events
    }

    /// Ends the pause. Grants ended by it stay ended.
    pub fn resume(&mut self) {
        self.state.paused = false;
    }

    /// Whether sharing is paused.
    pub fn is_paused(&self) -> bool {
        self.state.paused
    }

    /// Ends pending requests whose time ran out and grants past `until`, both with
    /// [`EndReason::Expired`]. Call it about once a second (and it is cheap).
    pub fn expire(&mut self, now_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        self.state.pending.retain(|_, p| {
            if now_ms >= p.expires_at_ms {
                events.push(Event::PendingEnded {
                    pending: p.clone(),
                    reason: EndReason::Expired,
                });
                false
            } else {
                true
            }
        });
        self.state.grants.retain(|_, g| {
            if now_ms >= g.until_ms {
                events.push(Event::GrantEnded {
                    grant: g.clone(),
                    reason: EndReason::Expired,
                });
                false
            } else {
                true
            }
        });
        events
    }

    /// Active grants, by id.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.state.grants.values()
    }

    /// Pending requests, by id.
    pub fn pending(&self) -> impl Iterator<Item = &PendingRequest> {
        self.state.pending.values()
    }

    /// An active grant.
    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.state.grants.get(id)
    }

    /// The send-time check, for every init, fragment or clip chunk before it leaves the box.
    ///
    /// `media` is the UTC ms span of the video in it (`None` for an init segment, which holds
    /// no picture). Live: `now_ms` in `[start, until)` and the video starts at or after
    /// `start - live_preroll` and before `until`. Clip: `now_ms` in `[start, until)` and the
    /// video overlaps `[from, to)` (a fragment that begins before `from` is needed to decode
    /// the first frames of the window; at most one GOP precedes it).
    pub fn may_send(
        &self,
        request_id: &str,
        camera: &str,
        kind: Kind,
        media: Option<Range<i64>>,
        now_ms: i64,
    ) -> Result<&Grant, Refusal> {
        if self.state.paused {
            return Err(Refusal::Paused);
        }
        let grant = self.state.grants.get(request_id).ok_or(Refusal::NoGrant)?;
        if grant.camera != camera {
            return Err(Refusal::WrongCamera);
        }
        if grant.kind() != kind {
            return Err(Refusal::WrongKind);
        }
        if now_ms < grant.start_ms || now_ms >= grant.until_ms {
            return Err(Refusal::GrantExpired);
        }
        if let Some(m) = media {
            if m.start > m.end {
                return Err(Refusal::OutsideGrant);
            }
            let ok = match grant.scope {
                Scope::Live => {
                    m.start >= grant.start_ms.saturating_sub(ms(self.options.live_preroll))
                        && m.start < grant.until_ms
                }
                Scope::Clip { from_ms, to_ms } => {
                    // An instant (start == end) counts as the one millisecond it names.
                    let end = m.end.max(m.start.saturating_add(1));
                    m.start < to_ms && end > from_ms
                }
            };
            if !ok {
                return Err(Refusal::OutsideGrant);
            }
        }
        Ok(grant)
    }
}
