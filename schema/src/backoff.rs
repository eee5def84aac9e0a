//! Exponential backoff, shared by every retry loop of FleetD (the agent's and fleetd's broker
//! reconnects, the agent's failed downloads and app restarts) so they all grow, cap and reset
//! the same way. Pure: no clock and no random source; the caller sleeps, and passes in the
//! random number for jitter, so tests are deterministic.

use std::time::Duration;

/// A doubling delay between `initial` and `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff whose first delay is `initial`, doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempts: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempts.min(20);
        self.attempts = self.attempts.saturating_add(1);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// Spreads a delay over `[d/2, d]` using `r` in `[0, 1)`, so that many devices that lost the
/// same broker do not reconnect in lockstep.
pub fn jitter(d: Duration, r: f64) -> Duration {
    let r = r.clamp(0.0, 1.0);
    d.mul_f64(0.5 + r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let got: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_range() {
        let d = Duration::from_secs(10);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(5));
        assert!(jitter(d, 0.999) <= d);
        assert!(jitter(d, 0.999) > Duration::from_secs(9));
        assert_eq!(jitter(d, 7.0), d, "out-of-range input is clamped");
    }
}
