//! Capped exponential backoff with jitter, for every reconnect loop (cameras, the city link,
//! certificate renewal), forever.
//!
//! Leaf layer: pure bookkeeping, the caller sleeps. Jitter (up to +25 %) keeps a house full of cameras
//! that lost power together from reconnecting in lockstep.

use std::time::Duration;

/// Reconnect delay state for one camera.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt, given a jitter fraction in `[0, 1)` (scaled to at most
    /// +25 %). Doubles the following delay, capped.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + base.mul_f64(jitter.clamp(0.0, 1.0) * 0.25)
    }

    /// Back to the initial delay, after a session that streamed long enough to count as healthy.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_there() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let got: Vec<u64> = (0..7).map(|_| b.next_delay(0.0).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(4));
        assert_eq!(b.next_delay(0.999_999).as_millis(), 4999);
        assert_eq!(b.next_delay(7.0), Duration::from_secs(5));
    }

    #[test]
    fn reset_returns_to_the_initial_delay() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        for _ in 0..10 {
            b.next_delay(0.0);
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
    }

    #[test]
    fn a_cap_below_the_initial_delay_is_raised_to_it() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(5));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(5));
    }
}
