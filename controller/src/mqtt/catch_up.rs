//! Catching up devices that missed their desired state. MQTT retained messages are not enough
//! on their own: rumqttd 0.20 does not resend a retained message when a client with a kept
//! session subscribes again, and a publish can be lost with a session. So whenever an online
//! device reports a lower generation than the one desired for it (on each status, and in a
//! periodic sweep), the controller republishes that device's desired state, at most once per
//! device per [`CATCH_UP_INTERVAL`].

use super::PublishQueue;
use crate::db::Db;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Least time between two catch-up republishes to the same device (a device busy accepting a
/// new generation may report the old one a few more times).
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(3);

/// How often the sweep looks for devices that are behind.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Per-device rate limit on catch-up republishes (pure: the caller passes the time).
#[derive(Debug, Default)]
pub struct CatchUpLimiter {
    last: HashMap<String, Instant>,
}

impl CatchUpLimiter {
    /// The devices among `behind` that may be republished at `now` (and records them).
    pub fn admit(&mut self, behind: Vec<String>, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for device in behind {
            let recent = self
                .last
                .get(&device)
                .is_some_and(|&t| now.duration_since(t) < CATCH_UP_INTERVAL);
            if !recent {
                self.last.insert(device.clone(), now);
                out.push(device);
            }
        }
        if self.last.len() > 100_000 {
            self.last
                .retain(|_, t| now.duration_since(*t) < CATCH_UP_INTERVAL);
        }
        out
    }
}

/// Periodically republishes desired state to online devices that are behind.
pub async fn sweep(db: Db, queue: Arc<PublishQueue>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut limiter = CatchUpLimiter::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match db.call(|db| db.behind_devices()).await {
            Ok(behind) => {
                let due = limiter.admit(behind, Instant::now());
                if !due.is_empty() {
                    tracing::info!(
                        devices = due.len(),
                        "republishing desired state to devices that are behind"
                    );
                    queue.mark_devices(due);
                }
            }
            Err(e) => tracing::error!(error = %e, "catch-up sweep cannot read the database"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_each_device_once_per_interval() {
        let mut l = CatchUpLimiter::default();
        let t0 = Instant::now();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(l.admit(ids(&["a", "b"]), t0), ids(&["a", "b"]));
        assert!(l.admit(ids(&["a"]), t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(l.admit(ids(&["a"]), t0 + CATCH_UP_INTERVAL), ids(&["a"]));
    }
}
