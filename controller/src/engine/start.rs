//! Starting a deployment, decided purely: the app every touched device is told to run (the
//! template, with the blue-green hint), the record with its rollout's first step, and which
//! unfinished deployments the new one supersedes. The deployment service commits the result
//! in one transaction.

use super::rollout::{tick, Actions, Ctx, Snapshot};
use crate::model::{DeploymentRecord, Kind, Params, Phase, Rollout};
use fleet_schema::api::TargetSpec;
use fleet_schema::components::{self, DesiredComponent};
use fleet_schema::manifest::Placement;
use fleet_schema::{AppSpec, ArtifactRef, BlueGreenHint, DesiredApp, UnixMillis};
use std::collections::{BTreeMap, HashSet};

/// A validated deployment, ready to be started: built by the deployment service from the
/// request, the registered application and the artifact store.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Application name.
    pub application: String,
    /// Version to deploy.
    pub version: String,
    /// Strategy type.
    pub strategy: String,
    /// The artifact implementing that version.
    pub artifact: ArtifactRef,
    /// Resolved target devices (all known to the controller), in rollout order.
    pub devices: Vec<String>,
    /// Creation time.
    pub now: UnixMillis,
    /// How devices run it (from the registered application; defaults for a bare artifact).
    pub spec: AppSpec,
    /// Normalised strategy.
    pub params: Params,
    /// The target as requested (late joiners are matched against it).
    pub target: Option<TargetSpec>,
    /// The registered application's placement (late joiners must satisfy it too).
    pub placement: Option<Placement>,
    /// Every runnable artifact with its spec when the application has several (then devices
    /// get these as components and a marker instead of `artifact`, which stays the primary
    /// for the API); empty otherwise.
    pub components: Vec<DesiredComponent>,
}

impl NewDeployment {
    /// A bare all-at-once deployment of an artifact (tests and older callers).
    pub fn all_at_once(
        application: &str,
        version: &str,
        artifact: ArtifactRef,
        devices: Vec<String>,
        now: UnixMillis,
    ) -> Self {
        Self {
            application: application.into(),
            version: version.into(),
            strategy: "all-at-once".into(),
            artifact,
            devices,
            now,
            spec: AppSpec::default(),
            params: Params::all_at_once(),
            target: None,
            placement: None,
            components: Vec::new(),
        }
    }
}

/// The app every device the deployment `id` touches is told to run. A blue-green deployment
/// carries the hint (validation period, switch delay) that makes the agent keep the old
/// instance until the new one has proven itself; an app of several artifacts carries them as
/// components behind a marker artifact, with a default spec of its own.
pub fn template(new: &NewDeployment, id: &str) -> DesiredApp {
    let several = !new.components.is_empty();
    DesiredApp {
        name: new.application.clone(),
        version: new.version.clone(),
        artifact: if several {
            components::marker_artifact(&new.application, &new.version)
        } else {
            new.artifact.clone()
        },
        deployment_id: Some(id.to_string()),
        // With components, each carries its own spec; the app's stays default so that an agent
        // predating components refuses on the marker's type alone.
        spec: if several {
            AppSpec::default()
        } else {
            new.spec.clone()
        },
        rollout: (new.params.kind == Kind::BlueGreen).then_some(BlueGreenHint {
            validation_ms: new.params.min_healthy_ms,
            switch_delay_ms: new.params.switch_delay_ms,
        }),
        components: new.components.clone(),
    }
}

/// The record of the new deployment `id` and the actions of its first tick (the devices of the
/// first step); nothing is written to any device yet.
pub fn start(new: NewDeployment, id: String) -> (DeploymentRecord, Actions) {
    let template = template(&new, &id);
    let mut rollout = Rollout::new(new.params, new.devices, new.now);
    let ctx = Ctx {
        version: &new.version,
        has_healthcheck: template.has_healthcheck(),
        deployment_id: &id,
    };
    let actions = tick(&mut rollout, ctx, &Snapshot::default(), new.now);
    let rec = DeploymentRecord {
        id,
        application: new.application,
        version: new.version,
        strategy: new.strategy,
        created_at: new.now,
        artifact: new.artifact,
        devices: BTreeMap::new(),
        rollout: Some(rollout),
        template: Some(template),
        previous: BTreeMap::new(),
        target: new.target,
        placement: new.placement,
    };
    (rec, actions)
}

/// Marks `older` superseded when it is an unfinished deployment of `application` that shares
/// a device with `devices`, so two rollouts never fight over a device. Returns whether it did.
pub fn supersede(
    older: &mut DeploymentRecord,
    application: &str,
    devices: &HashSet<&String>,
) -> bool {
    let Some(r) = older.rollout.as_mut() else {
        return false;
    };
    if older.application != application || r.phase.is_final() {
        return false;
    }
    if !r.targets.iter().any(|d| devices.contains(d)) {
        return false;
    }
    r.phase = Phase::Superseded;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::strategy;
    use fleet_schema::api::StrategySpec;
    use fleet_schema::ArtifactType;

    fn new(kind: &str, devices: &[&str]) -> NewDeployment {
        let mut d = NewDeployment::all_at_once(
            "a",
            "2.0.0",
            ArtifactRef {
                name: "a".into(),
                version: "2.0.0".into(),
                kind: ArtifactType::Binary,
                ..Default::default()
            },
            devices.iter().map(|d| d.to_string()).collect(),
            1,
        );
        d.params = strategy::parse(Some(&StrategySpec {
            kind: kind.into(),
            initial_percentage: (kind == "canary").then_some(25),
            ..Default::default()
        }))
        .expect("valid strategy");
        d.strategy = kind.into();
        d
    }

    #[test]
    fn only_a_blue_green_template_carries_the_switch_hint() {
        let bg = new("blue-green", &["x"]);
        let t = template(&bg, "d-1");
        assert_eq!(
            t.rollout,
            Some(BlueGreenHint {
                validation_ms: bg.params.min_healthy_ms,
                switch_delay_ms: bg.params.switch_delay_ms,
            })
        );
        assert_eq!(t.deployment_id.as_deref(), Some("d-1"));
        for kind in ["all-at-once", "canary", "rolling"] {
            assert_eq!(template(&new(kind, &["x"]), "d-1").rollout, None, "{kind}");
        }
    }

    #[test]
    fn an_app_of_several_artifacts_gets_a_marker_and_a_default_spec() {
        let mut d = new("all-at-once", &["x"]);
        d.spec.runtime.args = vec!["--serve".into()];
        let one = template(&d, "d-1");
        assert_eq!(one.artifact, d.artifact);
        assert_eq!(one.spec.runtime.args, vec!["--serve"]);
        d.components = vec![
            DesiredComponent {
                name: "engine".into(),
                artifact: d.artifact.clone(),
                spec: d.spec.clone(),
            },
            DesiredComponent {
                name: "model".into(),
                artifact: ArtifactRef {
                    name: "model".into(),
                    kind: ArtifactType::OciImage,
                    ..d.artifact.clone()
                },
                spec: AppSpec::default(),
            },
        ];
        let several = template(&d, "d-1");
        assert_eq!(several.artifact, components::marker_artifact("a", "2.0.0"));
        assert_eq!(several.spec, AppSpec::default());
        assert_eq!(several.components.len(), 2);
    }

    #[test]
    fn start_touches_only_the_first_step() {
        let (rec, actions) = start(new("canary", &["w", "x", "y", "z"]), "d-1".into());
        assert_eq!(actions.touch, vec!["w"]);
        assert!(
            rec.devices.is_empty() && rec.previous.is_empty(),
            "nothing written yet"
        );
        assert_eq!(rec.rollout.as_ref().map(|r| r.phase), Some(Phase::Running));
        let (_, all) = start(new("all-at-once", &["x", "y"]), "d-2".into());
        assert_eq!(all.touch, vec!["x", "y"]);
    }

    #[test]
    fn an_unfinished_deployment_of_the_same_app_on_a_shared_device_is_superseded() {
        let ours: Vec<String> = vec!["y".into(), "q".into()];
        let ours: HashSet<&String> = ours.iter().collect();
        let (older, _) = start(new("canary", &["x", "y"]), "d-1".into());
        let mut r = older.clone();
        assert!(supersede(&mut r, "a", &ours));
        assert_eq!(r.rollout.map(|r| r.phase), Some(Phase::Superseded));
        let mut other_app = older.clone();
        assert!(!supersede(&mut other_app, "b", &ours));
        let (disjoint, _) = start(new("canary", &["x"]), "d-2".into());
        let mut r = disjoint.clone();
        assert!(!supersede(&mut r, "a", &ours), "no device in common");
        let mut finished = older.clone();
        if let Some(r) = finished.rollout.as_mut() {
            r.phase = Phase::Succeeded;
        }
        let mut r = finished.clone();
        assert!(!supersede(&mut r, "a", &ours), "finished stays finished");
        assert_eq!(r, finished);
    }
}
