//! Shapes the API's deployment and device views from database records (pure). The states
//! shown (the deployment's and each step's) come from the rollout alone, the same record the
//! engine decides on, so the API never calls "failed" what the engine called "succeeded";
//! per-device progress is shown beside them as observed.

use super::progress::{device_progress, state_without_rollout, Deployed, DeviceFacts};
use crate::model::{DeploymentRecord, DeviceRecord, Phase, Rollout};
use fleet_schema::api::{
    DeploymentState, DeploymentView, DeviceProgress, DeviceView, RolloutView, StepState, StepView,
    TriggerView,
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
        Some(r) => deployment_state(r.phase),
        None => state_without_rollout(progress.values()),
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
            StepView {
                state: step_state(r, i),
                devices,
                healthy,
                failed,
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

/// The deployment state the API shows for a rollout phase: the phase itself, with `running`
/// shown as `in-progress`.
pub fn deployment_state(phase: Phase) -> DeploymentState {
    match phase {
        Phase::Running => DeploymentState::InProgress,
        Phase::Paused => DeploymentState::Paused,
        Phase::Succeeded => DeploymentState::Succeeded,
        Phase::RollingBack => DeploymentState::RollingBack,
        Phase::RolledBack => DeploymentState::RolledBack,
        Phase::Aborted => DeploymentState::Aborted,
        Phase::Failed => DeploymentState::Failed,
        Phase::Superseded => DeploymentState::Superseded,
    }
}

/// The state of step `i`: rolled back once any of its devices was sent back; succeeded before
/// the current step (and the current one when the rollout succeeded); the current step is
/// active while the rollout goes on and otherwise ends as the rollout did; later steps wait.
pub fn step_state(r: &Rollout, i: usize) -> StepState {
    if r.step_devices(i).iter().any(|d| r.reverted.contains(d)) {
        return StepState::RolledBack;
    }
    if i > r.step {
        return StepState::Waiting;
    }
    if i < r.step {
        return StepState::Succeeded;
    }
    match r.phase {
        Phase::Running | Phase::Paused | Phase::RollingBack => StepState::Active,
        Phase::Succeeded => StepState::Succeeded,
        // Rolled back with none of this step's devices reverted: nothing of it was touched.
        Phase::RolledBack => StepState::Waiting,
        Phase::Failed => StepState::Failed,
        Phase::Aborted => StepState::Aborted,
        Phase::Superseded => StepState::Superseded,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::strategy::parse;
    use fleet_schema::api::StrategySpec;
    use fleet_schema::{AppPhase, AppStatus, ArtifactRef, DesiredApp, DeviceStatus};

    const DEVICES: [&str; 2] = ["a", "b"];

    /// An all-at-once deployment of app 2.0.0 to `a` and `b` (both touched, generation 1),
    /// its rollout in `phase`.
    fn record(phase: Phase) -> DeploymentRecord {
        let params = parse(Some(&StrategySpec {
            kind: "all-at-once".into(),
            success_percentage: Some(50),
            ..StrategySpec::default()
        }))
        .expect("valid strategy");
        let mut rollout = Rollout::new(params, DEVICES.map(String::from).to_vec(), 0);
        rollout.touched = DEVICES.iter().map(|d| d.to_string()).collect();
        rollout.phase = phase;
        DeploymentRecord {
            id: "d-1".into(),
            application: "app".into(),
            version: "2.0.0".into(),
            strategy: "all-at-once".into(),
            created_at: 0,
            artifact: ArtifactRef::default(),
            devices: DEVICES.iter().map(|d| (d.to_string(), 1)).collect(),
            rollout: Some(rollout),
            template: None,
            previous: BTreeMap::new(),
            target: None,
            placement: None,
        }
    }

    /// Both devices desire this deployment.
    fn desired() -> BTreeMap<String, DesiredState> {
        DEVICES
            .iter()
            .map(|d| {
                let app = DesiredApp {
                    name: "app".into(),
                    version: "2.0.0".into(),
                    artifact: ArtifactRef::default(),
                    deployment_id: Some("d-1".into()),
                    spec: Default::default(),
                    rollout: None,
                    components: Vec::new(),
                };
                let state = DesiredState {
                    device_id: d.to_string(),
                    generation: 1,
                    issued_at: 0,
                    apps: vec![app],
                };
                (d.to_string(), state)
            })
            .collect()
    }

    /// A device that reports app 2.0.0 in `phase`.
    fn device(id: &str, phase: AppPhase) -> (String, DeviceRecord) {
        let status = DeviceStatus {
            device_id: id.into(),
            online: true,
            agent_version: String::new(),
            inventory: None,
            observed_generation: 1,
            refused: None,
            apps: vec![AppStatus {
                name: "app".into(),
                version: "2.0.0".into(),
                phase,
                restart_count: 0,
                last_error: Some("refused".into()),
                running_version: None,
                deployment_id: Some("d-1".into()),
                health: Default::default(),
                health_message: None,
                components: Vec::new(),
            }],
            reported_at: 0,
        };
        (id.to_string(), DeviceRecord::apply(None, status, 0))
    }

    #[test]
    fn a_succeeded_rollout_is_succeeded_with_a_failed_device_below_its_threshold() {
        let devices = BTreeMap::from([
            device("a", AppPhase::Running),
            device("b", AppPhase::Failed),
        ]);
        let view = deployment_view(&record(Phase::Succeeded), &desired(), &devices);
        assert_eq!(view.state, DeploymentState::Succeeded, "{view:#?}");
        assert!(matches!(view.devices["b"], DeviceProgress::Failed { .. }));
        let steps = &view.rollout.as_ref().expect("rollout").steps;
        assert_eq!(steps[0].state, StepState::Succeeded);
        assert_eq!((steps[0].healthy, steps[0].failed), (1, 1));
    }

    #[test]
    fn a_succeeded_rollout_is_succeeded_while_a_skipped_device_never_reported() {
        let devices = BTreeMap::from([device("a", AppPhase::Running)]);
        let view = deployment_view(&record(Phase::Succeeded), &desired(), &devices);
        assert_eq!(view.state, DeploymentState::Succeeded, "{view:#?}");
        assert_eq!(view.devices["b"], DeviceProgress::Pending);
    }

    #[test]
    fn every_phase_shows_as_its_state() {
        for phase in Phase::ALL {
            let view = deployment_view(&record(phase), &desired(), &BTreeMap::new());
            let want = if phase == Phase::Running {
                "in-progress"
            } else {
                phase.as_str()
            };
            assert_eq!(view.state.as_str(), want);
            assert!(view.state.is_known());
        }
    }

    #[test]
    fn step_states_follow_the_rollout() {
        let mut r = record(Phase::Running).rollout.expect("rollout");
        r.targets = ["a", "b", "c"].map(String::from).to_vec();
        r.steps = vec![1, 2, 3];
        r.step = 1;
        let states = |r: &Rollout| (0..3).map(|i| step_state(r, i)).collect::<Vec<_>>();
        use StepState::*;
        assert_eq!(states(&r), [Succeeded, Active, Waiting]);
        r.phase = Phase::Paused;
        assert_eq!(states(&r), [Succeeded, Active, Waiting]);
        r.phase = Phase::Failed;
        assert_eq!(states(&r), [Succeeded, Failed, Waiting]);
        r.phase = Phase::Aborted;
        assert_eq!(states(&r), [Succeeded, Aborted, Waiting]);
        r.phase = Phase::Superseded;
        assert_eq!(states(&r), [Succeeded, Superseded, Waiting]);
        r.phase = Phase::RolledBack;
        r.reverted = ["a", "b"].map(String::from).into();
        assert_eq!(states(&r), [RolledBack, RolledBack, Waiting]);
        r.step = 2;
        r.reverted.clear();
        r.phase = Phase::Succeeded;
        assert_eq!(states(&r), [Succeeded, Succeeded, Succeeded]);
    }
}
