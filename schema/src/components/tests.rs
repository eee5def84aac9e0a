//! Wire compatibility of components and the folds a rollout judges by.

use super::*;
use crate::codec::{decode, encode, DEFAULT_MAX_PAYLOAD};
use crate::{DesiredApp, DesiredState};

fn artifact(name: &str, kind: ArtifactType) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        version: "1.0.0".into(),
        kind,
        size: 3,
        sha256: "ab".into(),
        url: format!("http://ctl/{name}"),
        ..Default::default()
    }
}

fn app(components: Vec<DesiredComponent>) -> DesiredApp {
    DesiredApp {
        name: "edge".into(),
        version: "2.1.0".into(),
        artifact: if components.is_empty() {
            artifact("engine", ArtifactType::Binary)
        } else {
            marker_artifact("edge", "2.1.0")
        },
        deployment_id: None,
        spec: AppSpec::default(),
        rollout: None,
        components,
    }
}

/// `edge@2.1.0` running with `health`, no components.
fn running_app(health: HealthState) -> AppStatus {
    AppStatus {
        name: "edge".into(),
        version: "2.1.0".into(),
        phase: AppPhase::Running,
        restart_count: 0,
        last_error: None,
        running_version: None,
        deployment_id: None,
        health,
        health_message: None,
        components: Vec::new(),
    }
}

/// The desired-app shape of a build that predates components (its fields only).
#[derive(Deserialize, Serialize)]
struct OldDesiredApp {
    name: String,
    version: String,
    artifact: ArtifactRef,
    #[serde(default)]
    deployment_id: Option<String>,
    #[serde(default)]
    spec: AppSpec,
}

#[test]
fn one_artifact_looks_exactly_as_before_on_the_wire() {
    let a = app(Vec::new());
    let old = OldDesiredApp {
        name: a.name.clone(),
        version: a.version.clone(),
        artifact: a.artifact.clone(),
        deployment_id: None,
        spec: AppSpec::default(),
    };
    assert_eq!(encode(&a).expect("encodes"), encode(&old).expect("encodes"));
    let status = running_app(HealthState::Unknown);
    let json = serde_json::to_value(&status).expect("json");
    assert!(json.get("components").is_none(), "{json}");
}

#[test]
fn an_older_agent_sees_a_marker_it_cannot_install() {
    let a = app(vec![
        DesiredComponent {
            name: "engine".into(),
            artifact: artifact("engine", ArtifactType::Binary),
            spec: AppSpec::default(),
        },
        DesiredComponent {
            name: "model".into(),
            artifact: artifact("model", ArtifactType::OciImage),
            spec: AppSpec::default(),
        },
    ]);
    let bytes = encode(&a).expect("encodes");
    let old: OldDesiredApp = decode(&bytes, DEFAULT_MAX_PAYLOAD).expect("lenient decode");
    assert!(!old.artifact.kind.is_known());
    assert!(is_marker(&old.artifact.kind));
    assert_eq!(old.artifact.url, "", "nothing to download");
    let back: DesiredApp = decode(&bytes, DEFAULT_MAX_PAYLOAD).expect("decodes");
    assert_eq!(back, a);
    assert_eq!(back.artifacts().len(), 2);
}

#[test]
fn the_signed_body_carries_every_component_spec() {
    let mut spec = AppSpec::default();
    spec.env.insert("MODEL_PATH".into(), "/data/models".into());
    let mut a = app(vec![DesiredComponent {
        name: "model".into(),
        artifact: artifact("model", ArtifactType::OciImage),
        spec: spec.clone(),
    }]);
    let state = |a: &DesiredApp| DesiredState {
        device_id: "d1".into(),
        generation: 3,
        apps: vec![a.clone()],
        issued_at: 0,
    };
    let before = encode(&state(&a)).expect("encodes");
    a.components[0]
        .spec
        .env
        .insert("MODEL_PATH".into(), "/evil".into());
    let after = encode(&state(&a)).expect("encodes");
    assert_ne!(before, after, "a component's spec is part of the body");
}

#[test]
fn phases_fold_to_the_worst_or_least_advanced() {
    use AppPhase::*;
    assert_eq!(fold_phase(&[Running, Running]), Running);
    assert_eq!(fold_phase(&[Running, Starting]), Starting);
    assert_eq!(fold_phase(&[Downloading, Installing]), Downloading);
    assert_eq!(fold_phase(&[Running, CrashLoop, Starting]), CrashLoop);
    assert_eq!(fold_phase(&[CrashLoop, Failed]), Failed);
    assert_eq!(fold_phase(&[Running, Stopped]), Stopped);
    assert_eq!(
        fold_phase(&[Running, Other("paused".into())]),
        Other("paused".into()),
        "a newer agent's phase is not running"
    );
    assert_eq!(fold_phase(&[]), Pending);
}

#[test]
fn health_folds_with_unknown_not_vetoing() {
    use HealthState::*;
    assert_eq!(fold_health(&[Healthy, Unknown]), Healthy);
    assert_eq!(fold_health(&[Unknown, Unknown]), Unknown);
    assert_eq!(fold_health(&[Healthy, Starting]), Starting);
    assert_eq!(fold_health(&[Starting, Unhealthy, Healthy]), Unhealthy);
    assert_eq!(fold_health(&[]), Unknown);
}

#[test]
fn overall_counts_every_component() {
    let component = |phase: AppPhase, health: HealthState| ComponentStatus {
        name: "c".into(),
        artifact_version: "1.0.0".into(),
        phase,
        restart_count: 0,
        last_error: None,
        health,
        health_message: None,
    };
    let mut s = running_app(HealthState::Healthy);
    assert_eq!(s.overall(), (AppPhase::Running, HealthState::Healthy));
    // A peer that reports the app running and healthy while a component is not: the
    // component wins.
    s.components = vec![
        component(AppPhase::Running, HealthState::Healthy),
        component(AppPhase::Running, HealthState::Unhealthy),
    ];
    assert_eq!(s.overall(), (AppPhase::Running, HealthState::Unhealthy));
    s.components[1] = component(AppPhase::Starting, HealthState::Unknown);
    assert_eq!(s.overall(), (AppPhase::Starting, HealthState::Healthy));
    s.components[1] = component(AppPhase::Running, HealthState::Unknown);
    assert_eq!(s.overall(), (AppPhase::Running, HealthState::Healthy));
}
