//! Blue-green on the device, as pure decisions on a given clock: which instance of an app takes
//! new connections, and when the old instance may stop. The new version starts next to the old
//! one; once it has been running (and healthy, with a health check) for the validation period it
//! takes the traffic, and the old one is kept for the switch delay so a switch back is instant.
//! An app that serves no port has no traffic to switch: its old instance stops at the switch.

use fleet_schema::BlueGreenHint;
use std::time::{Duration, Instant};

/// One supervised instance of an app, as the traffic switch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Version the instance runs.
    pub version: &'a str,
    /// Since when it has been running (past startup and first health check); `None` if not.
    pub running_since: Option<Instant>,
    /// A stop was requested.
    pub stopping: bool,
}

/// When a new instance running since `running_since` has validated and takes over.
pub fn switch_at(hint: &BlueGreenHint, running_since: Instant) -> Instant {
    running_since + Duration::from_millis(hint.validation_ms)
}

/// When the old instances may stop: at the switch for an app without ports, `switch_delay`
/// after it for one that serves ports.
pub fn old_stop_at(hint: &BlueGreenHint, running_since: Instant, serves_ports: bool) -> Instant {
    let at = switch_at(hint, running_since);
    if serves_ports {
        at + Duration::from_millis(hint.switch_delay_ms)
    } else {
        at
    }
}

/// Whether the other instances of an app may be stopped now that the desired version runs
/// (since `running_since`). Without a blue-green hint: as soon as it runs.
pub fn old_may_stop(
    hint: Option<&BlueGreenHint>,
    serves_ports: bool,
    running_since: Option<Instant>,
    now: Instant,
) -> bool {
    match (hint, running_since) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(t)) => now >= old_stop_at(h, t, serves_ports),
    }
}

/// The version that should receive new connections: the desired one once it has validated (or
/// runs with no other running instance to serve meanwhile), else a running older instance, else
/// the desired one while it starts (connections wait for it).
pub fn choose_active<'a>(
    hint: &BlueGreenHint,
    desired: &str,
    candidates: &[Candidate<'a>],
    now: Instant,
) -> Option<&'a str> {
    let new = candidates
        .iter()
        .find(|c| c.version == desired && !c.stopping);
    let old = candidates
        .iter()
        .find(|c| c.version != desired && !c.stopping && c.running_since.is_some());
    if let Some(n) = new {
        if let Some(t) = n.running_since {
            if now >= switch_at(hint, t) || old.is_none() {
                return Some(n.version);
            }
        }
    }
    old.or(new).map(|c| c.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: BlueGreenHint = BlueGreenHint {
        validation_ms: 3_000,
        switch_delay_ms: 5_000,
    };

    fn c(version: &str, running_since: Option<Instant>) -> Candidate<'_> {
        Candidate {
            version,
            running_since,
            stopping: false,
        }
    }

    #[test]
    fn traffic_moves_after_validation_and_old_stops_after_the_switch_delay() {
        let t0 = Instant::now();
        let new_up = t0 + Duration::from_secs(1);
        let at = |s: u64| t0 + Duration::from_millis(s);
        // v2 starting: v1 serves.
        let cands = [c("1", Some(t0)), c("2", None)];
        assert_eq!(choose_active(&HINT, "2", &cands, at(500)), Some("1"));
        // v2 running but not validated yet: still v1.
        let cands = [c("1", Some(t0)), c("2", Some(new_up))];
        assert_eq!(choose_active(&HINT, "2", &cands, at(3_999)), Some("1"));
        // validated: v2.
        assert_eq!(choose_active(&HINT, "2", &cands, at(4_000)), Some("2"));
        // old kept for the switch delay when serving ports, stopped at the switch otherwise.
        assert!(!old_may_stop(Some(&HINT), true, Some(new_up), at(8_999)));
        assert!(old_may_stop(Some(&HINT), true, Some(new_up), at(9_000)));
        assert!(!old_may_stop(Some(&HINT), false, Some(new_up), at(3_999)));
        assert!(old_may_stop(Some(&HINT), false, Some(new_up), at(4_000)));
        assert!(!old_may_stop(Some(&HINT), false, None, at(60_000)));
        assert!(old_may_stop(None, true, None, at(0)));
    }

    #[test]
    fn switching_back_to_a_validated_instance_is_instant() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        // Desired goes back to v1 (running since t0) while v2 still runs: v1 at once.
        let cands = [c("1", Some(t0)), c("2", Some(at(1_000)))];
        assert_eq!(choose_active(&HINT, "1", &cands, at(5_000)), Some("1"));
    }

    #[test]
    fn first_instance_serves_as_soon_as_it_runs_and_stopping_ones_never_do() {
        let t0 = Instant::now();
        assert_eq!(choose_active(&HINT, "1", &[c("1", None)], t0), Some("1"));
        assert_eq!(
            choose_active(&HINT, "1", &[c("1", Some(t0))], t0),
            Some("1")
        );
        let stopping = Candidate {
            stopping: true,
            ..c("1", Some(t0))
        };
        assert_eq!(choose_active(&HINT, "2", &[stopping], t0), None);
    }
}
