//! The resident's rules for one camera, as stored and shown (serde).

use serde::{Deserialize, Serialize};

use super::ConsentError;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Longest `max_live_s` accepted: one day.
pub(crate) const MAX_LIVE_LIMIT_S: u64 = 86_400;
/// Longest `max_clip_window_s` accepted: seven days.
pub(crate) const MAX_CLIP_WINDOW_LIMIT_S: u64 = 7 * 86_400;

/// What happens to a request of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denied without asking (the default: nothing is shared unless the resident says so).
    #[default]
    Never,
    /// The request waits for the resident's approval.
    Ask,
    /// Granted at once, within the limits.
    Always,
}

impl Mode {
    /// `"never"`, `"ask"` or `"always"` (as the heartbeat's `sharing` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Never => "never",
            Mode::Ask => "ask",
            Mode::Always => "always",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Mode::Never),
            "ask" => Ok(Mode::Ask),
            "always" => Ok(Mode::Always),
            _ => Err(format!("{s:?}: expected never, ask or always")),
        }
    }
}

/// What is shared: a live feed or a clip of buffered video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A live feed.
    Live,
    /// A clip of buffered video.
    Clip,
}

impl Kind {
    /// `"live"` or `"clip"` (the request's `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Live => "live",
            Kind::Clip => "clip",
        }
    }
}

/// Hours of the day (local time) during which video may be shared: `[start_hour, end_hour)`.
/// `start_hour > end_hour` wraps midnight (`22..6` is 22:00 to 06:00); `0..24` is all day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// First hour inside the window, 0..=23.
    pub start_hour: u8,
    /// First hour after the window, 0..=24; differs from `start_hour`.
    pub end_hour: u8,
}

impl Hours {
    fn problems(&self, out: &mut Vec<String>) {
        if self.start_hour > 23 {
            out.push(format!(
                "hours.start_hour {} is not 0..=23",
                self.start_hour
            ));
        }
        if self.end_hour > 24 {
            out.push(format!("hours.end_hour {} is not 0..=24", self.end_hour));
        }
        if self.start_hour == self.end_hour {
            out.push("hours.start_hour equals hours.end_hour (use 0..24 for all day)".to_owned());
        }
    }

    fn all_day(&self) -> bool {
        self.start_hour == 0 && self.end_hour == 24
    }

    /// The allowed span `[a, b)` (local milliseconds) that contains `local_ms`, if any.
    /// `None` for all day means "no limit"; callers check [`Hours::all_day`] first.
    fn span_containing(&self, local_ms: i64) -> Option<(i64, i64)> {
        let day = local_ms.div_euclid(DAY_MS) * DAY_MS;
        let s = i64::from(self.start_hour) * HOUR_MS;
        let e = i64::from(self.end_hour) * HOUR_MS;
        let candidates = if self.start_hour < self.end_hour {
            [(day + s, day + e), (day + s, day + e)]
        } else {
            // Wrapping: the span that began yesterday evening, or the one beginning today.
            [(day - DAY_MS + s, day + e), (day + s, day + DAY_MS + e)]
        };
        candidates
            .into_iter()
            .find(|&(a, b)| a <= local_ms && local_ms < b)
    }

    /// The end (UTC ms) of the allowed span containing `utc_ms`, `Some(i64::MAX)` for all
    /// day, `None` when `utc_ms` is outside the hours.
    pub(crate) fn span_end(&self, utc_ms: i64, utc_offset_s: i32) -> Option<i64> {
        if self.all_day() {
            return Some(i64::MAX);
        }
        let off = i64::from(utc_offset_s) * 1000;
        self.span_containing(utc_ms.saturating_add(off))
            .map(|(_, b)| b - off)
    }

    /// Whether the whole window `[from_ms, to_ms)` (UTC) lies inside one allowed span.
    pub(crate) fn covers(&self, from_ms: i64, to_ms: i64, utc_offset_s: i32) -> bool {
        match self.span_end(from_ms, utc_offset_s) {
            Some(end) => to_ms <= end,
            None => false,
        }
    }
}

/// The modes used for requests flagged `emergency` (instead of [`CameraRules::live`] and
/// [`CameraRules::clips`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmergencyRules {
    /// Mode for emergency live requests.
    pub live: Mode,
    /// Mode for emergency clip requests.
    pub clips: Mode,
}

/// One camera's sharing rules. Missing keys take their defaults, so `{}` is "share nothing".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraRules {
    /// Mode for live requests.
    pub live: Mode,
    /// Mode for clip requests.
    pub clips: Mode,
    /// Modes for emergency requests; hours do not apply to them.
    pub emergency: EmergencyRules,
    /// Longest live grant, seconds (1..=86400); longer asks are clamped. Default 900 (15 min).
    pub max_live_s: u64,
    /// Longest clip window `to - from`, seconds (1..=604800); longer asks are denied.
    /// Default 3600 (1 h).
    pub max_clip_window_s: u64,
    /// Hours of the day when video may be shared; `None` is all day.
    pub hours: Option<Hours>,
}

impl Default for CameraRules {
    fn default() -> Self {
        CameraRules {
            live: Mode::Never,
            clips: Mode::Never,
            emergency: EmergencyRules::default(),
            max_live_s: 900,
            max_clip_window_s: 3600,
            hours: None,
        }
    }
}

impl CameraRules {
    /// The mode that decides a request of `kind`, emergency or not.
    pub fn mode(&self, kind: Kind, emergency: bool) -> Mode {
        match (kind, emergency) {
            (Kind::Live, false) => self.live,
            (Kind::Clip, false) => self.clips,
            (Kind::Live, true) => self.emergency.live,
            (Kind::Clip, true) => self.emergency.clips,
        }
    }

    /// Checks the limits and hours, reporting every problem at once.
    pub fn validate(&self) -> Result<(), ConsentError> {
        let mut problems = Vec::new();
        if !(1..=MAX_LIVE_LIMIT_S).contains(&self.max_live_s) {
            problems.push(format!(
                "max_live_s {} is not 1..={MAX_LIVE_LIMIT_S}",
                self.max_live_s
            ));
        }
        if !(1..=MAX_CLIP_WINDOW_LIMIT_S).contains(&self.max_clip_window_s) {
            problems.push(format!(
                "max_clip_window_s {} is not 1..={MAX_CLIP_WINDOW_LIMIT_S}",
                self.max_clip_window_s
            ));
        }
        if let Some(h) = &self.hours {
            h.problems(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConsentError::InvalidRules(problems))
        }
    }
}
