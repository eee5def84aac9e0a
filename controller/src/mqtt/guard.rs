//! The cmd guard. The controller subscribes to `fleet/+/cmd`; a message that differs from the
//! desired state in the database (an empty payload deleting the retained message, garbage,
//! someone else's state) is answered by republishing the database copy, at most once per
//! device per second. The controller's own echo is byte-identical and ignored.

use super::event_loop::CmdMessage;
use super::inbound::codec_reason;
use super::PublishQueue;
use crate::db::Db;
use crate::metrics::Metrics;
use fleet_schema::{DesiredState, DEFAULT_MAX_PAYLOAD};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Least time between two repairs of the same device's retained message.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// How a cmd payload that differs from the database copy came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A valid desired state for this device with a lower generation: most likely the echo of
    /// our own previous publish arriving after a newer commit. Repaired, not counted.
    Stale,
    /// Anything else: counted as rejected with this reason, and repaired.
    Foreign(&'static str),
}

/// Classifies a payload that differs from the stored bytes (pure).
pub fn judge(stored: &DesiredState, payload: &[u8]) -> Difference {
    match fleet_schema::decode::<DesiredState>(payload, DEFAULT_MAX_PAYLOAD) {
        Err(e) => Difference::Foreign(codec_reason(&e)),
        Ok(d) if d.device_id != stored.device_id => Difference::Foreign("device-mismatch"),
        Ok(d) if d.generation < stored.generation => Difference::Stale,
        Ok(_) => Difference::Foreign("differs"),
    }
}

/// Per-device rate limit on repairs (pure: the caller passes the time).
#[derive(Debug, Default)]
pub struct RepairLimiter {
    last: HashMap<String, Instant>,
    deferred: HashMap<String, Instant>,
}

impl RepairLimiter {
    /// Asks to repair `device` at `now`: true when it may be done now (and is recorded);
    /// otherwise it is deferred to the earliest allowed time.
    pub fn request(&mut self, device: &str, now: Instant) -> bool {
        match self.last.get(device) {
            Some(&t) if now.duration_since(t) < REPAIR_INTERVAL => {
                self.deferred
                    .entry(device.to_string())
                    .or_insert(t + REPAIR_INTERVAL);
                false
            }
            _ => {
                self.last.insert(device.to_string(), now);
                self.deferred.remove(device);
                true
            }
        }
    }

    /// Deferred repairs that are due at `now` (recorded as done).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let ready: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for d in &ready {
            self.deferred.remove(d);
            self.last.insert(d.clone(), now);
        }
        self.last
            .retain(|_, &mut t| now.duration_since(t) < REPAIR_INTERVAL * 10);
        ready
    }
}

/// Runs until the input closes or shutdown.
pub async fn run(
    mut rx: mpsc::Receiver<CmdMessage>,
    db: Db,
    queue: Arc<PublishQueue>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut limiter = RepairLimiter::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let due = limiter.due(Instant::now());
                if !due.is_empty() {
                    metrics.cmd_repaired.fetch_add(due.len() as u64, Ordering::Relaxed);
                    queue.mark_devices(due);
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                check(msg, &db, &queue, &metrics, &mut limiter).await;
            }
        }
    }
}

/// Compares one cmd message with the database copy and acts on the difference.
async fn check(
    msg: CmdMessage,
    db: &Db,
    queue: &PublishQueue,
    metrics: &Metrics,
    limiter: &mut RepairLimiter,
) {
    let device = msg.device.clone();
    let stored = match db.call(move |db| db.desired_bytes(&device)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, device = %msg.device, "cmd guard cannot read the database");
            return;
        }
    };
    let Some(stored) = stored else {
        let reason = match fleet_schema::decode::<DesiredState>(&msg.payload, DEFAULT_MAX_PAYLOAD) {
            Err(e) => codec_reason(&e),
            Ok(_) => "no-desired-state",
        };
        tracing::warn!(device = %msg.device, reason, "cmd message for a device without desired state; left alone");
        metrics.reject("cmd", reason);
        return;
    };
    if stored == msg.payload {
        return;
    }
    let stored_state = match fleet_schema::decode::<DesiredState>(&stored, usize::MAX) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, device = %msg.device, "stored desired state does not decode");
            return;
        }
    };
    match judge(&stored_state, &msg.payload) {
        Difference::Stale => {
            tracing::debug!(device = %msg.device, "older desired state seen on cmd; republishing")
        }
        Difference::Foreign(reason) => {
            tracing::warn!(device = %msg.device, reason, "cmd message differs from the database; republishing");
            metrics.reject("cmd", reason);
        }
    }
    if limiter.request(&msg.device, Instant::now()) {
        metrics.cmd_repaired.fetch_add(1, Ordering::Relaxed);
        queue.mark_devices([msg.device]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(device: &str, generation: u64) -> DesiredState {
        DesiredState {
            device_id: device.into(),
            generation,
            apps: vec![],
            issued_at: 0,
        }
    }

    #[test]
    fn judges_differences() {
        let stored = state("d", 3);
        let enc = |s: &DesiredState| fleet_schema::encode(s).expect("encodes");
        assert_eq!(judge(&stored, &enc(&state("d", 2))), Difference::Stale);
        assert_eq!(
            judge(&stored, &enc(&state("d", 4))),
            Difference::Foreign("differs")
        );
        assert_eq!(
            judge(&stored, &enc(&state("e", 1))),
            Difference::Foreign("device-mismatch")
        );
        assert_eq!(judge(&stored, b""), Difference::Foreign("empty"));
    }

    #[test]
    fn repairs_are_limited_per_device() {
        let mut l = RepairLimiter::default();
        let t0 = Instant::now();
        assert!(l.request("a", t0));
        assert!(!l.request("a", t0 + Duration::from_millis(10)));
        assert!(l.request("b", t0 + Duration::from_millis(10)));
        assert!(l.due(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(
            l.due(t0 + Duration::from_millis(1000)),
            vec!["a".to_string()]
        );
        assert!(l.due(t0 + Duration::from_millis(1500)).is_empty());
    }
}
