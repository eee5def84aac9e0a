//! Shapes the API's deployment and device views from database records (pure).

use super::progress::{device_progress, overall_state, Deployed, DeviceFacts};
use crate::db::{DeploymentRecord, DeviceRecord};
use fleet_schema::api::{DeploymentView, DeviceView};
use fleet_schema::DesiredState;
use std::collections::BTreeMap;

/// The API view of a deployment, with each device's progress.
pub fn deployment_view(
    rec: &DeploymentRecord,
    desired: &BTreeMap<String, DesiredState>,
    devices: &BTreeMap<String, DeviceRecord>,
) -> DeploymentView {
    let deployed = Deployed {
        id: &rec.id,
        app: &rec.application,
        version: &rec.version,
    };
    let progress: BTreeMap<String, _> = rec
        .devices
        .iter()
        .map(|(device, generation)| {
            let current = desired.get(device).and_then(|d| {
                d.apps
                    .iter()
                    .find(|a| a.name == rec.application)
                    .and_then(|a| a.deployment_id.as_deref())
            });
            let facts = DeviceFacts {
                generation: *generation,
                current_deployment: current,
                status: devices.get(device).and_then(|r| r.status.as_ref()),
            };
            (device.clone(), device_progress(deployed, facts))
        })
        .collect();
    DeploymentView {
        id: rec.id.clone(),
        application: rec.application.clone(),
        version: rec.version.clone(),
        strategy: rec.strategy.clone(),
        state: overall_state(progress.values()).to_string(),
        created_at: rec.created_at,
        devices: progress,
    }
}

/// The API view of a device.
pub fn device_view(rec: &DeviceRecord, desired_generation: u64) -> DeviceView {
    let status = rec.status.as_ref();
    DeviceView {
        id: rec.id.clone(),
        online: rec.online,
        labels: rec.labels(),
        inventory: status.and_then(|s| s.inventory.clone()),
        agent_version: status.map(|s| s.agent_version.clone()).unwrap_or_default(),
        desired_generation,
        observed_generation: status.map_or(0, |s| s.observed_generation),
        apps: status.map(|s| s.apps.clone()).unwrap_or_default(),
        last_seen: rec.last_seen,
    }
}
