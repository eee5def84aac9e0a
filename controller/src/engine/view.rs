//! Shapes the API's deployment and device views from database records (pure).

use super::progress::{device_progress, overall_state, Deployed, DeviceFacts};
use crate::model::{DeploymentRecord, DeviceRecord, Phase, Rollout};
use fleet_schema::api::{
    DeploymentView, DeviceProgress, DeviceView, RolloutView, StepView, TriggerView,
};
use fleet_schema::DesiredState;
use std::collections::BTreeMap;

/// The API view of a deployment, with each device's progress and, for a staged rollout, its
/// steps, phase and the trigger that fired.
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
    let one = |device: &String| {
        if let Some(r) = &rec.rollout {
            if r.reverted.contains(device) {
                return DeviceProgress::RolledBack;
            }
        }
        let Some(generation) = rec.devices.get(device) else {
            return DeviceProgress::Waiting;
        };
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
        device_progress(deployed, facts)
    };
    let targets: Vec<&String> = match &rec.rollout {
        Some(r) => r.targets.iter().collect(),
        None => rec.devices.keys().collect(),
    };
    let progress: BTreeMap<String, DeviceProgress> =
        targets.into_iter().map(|d| (d.clone(), one(d))).collect();
    let rollout = rec.rollout.as_ref().map(|r| rollout_view(r, &progress));
    let state = match &rec.rollout {
        Some(r) if r.phase == Phase::Running => "in-progress".to_string(),
        Some(r) if r.phase != Phase::Succeeded => r.phase.as_str().to_string(),
        _ => overall_state(progress.values()).to_string(),
    };
    DeploymentView {
        id: rec.id.clone(),
        application: rec.application.clone(),
        version: rec.version.clone(),
        strategy: rec.strategy.clone(),
        state,
        created_at: rec.created_at,
        devices: progress,
        rollout,
    }
}

fn rollout_view(r: &Rollout, progress: &BTreeMap<String, DeviceProgress>) -> RolloutView {
    let steps = (0..r.steps.len())
        .map(|i| {
            let devices: Vec<String> = r.step_devices(i).to_vec();
            let count = |f: &dyn Fn(&DeviceProgress) -> bool| {
                devices
                    .iter()
                    .filter(|d| progress.get(*d).is_some_and(f))
                    .count()
            };
            let healthy = count(&|p| matches!(p, DeviceProgress::Succeeded));
            let failed = count(&|p| matches!(p, DeviceProgress::Failed { .. }));
            let rolled_back = count(&|p| matches!(p, DeviceProgress::RolledBack));
            let state = if rolled_back > 0 {
                "rolled-back"
            } else if i < r.step || (i == r.step && r.phase == Phase::Succeeded) {
                "succeeded"
            } else if i == r.step {
                "active"
            } else {
                "waiting"
            };
            StepView {
                devices,
                healthy,
                failed,
                state: state.into(),
            }
        })
        .collect();
    RolloutView {
        phase: r.phase.as_str().into(),
        current_step: r.step,
        steps,
        trigger: r.fired.as_ref().map(|f| TriggerView {
            kind: f.kind.clone(),
            detail: f.detail.clone(),
            observed: f.observed,
            threshold: f.threshold,
            action: f.action.as_str().into(),
            at: f.at,
        }),
        ineligible: r.ineligible.clone(),
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
        enrollment: None,
        refused: status.and_then(|s| s.refused.clone()),
    }
}
