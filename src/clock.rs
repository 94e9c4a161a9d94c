//! Wall-clock time, in one place, behind a seam.
//!
//! Leaf layer: imports nothing of this crate. Everything the box stamps (segments, events,
//! replies, audit entries, grant ends) is UTC milliseconds since 1970 from [`now_ms`], and
//! shown to people with [`fmt_ms`].
//!
//! Code whose behaviour depends on time passing (grant expiry, unanswered asks, replay windows)
//! takes a [`Clock`] instead of calling [`now_ms`], so tests can drive it:
//! - [`Clock::system`] is the wall clock (what the daemon uses);
//! - [`Clock::manual`] starts at a given instant and moves only when a test calls
//!   [`Clock::advance`] or [`Clock::set`];
//! - [`Clock::tokio`] follows tokio's clock from a given start, so a test under
//!   `#[tokio::test(start_paused = true)]` moves wall time and timers together.
//!
//! Why not tokio's clock for everything: the appliance boots without an RTC and NTP steps the
//! wall clock later; stamps must follow that step, while timers (`tokio::time`) must not.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Now as UTC milliseconds since 1970 (the wall clock).
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Formats UTC milliseconds as RFC 3339 (seconds precision), or `-` for none or out of range.
pub fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// A source of "now" that tests can control. Cheap to clone; clones share one time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
    Tokio {
        start_ms: i64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock standing at `start_ms` until moved.
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Source::Manual(Arc::new(AtomicI64::new(start_ms))))
    }

    /// A clock at `start_ms` now that advances with tokio's clock (paused time in tests).
    pub fn tokio(start_ms: i64) -> Clock {
        Clock(Source::Tokio {
            start_ms,
            start: tokio::time::Instant::now(),
        })
    }

    /// Now, UTC milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Source::System => now_ms(),
            Source::Manual(t) => t.load(Ordering::SeqCst),
            Source::Tokio { start_ms, start } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*start);
                start_ms.saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            }
        }
    }

    /// The offset of local time from UTC, in seconds, at this clock's now (hours-of-day rules
    /// are local). A manual or tokio clock is in UTC.
    pub fn utc_offset_s(&self) -> i32 {
        match &self.0 {
            Source::System => jiff::Zoned::now().offset().seconds(),
            _ => 0,
        }
    }

    /// Moves a manual clock forward by `ms` (no effect on the others).
    pub fn advance(&self, ms: i64) {
        if let Source::Manual(t) = &self.0 {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock to `ms` (no effect on the others).
    pub fn set(&self, ms: i64) {
        if let Source::Manual(t) = &self.0 {
            t.store(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_ms_is_rfc3339_seconds_or_a_dash() {
        assert_eq!(fmt_ms(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_ms(Some(1_764_000_000_123)), "2025-11-24T16:00:00Z");
        assert_eq!(fmt_ms(None), "-");
        assert_eq!(fmt_ms(Some(i64::MAX)), "-");
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::manual(1_000);
        let d = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        d.advance(250);
        assert_eq!(c.now_ms(), 1_250);
        c.set(5);
        assert_eq!(d.now_ms(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = Clock::tokio(10_000);
        assert_eq!(c.now_ms(), 10_000);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!(c.now_ms(), 100_000);
    }

    #[test]
    fn system_clock_is_the_wall_clock() {
        let before = now_ms();
        let t = Clock::system().now_ms();
        assert!(t >= before && t - before < 60_000);
    }
}
