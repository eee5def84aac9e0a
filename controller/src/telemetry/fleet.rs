//! The per-fleet families computed from the database at each scrape: devices known, devices per
//! app version, deployments per state, each recent deployment's rollout progress, and the
//! rollback triggers fired. Computed, not counted, so they survive restarts like the database.

use super::expose::{counter, gauge, label, Labels};
use crate::engine::view::deployment_view;
use crate::model::{DeploymentRecord, DeviceRecord};
use fleet_schema::api::{DeploymentState, DeploymentView, DeviceProgress};
use fleet_schema::DesiredState;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::fmt;

/// Besides every deployment still in progress, the newest ones given per-deployment series
/// (finished rollouts stay on the dashboard for a while, and the series count stays bounded).
pub const RECENT_DEPLOYMENTS: usize = 10;

/// What the fleet families are computed from.
pub struct FleetFacts<'a> {
    /// Every device record.
    pub devices: &'a BTreeMap<String, DeviceRecord>,
    /// Every deployment, oldest first.
    pub deployments: &'a [DeploymentRecord],
    /// Every desired state.
    pub desired: &'a BTreeMap<String, DesiredState>,
    /// Whether a device is enrolled.
    pub enrolled: &'a dyn Fn(&str) -> bool,
}

/// The progress label of a device's progress.
fn progress_label(p: &DeviceProgress) -> &'static str {
    match p {
        DeviceProgress::Succeeded => "succeeded",
        DeviceProgress::Failed { .. } => "failed",
        DeviceProgress::InProgress { .. } => "in-progress",
        DeviceProgress::Pending => "pending",
        DeviceProgress::Superseded => "superseded",
        DeviceProgress::RolledBack => "rolled-back",
        DeviceProgress::Waiting => "waiting",
    }
}

/// True for the states of a deployment that has not ended (moving, or paused by an operator).
fn is_active(state: &DeploymentState) -> bool {
    state.outcome().is_none()
}

/// Writes every fleet family.
pub fn encode(enc: &mut DescriptorEncoder<'_>, facts: &FleetFacts<'_>) -> fmt::Result {
    let enrolled: Vec<&DeviceRecord> = facts
        .devices
        .iter()
        .filter(|(id, _)| (facts.enrolled)(id))
        .map(|(_, r)| r)
        .collect();
    gauge(
        enc,
        "fleetd_devices",
        "Enrolled devices known to fleetd (fleetd_devices_online of them are online).",
        [(Labels::new(), enrolled.len() as u64)],
    )?;
    let mut versions: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for r in &enrolled {
        for a in r.status.iter().flat_map(|s| &s.apps) {
            let v = a.serving_version();
            *versions.entry((a.name.as_str(), v)).or_insert(0) += 1;
        }
    }
    gauge(
        enc,
        "fleetd_app_version_devices",
        "Devices whose last status reports the app at this version.",
        versions
            .iter()
            .map(|((app, v), n)| (vec![label("app", *app), label("version", *v)], *n)),
    )?;

    let views: Vec<DeploymentView> = facts
        .deployments
        .iter()
        .map(|d| deployment_view(d, facts.desired, facts.devices))
        .collect();
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    let mut fired: BTreeMap<&str, u64> = BTreeMap::new();
    for v in &views {
        *states.entry(v.state.as_str()).or_insert(0) += 1;
        if let Some(t) = v.rollout.as_ref().and_then(|r| r.trigger.as_ref()) {
            *fired.entry(t.kind.as_str()).or_insert(0) += 1;
        }
    }
    gauge(
        enc,
        "fleetd_deployments",
        "Deployments per state (in-progress, succeeded, failed, rolled-back, ...).",
        states.iter().map(|(s, n)| (vec![label("state", *s)], *n)),
    )?;
    counter(
        enc,
        "fleetd_rollback_triggers_fired",
        "Rollback triggers fired, by kind (crash-loop, error-rate, health-check, ...).",
        fired.iter().map(|(k, n)| (vec![label("kind", *k)], *n)),
    )?;

    let newest = views.len().saturating_sub(RECENT_DEPLOYMENTS);
    let shown: Vec<&DeploymentView> = views
        .iter()
        .enumerate()
        .filter(|(i, v)| *i >= newest || is_active(&v.state))
        .map(|(_, v)| v)
        .collect();
    let base = |v: &DeploymentView| -> Labels<'static> {
        vec![
            label("deployment", v.id.clone()),
            label("app", v.application.clone()),
            label("version", v.version.clone()),
        ]
    };
    gauge(
        enc,
        "fleetd_deployment_progress_ratio",
        "Share of a deployment's target devices running the new version (0 to 1).",
        shown.iter().map(|v| {
            let done = v
                .devices
                .values()
                .filter(|p| matches!(p, DeviceProgress::Succeeded))
                .count();
            (base(v), done as f64 / v.devices.len().max(1) as f64)
        }),
    )?;
    gauge(
        enc,
        "fleetd_deployment_devices",
        "A deployment's target devices per progress (succeeded, failed, pending, ...).",
        shown.iter().flat_map(|v| {
            let mut per: BTreeMap<&str, u64> = BTreeMap::new();
            for p in v.devices.values() {
                *per.entry(progress_label(p)).or_insert(0) += 1;
            }
            per.into_iter().map(move |(p, n)| {
                let mut l = base(v);
                l.push(label("progress", p));
                (l, n)
            })
        }),
    )?;
    let staged = || {
        shown
            .iter()
            .filter_map(|v| v.rollout.as_ref().map(|r| (v, r)))
    };
    gauge(
        enc,
        "fleetd_deployment_step",
        "The step a staged rollout is at (1-based), with its phase as a label.",
        staged().map(|(v, r)| {
            let mut l = base(v);
            l.push(label("phase", r.phase.clone()));
            (l, r.current_step as u64 + 1)
        }),
    )?;
    gauge(
        enc,
        "fleetd_deployment_steps",
        "How many steps a staged rollout has.",
        staged().map(|(v, r)| (base(v), r.steps.len() as u64)),
    )?;
    gauge(
        enc,
        "fleetd_deployment_step_devices",
        "Devices of each rollout step: total, healthy at the new version, failed.",
        staged().flat_map(|(v, r)| {
            r.steps.iter().enumerate().flat_map(move |(i, s)| {
                [
                    ("total", s.devices.len()),
                    ("healthy", s.healthy),
                    ("failed", s.failed),
                ]
                .into_iter()
                .map(move |(state, n)| {
                    let mut l = base(v);
                    l.push(label("step", (i + 1).to_string()));
                    l.push(label("state", state));
                    (l, n as u64)
                })
            })
        }),
    )
}
