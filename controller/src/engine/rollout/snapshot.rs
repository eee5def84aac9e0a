//! What the pure engine sees of the fleet at one instant: per target device, presence and the
//! state of the deployed app; per device, request and error counts over the error window.

pub use crate::engine::error_window::ErrorCounts;
use crate::engine::error_window::ErrorWindows;
use crate::model::{DeploymentRecord, DeviceRecord};
use fleet_schema::{AppPhase, AppStatus, HealthState};
use std::collections::BTreeMap;

/// The deployed application as one device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppObs {
    /// Version the status is about.
    pub version: String,
    /// Its phase.
    pub phase: AppPhase,
    /// Restarts of that version.
    pub restart_count: u32,
    /// Health verdict.
    pub health: HealthState,
    /// Last error.
    pub error: Option<String>,
    /// The deployment the device's desired state named for this app when it reported.
    pub deployment_id: Option<String>,
}

impl From<&AppStatus> for AppObs {
    /// What the engine judges of a reported app: for an app made of components, the fold of
    /// all of them (running and healthy only when every component is).
    fn from(a: &AppStatus) -> Self {
        let (phase, health) = a.overall();
        Self {
            version: a.version.clone(),
            phase,
            restart_count: a.restart_count,
            health,
            error: a.last_error.clone(),
            deployment_id: a.deployment_id.clone(),
        }
    }
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceObs {
    /// Connected.
    pub online: bool,
    /// Last time heard from.
    pub last_seen: u64,
    /// The app, if reported.
    pub app: Option<AppObs>,
}

/// The fleet at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Devices by id (absent: never heard from).
    pub devices: BTreeMap<String, DeviceObs>,
    /// Error counts by device.
    pub errors: BTreeMap<String, ErrorCounts>,
}

/// What the rollout deploys.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The new version.
    pub version: &'a str,
    /// Whether the app has a health check (then only `healthy` counts as healthy).
    pub has_healthcheck: bool,
    /// The deployment's id: a failure reported under another deployment (the same version
    /// deployed again, before the device saw the new desired state) is not this one's.
    pub deployment_id: &'a str,
}

/// A device's standing with respect to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Running the new version and healthy.
    Healthy,
    /// Not there yet (downloading, starting, unhealthy, another version).
    Progressing,
    /// Reported failure of the new version.
    Failed(String),
    /// Offline longer than the offline timeout.
    Offline,
}

/// Classifies one device.
pub fn standing(
    obs: Option<&DeviceObs>,
    ctx: Ctx<'_>,
    now: u64,
    offline_timeout_ms: u64,
) -> Standing {
    let Some(obs) = obs else {
        return Standing::Progressing;
    };
    if !obs.online && now.saturating_sub(obs.last_seen) > offline_timeout_ms {
        return Standing::Offline;
    }
    match &obs.app {
        Some(a) if a.version == ctx.version => match (&a.phase, &a.health) {
            (AppPhase::Running, HealthState::Healthy) => Standing::Healthy,
            (AppPhase::Running, HealthState::Unknown) if !ctx.has_healthcheck => Standing::Healthy,
            (AppPhase::Failed, _)
                if a.deployment_id
                    .as_deref()
                    .is_none_or(|d| d == ctx.deployment_id) =>
            {
                Standing::Failed(
                    a.error
                        .clone()
                        .unwrap_or_else(|| "device reported failure without a reason".into()),
                )
            }
            _ => Standing::Progressing,
        },
        _ => Standing::Progressing,
    }
}

/// What the engine sees of a deployment's targets: each target's presence and its report of
/// the deployment's application, and the error counts of the devices it touched (not
/// reverted) over the trigger's window.
pub fn of(
    rec: &DeploymentRecord,
    devices: &BTreeMap<String, DeviceRecord>,
    errors: &ErrorWindows,
    now: u64,
) -> Snapshot {
    let Some(r) = &rec.rollout else {
        return Snapshot::default();
    };
    let obs = r
        .targets
        .iter()
        .filter_map(|d| {
            let dev = devices.get(d)?;
            let app = dev
                .status
                .as_ref()
                .and_then(|s| s.apps.iter().find(|a| a.name == rec.application))
                .map(AppObs::from);
            Some((
                d.clone(),
                DeviceObs {
                    online: dev.online,
                    last_seen: dev.last_seen,
                    app,
                },
            ))
        })
        .collect();
    let touched = r.touched.iter().filter(|d| !r.reverted.contains(*d));
    Snapshot {
        devices: obs,
        errors: errors.counts(
            &rec.application,
            touched,
            now,
            r.params.triggers.error_window_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::ComponentStatus;

    fn component(phase: AppPhase, health: HealthState) -> ComponentStatus {
        ComponentStatus {
            name: "c".into(),
            artifact_version: "1.0.0".into(),
            phase,
            restart_count: 0,
            last_error: None,
            health,
            health_message: None,
        }
    }

    #[test]
    fn a_device_counts_healthy_only_when_every_component_is() {
        let mut app = AppStatus {
            name: "edge".into(),
            version: "2.0.0".into(),
            phase: AppPhase::Running,
            restart_count: 0,
            last_error: None,
            running_version: None,
            deployment_id: None,
            health: HealthState::Healthy,
            health_message: None,
            components: vec![
                component(AppPhase::Running, HealthState::Healthy),
                component(AppPhase::Running, HealthState::Unhealthy),
            ],
        };
        let ctx = Ctx {
            version: "2.0.0",
            has_healthcheck: true,
            deployment_id: "d-1",
        };
        let judge = |app: &AppStatus| {
            let obs = DeviceObs {
                online: true,
                last_seen: 0,
                app: Some(AppObs::from(app)),
            };
            standing(Some(&obs), ctx, 0, 1_000)
        };
        assert_eq!(
            judge(&app),
            Standing::Progressing,
            "one component unhealthy"
        );
        app.components[1] = component(AppPhase::Starting, HealthState::Unknown);
        assert_eq!(judge(&app), Standing::Progressing, "one component starting");
        app.components[1] = component(AppPhase::Running, HealthState::Unknown);
        assert_eq!(judge(&app), Standing::Healthy, "no check on the second");
        app.components[1] = component(AppPhase::Failed, HealthState::Unknown);
        app.last_error = Some("component model: exited".into());
        assert_eq!(
            judge(&app),
            Standing::Failed("component model: exited".into())
        );
    }

    #[test]
    fn a_failure_reported_under_another_deployment_is_not_this_ones() {
        let ctx = Ctx {
            version: "2.0.0",
            has_healthcheck: false,
            deployment_id: "d-2",
        };
        let obs = |deployment: Option<&str>| DeviceObs {
            online: true,
            last_seen: 0,
            app: Some(AppObs {
                version: "2.0.0".into(),
                phase: AppPhase::Failed,
                restart_count: 0,
                health: HealthState::Unknown,
                error: Some("sha256 mismatch".into()),
                deployment_id: deployment.map(str::to_string),
            }),
        };
        let judge = |o: DeviceObs| standing(Some(&o), ctx, 0, 60_000);
        assert_eq!(judge(obs(Some("d-1"))), Standing::Progressing, "stale");
        assert_eq!(
            judge(obs(Some("d-2"))),
            Standing::Failed("sha256 mismatch".into())
        );
        assert_eq!(
            judge(obs(None)),
            Standing::Failed("sha256 mismatch".into()),
            "a report naming no deployment counts"
        );
    }
}
