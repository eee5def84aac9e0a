//! Recovery times of the fault suite: each fault test starts a clock when the fault ends (the
//! process restarted, the link restored, space freed) and stops it at the positive signal that
//! the system is whole again, then prints one line that docs/faults.md is built from.

use std::time::{Duration, Instant};

/// A clock started when a fault ended.
pub struct Recovery {
    fault: &'static str,
    since: Instant,
}

impl Recovery {
    /// Starts timing the recovery from `fault`, which has just ended.
    pub fn start(fault: &'static str) -> Recovery {
        Recovery {
            fault,
            since: Instant::now(),
        }
    }

    /// Stops the clock at the positive signal `signal`, prints
    /// `FAULT-RECOVERY <fault>: <ms> ms until <signal>` and returns the time.
    pub fn done(self, signal: &str) -> Duration {
        let took = self.since.elapsed();
        eprintln!(
            "FAULT-RECOVERY {}: {} ms until {signal}",
            self.fault,
            took.as_millis()
        );
        took
    }
}
