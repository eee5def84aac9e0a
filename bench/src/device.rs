//! The protocol logic of one simulated device, without I/O: which status it reports, and how
//! it answers a desired state. A simulated device acknowledges a new desired state at once, as
//! if download, install and start took no time, so the benchmark measures the control plane.

use fleet_schema::{AppPhase, AppStatus, DesiredState, DeviceStatus, Inventory};
use std::collections::BTreeMap;

/// The agent version simulated devices report.
pub const SIM_AGENT_VERSION: &str = concat!("fleet-sim/", env!("CARGO_PKG_VERSION"));

/// The state one simulated device holds.
#[derive(Debug, Clone)]
pub struct SimDevice {
    id: String,
    generation: u64,
    apps: Vec<AppStatus>,
}

impl SimDevice {
    /// A fresh device with no apps and generation 0.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            generation: 0,
            apps: Vec::new(),
        }
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full status published on every connect: online, inventory with label `sim=1`, apps.
    pub fn status(&self, now_ms: u64) -> DeviceStatus {
        DeviceStatus {
            device_id: self.id.clone(),
            online: true,
            agent_version: SIM_AGENT_VERSION.into(),
            inventory: Some(inventory()),
            observed_generation: self.generation,
            apps: self.apps.clone(),
            reported_at: now_ms,
            refused: None,
        }
    }

    /// The last will: offline, no inventory, no apps.
    pub fn offline_will(&self) -> DeviceStatus {
        DeviceStatus {
            device_id: self.id.clone(),
            online: false,
            agent_version: SIM_AGENT_VERSION.into(),
            inventory: None,
            observed_generation: 0,
            apps: Vec::new(),
            reported_at: 0,
            refused: None,
        }
    }

    /// Applies a desired state, as the agent does. A generation lower than the one held (a
    /// stale retained copy) or addressed to another device changes nothing and returns `None`;
    /// the generation already held is a controller asking again because it missed our status,
    /// so the current status is returned for re-publishing; a higher one reports every desired
    /// app running at its desired version.
    pub fn on_desired(&mut self, desired: &DesiredState, now_ms: u64) -> Option<DeviceStatus> {
        if desired.device_id != self.id || desired.generation < self.generation {
            return None;
        }
        if desired.generation == self.generation {
            return (self.generation > 0).then(|| self.status(now_ms));
        }
        self.generation = desired.generation;
        self.apps = desired
            .apps
            .iter()
            .map(|app| AppStatus {
                name: app.name.clone(),
                version: app.version.clone(),
                phase: AppPhase::Running,
                restart_count: 0,
                last_error: None,
                running_version: Some(app.version.clone()),
                deployment_id: app.deployment_id.clone(),
                health: Default::default(),
                health_message: None,
                components: Vec::new(),
            })
            .collect();
        Some(self.status(now_ms))
    }
}

/// The inventory every simulated device reports.
fn inventory() -> Inventory {
    Inventory {
        arch: "amd64".into(),
        os: "linux".into(),
        kernel: "6.1.0-sim".into(),
        total_memory: 512 * 1024 * 1024,
        free_storage: 4 * 1024 * 1024 * 1024,
        cpu_mhz: 1200,
        capabilities: vec!["binary".into()],
        labels: BTreeMap::from([("sim".to_string(), "1".to_string())]),
    }
}

/// Whether `desired` asks for `app` at `version` (the deployment under measurement).
pub fn wants(desired: &DesiredState, app: &str, version: &str) -> bool {
    desired
        .apps
        .iter()
        .any(|a| a.name == app && a.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{ArtifactRef, ArtifactType, DesiredApp};

    fn desired(device: &str, generation: u64, version: &str) -> DesiredState {
        DesiredState {
            device_id: device.into(),
            generation,
            apps: vec![DesiredApp {
                name: "sim-app".into(),
                version: version.into(),
                artifact: ArtifactRef {
                    name: "sim-app".into(),
                    version: version.into(),
                    kind: ArtifactType::Binary,
                    size: 3,
                    sha256: "00".into(),
                    url: "http://127.0.0.1/x".into(),
                    ..Default::default()
                },
                deployment_id: Some("dep-1".into()),
                spec: Default::default(),
                rollout: None,
                components: Vec::new(),
            }],
            issued_at: 0,
        }
    }

    #[test]
    fn fresh_device_reports_online_with_the_sim_label() {
        let d = SimDevice::new("sim-1");
        let s = d.status(42);
        assert!(s.online);
        assert_eq!(s.observed_generation, 0);
        assert!(s.apps.is_empty());
        let labels = s.inventory.expect("inventory present").labels;
        assert_eq!(labels.get("sim").map(String::as_str), Some("1"));
        let will = d.offline_will();
        assert!(!will.online && will.inventory.is_none() && will.apps.is_empty());
    }

    #[test]
    fn new_generation_is_acknowledged_as_running() {
        let mut d = SimDevice::new("sim-1");
        let s = d
            .on_desired(&desired("sim-1", 3, "1.0.0"), 7)
            .expect("higher generation is applied");
        assert_eq!(s.observed_generation, 3);
        assert_eq!(s.reported_at, 7);
        assert_eq!(s.apps.len(), 1);
        let app = &s.apps[0];
        assert_eq!(
            (app.name.as_str(), app.version.as_str()),
            ("sim-app", "1.0.0")
        );
        assert_eq!(app.phase, AppPhase::Running);
        assert_eq!(app.deployment_id.as_deref(), Some("dep-1"));
        assert_eq!(d.status(0).observed_generation, 3);
        // The reconnect status carries the new state too.
        assert_eq!(d.status(8).apps, s.apps);
    }

    #[test]
    fn stale_or_foreign_desired_states_are_ignored_and_repeats_re_reported() {
        let mut d = SimDevice::new("sim-1");
        assert!(d.on_desired(&desired("sim-1", 2, "1.0.0"), 0).is_some());
        // The generation already held: re-report the same status, unchanged.
        let again = d
            .on_desired(&desired("sim-1", 2, "2.0.0"), 0)
            .expect("a repeated generation is re-reported");
        assert_eq!(again.apps[0].version, "1.0.0");
        assert!(d.on_desired(&desired("sim-1", 1, "2.0.0"), 0).is_none());
        assert!(d.on_desired(&desired("sim-2", 9, "2.0.0"), 0).is_none());
        assert_eq!(d.status(0).apps[0].version, "1.0.0");
        assert!(wants(&desired("sim-1", 1, "1.0.0"), "sim-app", "1.0.0"));
        assert!(!wants(&desired("sim-1", 1, "1.0.0"), "sim-app", "2.0.0"));
    }
}
