//! Expansion into units, the checks before it, and refusal of a whole app.

use super::*;
use fleet_schema::{AppSpec, ArtifactRef, ArtifactType};

fn artifact(name: &str, kind: ArtifactType) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        version: "1.5.0".into(),
        kind,
        size: 3,
        sha256: "ab".into(),
        url: format!("http://ctl/{name}"),
        ..Default::default()
    }
}

fn component(name: &str, kind: ArtifactType) -> DesiredComponent {
    DesiredComponent {
        name: name.into(),
        artifact: artifact(name, kind),
        spec: AppSpec::default(),
    }
}

pub(crate) fn seed_app() -> DesiredApp {
    DesiredApp {
        name: "edge-inference".into(),
        version: "2.1.0".into(),
        artifact: fleet_schema::components::marker_artifact("edge-inference", "2.1.0"),
        deployment_id: Some("dep".into()),
        spec: AppSpec::default(),
        rollout: None,
        components: vec![
            component("inference-engine", ArtifactType::Binary),
            component("model-server", ArtifactType::OciImage),
        ],
    }
}

fn state(apps: Vec<DesiredApp>) -> DesiredState {
    DesiredState {
        device_id: "d1".into(),
        generation: 4,
        apps,
        issued_at: 9,
    }
}

fn single(name: &str) -> DesiredApp {
    DesiredApp {
        name: name.into(),
        version: "1.0.0".into(),
        artifact: artifact(name, ArtifactType::Binary),
        deployment_id: None,
        spec: AppSpec::default(),
        rollout: None,
        components: Vec::new(),
    }
}

#[test]
fn every_component_becomes_a_unit_and_single_apps_stay_as_they_are() {
    let d = state(vec![seed_app(), single("web")]);
    let units = expand(&d);
    assert_eq!((units.generation, units.issued_at), (4, 9));
    let names: Vec<&str> = units.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "edge-inference__inference-engine",
            "edge-inference__model-server",
            "web"
        ]
    );
    for u in &units.apps[..2] {
        assert_eq!(u.version, "2.1.0", "units run the app's version");
        assert_eq!(u.deployment_id.as_deref(), Some("dep"));
        assert!(u.components.is_empty());
        assert_eq!(app_of(&u.name), "edge-inference");
    }
    assert_eq!(units.apps[1].artifact.kind, ArtifactType::OciImage);
    assert_eq!(units.apps[2], single("web"));
    assert_eq!(app_of("web"), "web");
}

#[test]
fn bad_components_refuse_the_desired_state() {
    assert!(check(&state(vec![seed_app(), single("web")])).is_ok());
    let mut dup = seed_app();
    dup.components[1].name = "inference-engine".into();
    let e = check(&state(vec![dup])).expect_err("duplicate");
    assert!(e.contains("listed twice"), "{e}");
    let mut bad = seed_app();
    bad.components[0].name = "../x".into();
    assert!(check(&state(vec![bad])).is_err());
    let e = check(&state(vec![
        seed_app(),
        single("edge-inference__model-server"),
    ]))
    .expect_err("collision");
    assert!(e.contains("share units"), "{e}");
    // The same name without a multi-component app beside it is just a name.
    assert!(check(&state(vec![single("edge-inference__x")])).is_ok());
}

#[test]
fn one_refused_component_refuses_its_whole_app() {
    let d = expand(&state(vec![seed_app(), single("web")]));
    let none = group_refusals(&d, |_| None);
    assert!(none.is_empty());
    let refused = group_refusals(&d, |u| {
        (u.artifact.kind == ArtifactType::OciImage).then(|| "no container engine".to_string())
    });
    assert_eq!(
        refused,
        BTreeMap::from([(
            "edge-inference".to_string(),
            "component model-server: no container engine".to_string()
        )])
    );
    // A single app is never a group (the reconciler refuses it on its own).
    let refused = group_refusals(&d, |u| (u.name == "web").then(|| "x".to_string()));
    assert!(refused.is_empty());
}

#[test]
fn a_component_knows_its_app_and_its_name() {
    assert_eq!(
        identity_env("edge-inference__model-server"),
        [
            ("FLEET_APP_NAME".to_string(), "edge-inference".to_string()),
            ("FLEET_COMPONENT".to_string(), "model-server".to_string())
        ]
    );
    assert!(identity_env("web").is_empty());
}
