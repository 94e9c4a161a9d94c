//! The consent engine: the resident's per-camera rules decide what the center may see, and the
//! box enforces it again for every fragment that leaves.
//!
//! Pure code: no I/O, no clock, no sled. Time is always a parameter (UTC milliseconds, `_ms`
//! suffix), and the local time of day comes in as a UTC offset ([`Now::utc_offset_s`]), so the
//! time-zone database stays outside. The caller persists [`CameraRules`] (serde) and, to survive
//! restarts, the [`EngineState`] snapshot.
//!
//! # Rules ([`CameraRules`])
//!
//! Per camera, separately for `live` and `clips`, a [`Mode`]: `never` (the default: nothing is
//! shared unless the resident says so), `ask` (the request waits for the resident, [`Verdict::Pending`])
//! or `always` (granted at once, within the limits). An `emergency` request follows its own
//! mode per kind ([`EmergencyRules`], also `never` by default) and is always shown to the
//! resident ([`Decision::notify_resident`]). Limits: `max_live_s`, `max_clip_window_s` and
//! optional [`Hours`] of the day. Only resident calls change rules ([`Engine::set_rules`]); the
//! center's requests never carry or change them.
//!
//! # Decisions (a request in, [`Decision`] out)
//!
//! In this order:
//! 1. Paused ([`Engine::pause`]): denied `paused`, emergency or not.
//! 2. The mode (the emergency mode for an emergency request): `never` → denied `not_allowed`.
//! 3. Clips: a window longer than `max_clip_window_s` is **denied** `window_too_long`, not
//!    clamped: cutting the window would hand the center a clip it did not ask for, and which
//!    end to cut is a guess. The center can ask again for a narrower window. Live durations,
//!    by contrast, are clamped: `until = now + min(asked, max_live_s)` (docs/design.md).
//! 4. Hours (not for emergencies: an emergency is by nature unscheduled, and a resident who
//!    wants none sets the emergency mode to `never`). Hours limit the *video*, not the time of
//!    the request: a live request outside the hours is denied `outside_hours`, and a live grant
//!    made inside them ends when they end; a clip window must lie wholly inside one allowed
//!    span of hours. Local time is `utc + utc_offset_s` with the offset at decision time (a clip
//!    window across a DST change may be judged an hour off; the caller may pass the offset of
//!    the window instead).
//! 5. `always` → [`Verdict::Granted`]; `ask` → [`Verdict::Pending`] until `now + ask_timeout`
//!    (default 10 min).
//!
//! A pending request becomes a grant only by [`Engine::approve`] (the resident). The approval
//! applies the camera's *current* limits (`max_live_s`, `max_clip_window_s`) but not its hours:
//! the resident decided in person. Approving while paused fails.
//!
//! # Grants
//!
//! A grant's id is the request's `jti`. A live grant covers sending from its start until
//! `until`, for video no older than `start - live_preroll` (so a feed can start at the last
//! keyframe of the pre-roll). A clip grant covers the window `[from, to)` of video, sent before
//! `until = start + clip_grant_ttl` (default 24 h, so an upload survives outages). Grants end by
//! [`Engine::expire`] (time), [`Engine::revoke`] (resident), [`Engine::cancel`] (the center's
//! `cancel` of its own request), [`Engine::pause`] (all of them), a rule change that makes the
//! kind `never` or shortens `max_live_s` ([`Engine::set_rules`]), or [`Engine::remove_camera`].
//! Grants ended by a pause do not come back on resume.
//!
//! # The send-time check
//!
//! [`Engine::may_send`] is called for **every** init, fragment or clip chunk before it leaves
//! the box (also for what waited in the outbox). It looks at the current state and `now`, not at
//! what was true when the item was queued, so revoke, pause and expiry take effect at the next
//! fragment, without waiting for [`Engine::expire`] to run. The end message of a stream is not
//! video and is sent without it.

mod engine;
mod rules;

#[cfg(test)]
mod tests;

pub use engine::{
    evaluate, Cancelled, Decision, DenyReason, EndReason, Engine, EngineOptions, EngineState,
    Event, Grant, GrantedBy, Now, PendingRequest, Refusal, Request, RequestScope, Scope, Verdict,
};
pub use rules::{CameraRules, EmergencyRules, Hours, Kind, Mode};

/// Why a resident or center operation on the engine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// No pending request (for approve/deny) or active grant (for revoke) has this id.
    #[error("no such request or grant: {id}")]
    NotFound {
        /// The request id (jti).
        id: String,
    },
    /// A request with this id is already pending or granted.
    #[error("request {id} is already pending or granted")]
    DuplicateId {
        /// The request id (jti).
        id: String,
    },
    /// The pending request ran out of time before the resident approved it; the next
    /// [`Engine::expire`] reports it.
    #[error("request {id} expired before it was approved")]
    Expired {
        /// The request id (jti).
        id: String,
    },
    /// Sharing is paused: nothing can be approved until [`Engine::resume`].
    #[error("sharing is paused")]
    Paused,
    /// The request does not belong to the camera it was addressed with.
    #[error("request {id} is not for camera {camera}")]
    WrongCamera {
        /// The request id.
        id: String,
        /// The camera named by the caller.
        camera: String,
    },
    /// The rules are invalid; every problem is listed.
    #[error("invalid consent rules: {}", .0.join("; "))]
    InvalidRules(Vec<String>),
}
