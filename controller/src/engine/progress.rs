//! Deployment progress, as pure functions of the deployment, what the controller currently
//! desires for the device, and the device's last status. No I/O: the API recomputes progress
//! on every read, so it is always consistent with the database and survives restarts for free.

use fleet_schema::api::{DeploymentState, DeviceProgress};
use fleet_schema::{AppPhase, DeviceStatus};

/// The deployment-side facts about one target device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// The desired-state generation this deployment wrote for the device.
    pub generation: u64,
    /// The deployment id the device's current desired state carries for this application
    /// (`None` when the application is no longer desired there).
    pub current_deployment: Option<&'a str>,
    /// The device's last full status, if it ever reported one.
    pub status: Option<&'a DeviceStatus>,
}

/// What a deployment asked for.
#[derive(Debug, Clone, Copy)]
pub struct Deployed<'a> {
    /// Deployment id.
    pub id: &'a str,
    /// Application name.
    pub app: &'a str,
    /// Version deployed.
    pub version: &'a str,
}

/// Progress of one device:
/// - `superseded` when its desired state no longer carries this deployment for the app (a
///   newer deployment of the same app took over);
/// - `succeeded` when it reports the app at the deployed version, phase `running`;
/// - `failed` when it reports the app at this version, phase `failed`, and the report is about
///   this deployment (its observed generation reached the one we wrote, or the app status names
///   this deployment); an older failure of the same version counts as `pending`;
/// - `in-progress` for `downloading`, `installing`, `starting` or `crash-loop` at this version;
/// - `pending` otherwise (no status yet, another version, or any other phase).
pub fn device_progress(deployed: Deployed<'_>, facts: DeviceFacts<'_>) -> DeviceProgress {
    if facts.current_deployment != Some(deployed.id) {
        return DeviceProgress::Superseded;
    }
    let Some(status) = facts.status else {
        return DeviceProgress::Pending;
    };
    let Some(app) = status
        .apps
        .iter()
        .find(|a| a.name == deployed.app && a.version == deployed.version)
    else {
        return DeviceProgress::Pending;
    };
    let about_this = status.observed_generation >= facts.generation
        || app.deployment_id.as_deref() == Some(deployed.id);
    // An app made of components is as far along as its least advanced component.
    let (phase, _) = app.overall();
    match &phase {
        AppPhase::Running => DeviceProgress::Succeeded,
        AppPhase::Failed if about_this => DeviceProgress::Failed {
            reason: app
                .last_error
                .clone()
                .unwrap_or_else(|| "device reported failure without a reason".into()),
        },
        AppPhase::Downloading | AppPhase::Installing | AppPhase::Starting | AppPhase::CrashLoop => {
            DeviceProgress::InProgress {
                phase: phase.to_string(),
            }
        }
        _ => DeviceProgress::Pending,
    }
}

/// State of a deployment record written before rollouts existed (it has no rollout to derive
/// the state from, and the engine never moves it on), from its devices' progress:
/// - `in-progress` while any device is pending or in progress;
/// - otherwise `failed` when any device failed;
/// - otherwise `succeeded` when at least one device succeeded (superseded devices are ignored);
/// - `superseded` when every device was taken over by newer deployments.
///
/// Every other deployment shows its rollout's phase (`view::deployment_state`).
pub fn state_without_rollout<'a>(
    devices: impl IntoIterator<Item = &'a DeviceProgress>,
) -> DeploymentState {
    let (mut active, mut failed, mut succeeded) = (false, false, false);
    for p in devices {
        match p {
            DeviceProgress::Pending
            | DeviceProgress::InProgress { .. }
            | DeviceProgress::Waiting => active = true,
            DeviceProgress::Failed { .. } => failed = true,
            DeviceProgress::Succeeded => succeeded = true,
            DeviceProgress::Superseded | DeviceProgress::RolledBack => {}
        }
    }
    if active {
        DeploymentState::InProgress
    } else if failed {
        DeploymentState::Failed
    } else if succeeded {
        DeploymentState::Succeeded
    } else {
        DeploymentState::Superseded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::AppStatus;

    const D: Deployed<'static> = Deployed {
        id: "d-1",
        app: "app",
        version: "2.0.0",
    };

    fn status(version: &str, phase: AppPhase, observed: u64) -> DeviceStatus {
        DeviceStatus {
            device_id: "dev".into(),
            online: true,
            agent_version: String::new(),
            inventory: None,
            observed_generation: observed,
            refused: None,
            apps: vec![AppStatus {
                name: "app".into(),
                version: version.into(),
                phase,
                restart_count: 0,
                last_error: Some("checksum mismatch".into()),
                running_version: None,
                deployment_id: None,
                health: Default::default(),
                health_message: None,
                components: Vec::new(),
            }],
            reported_at: 0,
        }
    }

    fn facts(status: Option<&DeviceStatus>) -> DeviceFacts<'_> {
        DeviceFacts {
            generation: 3,
            current_deployment: Some("d-1"),
            status,
        }
    }

    #[test]
    fn phases_map_to_progress() {
        assert_eq!(device_progress(D, facts(None)), DeviceProgress::Pending);
        let s = status("1.0.0", AppPhase::Running, 3);
        assert_eq!(device_progress(D, facts(Some(&s))), DeviceProgress::Pending);
        let s = status("2.0.0", AppPhase::Running, 2);
        assert_eq!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::Succeeded
        );
        let s = status("2.0.0", AppPhase::Failed, 3);
        assert_eq!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::Failed {
                reason: "checksum mismatch".into()
            }
        );
        for (phase, name) in [
            (AppPhase::Downloading, "downloading"),
            (AppPhase::Installing, "installing"),
            (AppPhase::Starting, "starting"),
            (AppPhase::CrashLoop, "crash-loop"),
        ] {
            let s = status("2.0.0", phase, 3);
            assert_eq!(
                device_progress(D, facts(Some(&s))),
                DeviceProgress::InProgress { phase: name.into() }
            );
        }
        let s = status("2.0.0", AppPhase::Stopped, 3);
        assert_eq!(device_progress(D, facts(Some(&s))), DeviceProgress::Pending);
    }

    #[test]
    fn an_app_of_components_succeeds_only_when_every_component_runs() {
        let component = |name: &str, phase: AppPhase| fleet_schema::ComponentStatus {
            name: name.into(),
            artifact_version: "1.5.0".into(),
            phase,
            restart_count: 0,
            last_error: None,
            health: Default::default(),
            health_message: None,
        };
        let mut s = status("2.0.0", AppPhase::Running, 3);
        s.apps[0].components = vec![
            component("engine", AppPhase::Running),
            component("model", AppPhase::Starting),
        ];
        assert_eq!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::InProgress {
                phase: "starting".into()
            }
        );
        s.apps[0].components[1].phase = AppPhase::Failed;
        assert!(matches!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::Failed { .. }
        ));
        s.apps[0].components[1].phase = AppPhase::Running;
        assert_eq!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::Succeeded
        );
    }

    #[test]
    fn an_older_failure_of_the_same_version_is_pending() {
        let s = status("2.0.0", AppPhase::Failed, 2);
        assert_eq!(device_progress(D, facts(Some(&s))), DeviceProgress::Pending);
        let mut s = s;
        s.apps[0].deployment_id = Some("d-1".into());
        assert!(matches!(
            device_progress(D, facts(Some(&s))),
            DeviceProgress::Failed { .. }
        ));
    }

    #[test]
    fn newer_deployment_supersedes() {
        let s = status("2.0.0", AppPhase::Running, 3);
        let f = DeviceFacts {
            current_deployment: Some("d-2"),
            ..facts(Some(&s))
        };
        assert_eq!(device_progress(D, f), DeviceProgress::Superseded);
        let f = DeviceFacts {
            current_deployment: None,
            ..facts(Some(&s))
        };
        assert_eq!(device_progress(D, f), DeviceProgress::Superseded);
    }

    #[test]
    fn states_without_a_rollout() {
        use DeploymentState as S;
        use DeviceProgress::*;
        let failed = Failed { reason: "x".into() };
        assert_eq!(state_without_rollout(&[Succeeded, Pending]), S::InProgress);
        assert_eq!(
            state_without_rollout(&[Succeeded, failed.clone()]),
            S::Failed
        );
        assert_eq!(
            state_without_rollout(&[failed, InProgress { phase: "x".into() }]),
            S::InProgress
        );
        assert_eq!(
            state_without_rollout(&[Succeeded, Superseded]),
            S::Succeeded
        );
        assert_eq!(state_without_rollout(&[Superseded]), S::Superseded);
    }
}
