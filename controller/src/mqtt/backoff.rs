//! Jittered exponential backoff between reconnect attempts (rumqttc retries immediately, which
//! would hammer a broker that is down, and in step with every other client).

use rand::Rng;
use std::time::Duration;

/// Delays from 100 ms doubling to 10 s, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// A backoff starting at `min` and capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            current: min,
            min,
            max,
        }
    }

    /// The next delay (between half and all of the current step), then doubles the step.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=jitter_ms))
    }

    /// Back to the first step (after a successful connection).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut rng = rand::rng();
        let mut b = Backoff::default();
        let first = b.next_delay(&mut rng);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(10));
        }
        let capped = b.next_delay(&mut rng);
        assert!(capped >= Duration::from_secs(5), "{capped:?}");
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
