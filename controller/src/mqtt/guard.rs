//! The cmd guard. The controller subscribes to `fleet/+/cmd`; a message that is not the
//! desired state in the database, sealed by the controller for that device (an empty payload
//! deleting the retained message, garbage, a forged or replayed state), is answered by
//! republishing the database copy, at most once per device per second. Agents refuse such
//! messages anyway (they are not signed by the controller, or not newer); the repair puts the
//! right state back for devices that connect later. The controller's own echo is recognised by
//! the hash of what it published and ignored.

use super::event_loop::CmdMessage;
use super::inbound::{codec_reason, seal_reason};
use super::PublishQueue;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::trust::registry::ActiveDevice;
use crate::trust::Trust;
use fleet_schema::signing::TrustedKey;
use fleet_schema::trust::{open, OpenParams};
use fleet_schema::{DesiredState, Topic, DEFAULT_MAX_PAYLOAD};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Least time between two repairs of the same device's retained message.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// How a cmd payload that is not our last publish came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Sealed by us for this device with the stored content (an earlier publish of the same
    /// state, e.g. before a restart): nothing to do.
    Ours,
    /// Sealed by us for this device with a lower generation: most likely the echo of our own
    /// previous publish arriving after a newer commit. Repaired, not counted.
    Stale,
    /// Anything else: counted as rejected with this reason, and repaired.
    Foreign(&'static str),
}

/// Classifies a cmd payload against the stored desired state (pure).
pub fn judge(
    controller: &TrustedKey,
    device: &ActiveDevice,
    stored: &DesiredState,
    payload: &[u8],
) -> Difference {
    if payload.is_empty() {
        return Difference::Foreign("empty");
    }
    let Ok(dev) = fleet_schema::DeviceId::parse(&stored.device_id) else {
        return Difference::Foreign("device-mismatch");
    };
    let topic = Topic::Cmd(dev).to_string();
    let opened = match open(
        OpenParams {
            topic: &topic,
            signer: controller,
            me: Some(&device.key.id),
            decrypt: Some(&device.bus_key),
        },
        payload,
        DEFAULT_MAX_PAYLOAD + 4096,
    ) {
        Ok(o) => o,
        Err(e) => return Difference::Foreign(seal_reason(&e)),
    };
    match fleet_schema::decode::<DesiredState>(&opened.body, DEFAULT_MAX_PAYLOAD) {
        Err(e) => Difference::Foreign(codec_reason(&e)),
        Ok(d) if d.device_id != stored.device_id => Difference::Foreign("device-mismatch"),
        Ok(d) if d.generation < stored.generation => Difference::Stale,
        Ok(d) if d == *stored => Difference::Ours,
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
    trust: Arc<Trust>,
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
                check(msg, &db, &trust, &queue, &metrics, &mut limiter).await;
            }
        }
    }
}

/// Compares one cmd message with the database copy and acts on the difference.
async fn check(
    msg: CmdMessage,
    db: &Db,
    trust: &Trust,
    queue: &PublishQueue,
    metrics: &Metrics,
    limiter: &mut RepairLimiter,
) {
    if queue.is_last_published(&msg.device, &msg.payload) {
        return;
    }
    let device = msg.device.clone();
    let stored = match db.call(move |db| db.desired(&device)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, device = %msg.device, "cmd guard cannot read the database");
            return;
        }
    };
    let (Some(stored), Some(active)) = (stored, trust.device(&msg.device)) else {
        let n = metrics.reject("cmd", "no-desired-state");
        if n <= 5 || n.is_multiple_of(1000) {
            tracing::warn!(device = %msg.device, "cmd message for a device without desired state or enrollment; left alone");
        }
        return;
    };
    match judge(&trust.key().trusted(), &active, &stored, &msg.payload) {
        Difference::Ours => return,
        Difference::Stale => {
            tracing::debug!(device = %msg.device, "older desired state seen on cmd; republishing")
        }
        Difference::Foreign(reason) => {
            let n = metrics.reject("cmd", reason);
            if n <= 5 || n.is_multiple_of(1000) {
                tracing::warn!(device = %msg.device, reason, "cmd message is not the controller's current desired state; republishing");
            }
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
        use fleet_schema::trust::{seal, BusKey, SealParams, SigningKey, Stamp};
        let ctl = SigningKey::generate().expect("keygen").0;
        let dev_key = SigningKey::generate().expect("keygen").0;
        let active = ActiveDevice {
            key: dev_key.trusted(),
            bus_key: BusKey([3; 32]),
            password_hash: String::new(),
            labels: Default::default(),
        };
        let stored = state("d", 3);
        let sealed_by = |signer: &SigningKey, s: &DesiredState| {
            seal(
                SealParams {
                    topic: "fleet/d/cmd",
                    signer,
                    to: Some(dev_key.id()),
                    stamp: Stamp::default(),
                    encrypt: Some(&active.bus_key),
                },
                &fleet_schema::encode(s).expect("encodes"),
            )
            .expect("seals")
        };
        let j = |bytes: &[u8]| judge(&ctl.trusted(), &active, &stored, bytes);
        assert_eq!(j(&sealed_by(&ctl, &state("d", 3))), Difference::Ours);
        assert_eq!(j(&sealed_by(&ctl, &state("d", 2))), Difference::Stale);
        assert_eq!(
            j(&sealed_by(&ctl, &state("d", 4))),
            Difference::Foreign("differs")
        );
        assert_eq!(
            j(&sealed_by(&dev_key, &state("d", 9))),
            Difference::Foreign("wrong-signer")
        );
        let plain = fleet_schema::encode(&state("d", 9)).expect("encodes");
        assert_eq!(j(&plain), Difference::Foreign("unsigned"));
        assert_eq!(j(b""), Difference::Foreign("empty"));
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
