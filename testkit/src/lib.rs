//! The test kit of the FleetD workspace: one copy of what the tests of every crate need (a
//! dev-dependency only; no shipped binary links it).
//!
//! - [`external`]: the rule for tests that need a server or tool from outside the workspace
//!   (skip loudly, or fail under `FLEET_REQUIRE_EXTERNAL=1`);
//! - [`mosquitto`]: a real Mosquitto broker on an ephemeral port;
//! - [`wait_until`] and [`free_port`]: polling with a deadline instead of fixed sleeps, and
//!   ports for test servers.

pub mod external;
pub mod mosquitto;
mod ports;

pub use external::{require_tool, skip_or_fail};
pub use mosquitto::{Mosquitto, MosquittoAuth};
pub use ports::free_port;

use std::time::{Duration, Instant};

/// The largest packet test clients accept or send: twice FleetD's own limit, so a test can
/// publish a packet FleetD must refuse, and read whatever a broker hands out.
pub const TEST_CLIENT_MAX_PACKET: usize = 2 * fleet_schema::MAX_PACKET_SIZE;

/// How often [`wait_until`] evaluates its condition.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `cond` every [`POLL_EVERY`] until it holds (true) or `timeout` passes (false): the
/// positive signal a test waits for instead of sleeping a fixed time.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_sees_a_late_condition_and_gives_up_on_a_false_one() {
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || start.elapsed()
            > Duration::from_millis(120)));
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(150), || false));
        assert!(start.elapsed() >= Duration::from_millis(150));
    }
}
