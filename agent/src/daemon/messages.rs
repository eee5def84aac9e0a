//! Incoming bus traffic: connects, desired states, controller presence and requests. Every
//! payload must first pass [`Daemon::open_sealed`] (signed by the pinned controller key for
//! this topic, addressed to this device, decrypted with its bus key, not replayed), then the
//! bounded codec; anything unusable is refused, logged, counted, shown in the status, and leaves
//! the agent's state untouched.

use super::trust::Kind;
use super::Daemon;
use crate::bus::{BusEvent, PubCmd};
use fleet_schema::artifact::{validate_name, validate_version};
use fleet_schema::{ControllerStatus, DesiredState, Topic, DEFAULT_MAX_PAYLOAD};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest random delay before re-announcing to a controller that came online.
const REANNOUNCE_MAX_MS: u64 = 2000;

impl Daemon {
    pub(super) fn on_bus(&mut self, ev: BusEvent, now: Instant) {
        match ev {
            BusEvent::Connected => {
                self.inventory = self.exec.inventory(&self.cfg.labels);
                self.publish_status();
                let _ = self.publisher.send(PubCmd::Connected);
            }
            BusEvent::Disconnected => {
                let _ = self.publisher.send(PubCmd::Disconnected);
            }
            BusEvent::CredentialsRefused => self.reenroll(),
            BusEvent::Message { topic, payload } => match Topic::parse(&topic) {
                Ok(Topic::Cmd(dev)) if dev == self.cfg.device_id => {
                    if let Some(body) = self.open_sealed(&topic, &payload, Kind::Desired) {
                        self.on_desired(&body);
                    }
                }
                Ok(Topic::ControllerStatus) => {
                    if let Some(body) = self.open_sealed(&topic, &payload, Kind::Presence) {
                        self.on_controller(&body);
                    }
                }
                Ok(Topic::Req(dev)) if dev == self.cfg.device_id => {
                    if let Some(body) = self.open_sealed(&topic, &payload, Kind::Request) {
                        self.on_request(&body, now);
                    }
                }
                _ => tracing::debug!(%topic, "ignoring message on unexpected topic"),
            },
        }
    }

    fn reject(&mut self, topic: &str, reason: &str) {
        self.refuse(topic, reason);
    }

    fn on_desired(&mut self, payload: &[u8]) {
        let topic = Topic::Cmd(self.cfg.device_id.clone()).to_string();
        let desired: DesiredState = match fleet_schema::decode(payload, DEFAULT_MAX_PAYLOAD) {
            Ok(d) => d,
            Err(e) => return self.reject(&topic, &e.to_string()),
        };
        if let Err(reason) = check_desired(&desired, self.cfg.device_id.as_str()) {
            return self.reject(&topic, &reason);
        }
        self.take_desired(desired);
    }

    /// Takes a desired state that was opened and checked: a newer generation is persisted and
    /// applied, the one held is re-reported, an older one refused.
    pub(super) fn take_desired(&mut self, desired: DesiredState) {
        let topic = Topic::Cmd(self.cfg.device_id.clone()).to_string();
        let have = self.desired.as_ref().map_or(0, |d| d.generation);
        if desired.generation == have && have > 0 {
            // The controller resends a generation we hold when its view says we are behind:
            // it missed our status (a broker queue overflowed, a resumed session). Report
            // again so its view catches up; the publisher coalesces bursts.
            tracing::debug!(
                generation = have,
                "desired state repeated; re-reporting status"
            );
            let _ = self.publisher.send(PubCmd::RepublishAfter(Duration::ZERO));
            return;
        }
        if desired.generation < have {
            // Signed by the controller but older: a replay, or a stale retained copy.
            return self.reject(
                &topic,
                &format!(
                    "desired state generation {} is older than the generation {have} this device holds",
                    desired.generation
                ),
            );
        }
        if desired.generation == have {
            return;
        }
        if let Err(e) = self.exec.save_desired(&desired) {
            tracing::error!(error = %e, "cannot persist desired state; not applying it");
            return;
        }
        tracing::info!(
            generation = desired.generation,
            apps = desired.apps.len(),
            "accepted desired state"
        );
        self.accept(Some(desired));
        // A new generation retries what failed before.
        for st in self.apps.values_mut() {
            st.obs.failure = None;
            st.retry.reset();
        }
        self.sups.retain(|_, e| !e.sup.is_failed());
    }

    fn on_controller(&mut self, payload: &[u8]) {
        let topic = Topic::ControllerStatus.to_string();
        let status: ControllerStatus = match fleet_schema::decode(payload, DEFAULT_MAX_PAYLOAD) {
            Ok(s) => s,
            Err(e) => return self.reject(&topic, &e.to_string()),
        };
        if status.online && status.http_url.is_some() {
            self.controller_url = status.http_url.clone();
        }
        if !status.online || self.last_controller_at == Some(status.at) {
            return;
        }
        self.last_controller_at = Some(status.at);
        let delay = Duration::from_millis(rand::random_range(0..=REANNOUNCE_MAX_MS));
        tracing::info!(
            at = status.at,
            delay_ms = delay.as_millis() as u64,
            "controller online; re-announcing"
        );
        let _ = self.publisher.send(PubCmd::RepublishAfter(delay));
    }
}

/// Checks what the codec cannot: the device id, and names and versions that become paths.
pub(super) fn check_desired(d: &DesiredState, device: &str) -> Result<(), String> {
    if d.device_id != device {
        return Err(format!(
            "desired state is for device {:?}, not {device:?}",
            d.device_id
        ));
    }
    let mut seen = BTreeSet::new();
    for app in &d.apps {
        validate_name(&app.name)?;
        validate_version(&app.version).map_err(|e| format!("app {}: {e}", app.name))?;
        if !seen.insert(app.name.as_str()) {
            return Err(format!("app {} is listed twice", app.name));
        }
    }
    crate::components::check(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{ArtifactRef, ArtifactType, DesiredApp};

    fn app(name: &str, version: &str) -> DesiredApp {
        DesiredApp {
            name: name.into(),
            version: version.into(),
            artifact: ArtifactRef {
                name: name.into(),
                version: version.into(),
                kind: ArtifactType::Binary,
                size: 1,
                sha256: "00".into(),
                url: "http://x".into(),
                ..Default::default()
            },
            deployment_id: None,
            spec: Default::default(),
            rollout: None,
            components: Vec::new(),
        }
    }

    #[test]
    fn desired_state_checks() {
        let mut d = DesiredState {
            device_id: "d1".into(),
            generation: 1,
            apps: vec![app("web", "1.0.0")],
            issued_at: 0,
        };
        assert!(check_desired(&d, "d1").is_ok());
        assert!(check_desired(&d, "d2")
            .expect_err("wrong device")
            .contains("d2"));
        d.apps.push(app("../etc", "1.0.0"));
        assert!(check_desired(&d, "d1").is_err());
        d.apps[1] = app("web", "1.0.1");
        assert!(check_desired(&d, "d1").expect_err("dup").contains("twice"));
        d.apps[1] = app("db", "../../1");
        assert!(check_desired(&d, "d1").is_err());
        // A malformed component list refuses the whole desired state (shown in `refused`).
        let mut several = crate::components::tests::seed_app();
        several.components[1].name = several.components[0].name.clone();
        d.apps = vec![several];
        let e = check_desired(&d, "d1").expect_err("duplicate component");
        assert!(
            e.contains("component inference-engine is listed twice"),
            "{e}"
        );
    }
}
