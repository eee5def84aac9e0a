//! The health state machine of one app process, pure: the shell asks when the next probe is
//! due, runs it, and feeds the verdict back with the time. Failures inside the start period do
//! not count; `retries` consecutive failures make the app unhealthy; one pass makes it healthy.

use fleet_schema::app_spec::{HealthCheck, ProbeKind};
use fleet_schema::HealthState;
use std::time::{Duration, Instant};

/// Longest wait before the first probe (a long interval would otherwise delay "running").
pub const FIRST_PROBE_MAX: Duration = Duration::from_secs(1);

/// Tracks one process's health.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    check: HealthCheck,
    started: Instant,
    next_at: Instant,
    in_flight: bool,
    failures: u32,
    state: HealthState,
    message: Option<String>,
}

impl HealthTracker {
    /// A tracker for a process started at `started`.
    pub fn new(check: HealthCheck, started: Instant) -> Self {
        let first = Duration::from_millis(check.interval_ms).min(FIRST_PROBE_MAX);
        let state = if check.probe == ProbeKind::Unsupported {
            HealthState::Unknown
        } else {
            HealthState::Starting
        };
        Self {
            check,
            started,
            next_at: started + first,
            in_flight: false,
            failures: 0,
            state,
            message: None,
        }
    }

    /// The check being run.
    pub fn check(&self) -> &HealthCheck {
        &self.check
    }

    /// How long one probe may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.check.timeout_ms.max(1))
    }

    /// When the next probe is due; `None` while one runs or for an unsupported probe.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.in_flight && self.check.probe != ProbeKind::Unsupported).then_some(self.next_at)
    }

    /// True when a probe should start now; marks it in flight.
    pub fn begin(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|t| now >= t) {
            self.in_flight = true;
            true
        } else {
            false
        }
    }

    /// Feeds a probe's verdict; returns true when the reported health changed.
    pub fn on_result(&mut self, result: Result<(), String>, now: Instant) -> bool {
        self.in_flight = false;
        self.next_at = now + Duration::from_millis(self.check.interval_ms.max(1));
        let before = (self.state.clone(), self.message.clone());
        match result {
            Ok(()) => {
                self.failures = 0;
                self.state = HealthState::Healthy;
                self.message = None;
            }
            Err(e) => {
                let in_start_period =
                    now < self.started + Duration::from_millis(self.check.start_period_ms);
                if !in_start_period {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures >= self.check.retries.max(1) {
                        self.state = HealthState::Unhealthy;
                        self.message = Some(e);
                    }
                }
            }
        }
        before != (self.state.clone(), self.message.clone())
    }

    /// The current verdict.
    pub fn state(&self) -> &HealthState {
        &self.state
    }

    /// Detail of the current verdict (the failing probe's error).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck {
            probe: ProbeKind::Tcp { port: 1 },
            interval_ms: 2000,
            timeout_ms: 500,
            retries,
            start_period_ms,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn needs_retries_consecutive_failures_and_one_pass_heals() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(check(3, 0), t0);
        assert_eq!(h.state(), &HealthState::Starting);
        assert_eq!(h.deadline(), Some(t0 + FIRST_PROBE_MAX));
        assert!(!h.begin(t0), "not due yet");
        let mut now = t0 + FIRST_PROBE_MAX;
        assert!(h.begin(now));
        assert_eq!(h.deadline(), None, "one probe at a time");
        assert!(h.on_result(Ok(()), now));
        assert_eq!(h.state(), &HealthState::Healthy);
        for i in 0..3 {
            now += ms(2000);
            assert!(h.begin(now));
            let changed = h.on_result(Err("connection refused".into()), now);
            assert_eq!(changed, i == 2, "failure {i}");
        }
        assert_eq!(h.state(), &HealthState::Unhealthy);
        assert_eq!(h.message(), Some("connection refused"));
        now += ms(2000);
        assert!(h.begin(now));
        assert!(h.on_result(Ok(()), now));
        assert_eq!(h.state(), &HealthState::Healthy);
        assert_eq!(h.message(), None);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(check(1, 5000), t0);
        let mut now = t0 + FIRST_PROBE_MAX;
        h.begin(now);
        assert!(!h.on_result(Err("refused".into()), now));
        assert_eq!(h.state(), &HealthState::Starting);
        now += ms(5000);
        h.begin(now);
        assert!(h.on_result(Err("refused".into()), now));
        assert_eq!(h.state(), &HealthState::Unhealthy);
    }

    #[test]
    fn a_pass_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(check(2, 0), t0);
        let mut now = t0;
        for r in [Err("x".to_string()), Ok(()), Err("y".to_string())] {
            now += ms(2000);
            h.begin(now);
            h.on_result(r, now);
        }
        assert_eq!(
            h.state(),
            &HealthState::Healthy,
            "only one failure since the pass"
        );
    }

    #[test]
    fn unsupported_probes_stay_unknown_and_never_run() {
        let mut c = check(1, 0);
        c.probe = ProbeKind::Unsupported;
        let t0 = Instant::now();
        let mut h = HealthTracker::new(c, t0);
        assert_eq!(h.state(), &HealthState::Unknown);
        assert_eq!(h.deadline(), None);
        assert!(!h.begin(t0 + Duration::from_secs(100)));
    }
}
