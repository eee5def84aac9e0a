//! The seed's manifest parses as written; typos and bad values are errors naming the field.

use super::*;
use crate::app_spec::{ProbeKind, RestartPolicy, RuntimeKind};

/// The seed's `app.yaml`, verbatim.
pub(crate) const SEED: &str = include_str!("seed_app.yaml");

#[test]
fn the_seed_manifest_parses_and_normalises() {
    let app = parse_yaml(SEED).expect("the seed's manifest is valid");
    assert_eq!(
        (app.name.as_str(), app.version.as_str()),
        ("edge-inference", "2.1.0")
    );
    assert_eq!(app.artifacts.len(), 2);
    assert_eq!(app.artifacts[1].kind, "oci-image");
    assert_eq!(
        app.primary_artifact().map(|a| a.name.as_str()),
        Some("inference-engine")
    );
    assert_eq!(
        app.spec.env.get("API_PORT").map(String::as_str),
        Some("8080")
    );
    assert!(app.spec.files[0].content.contains("threshold: 0.7"));
    assert_eq!(app.spec.runtime.kind, RuntimeKind::Systemd);
    assert_eq!(app.spec.runtime.restart, RestartPolicy::Always);
    assert_eq!(app.spec.runtime.startup_timeout_ms, 30_000);
    let h = app.spec.healthcheck.as_ref().expect("health check");
    assert_eq!(
        h.probe,
        ProbeKind::Http {
            path: "/health".into(),
            port: 8080,
            expected_status: None
        }
    );
    assert_eq!((h.interval_ms, h.timeout_ms, h.retries), (30_000, 5_000, 3));
    assert_eq!(app.spec.resources.memory_limit, Some(2 << 30));
    assert_eq!(app.spec.resources.cpu_limit_millis, Some(2000));
    assert_eq!(app.spec.resources.memory_request, Some(1 << 30));
    assert_eq!(app.spec.resources.cpu_request_millis, Some(500));
    assert_eq!(app.placement.device_type.as_deref(), Some("raspberry-pi"));
    assert_eq!(app.placement.min_memory, Some(4 << 30));
    assert_eq!(app.placement.affinity[0].operator, Operator::In);
}

#[test]
fn unknown_fields_are_errors_naming_the_field() {
    let typo = SEED.replace(
        "startup_timeout: 30s",
        "startup_timeout: 30s\n    restart_delay: 5s",
    );
    let err = parse_yaml(&typo).expect_err("unknown field").to_string();
    assert!(
        err.contains("restart_delay") && err.contains("spec.runtime"),
        "{err}"
    );
    let typo = SEED.replace("kind: Application", "kind: Application\nextra: 1");
    let err = parse_yaml(&typo)
        .expect_err("unknown top-level field")
        .to_string();
    assert!(err.contains("extra"), "{err}");
}

#[test]
fn invalid_values_are_errors_naming_each_field() {
    let bad = SEED
        .replace("memory: 2Gi", "memory: lots")
        .replace("version: 2.1.0\nspec", "version: two\nspec")
        .replace("type: systemd", "type: kubernetes")
        .replace("operator: In", "operator: Gt");
    let err = parse_yaml(&bad).expect_err("invalid");
    let ManifestError::Invalid(list) = &err else {
        panic!("expected validation errors, got {err}");
    };
    let fields: Vec<&str> = list.iter().map(|f| f.field.as_str()).collect();
    for f in [
        "metadata.version",
        "spec.runtime.type",
        "spec.resources.limits.memory",
        "spec.placement.node_affinity[0]",
    ] {
        assert!(fields.contains(&f), "{f} missing from {err}");
    }
}

#[test]
fn json_manifests_use_the_same_shape() {
    let json = r#"{"apiVersion":"fleet.v1","kind":"Application","metadata":{"name":"a","version":"1.0.0"},
        "spec":{"artifacts":[{"name":"a","version":"1.0.0","type":"binary"}]}}"#;
    let app = parse_json(json).expect("valid");
    assert_eq!(app.spec, AppSpec::default());
    let err = parse_json(&json.replace("\"kind\"", "\"knd\"")).expect_err("typo");
    assert!(err.to_string().contains("knd"), "{err}");
}

#[test]
fn placement_checks_inventory() {
    let app = parse_yaml(SEED).expect("valid");
    let mut inv = Inventory {
        total_memory: 8 << 30,
        labels: [("type", "raspberry-pi"), ("location", "edge")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Inventory::default()
    };
    assert_eq!(app.placement.reject_reason(&inv), None);
    inv.total_memory = 1 << 30;
    assert!(app
        .placement
        .reject_reason(&inv)
        .is_some_and(|r| r.contains("memory")));
    inv.total_memory = 8 << 30;
    inv.labels.insert("location".into(), "cloud".into());
    assert!(app
        .placement
        .reject_reason(&inv)
        .is_some_and(|r| r.contains("location")));
}

#[test]
fn archive_scripts_map_to_the_runtime_and_bad_paths_are_named() {
    let with = SEED.replace(
        "startup_timeout: 30s",
        "startup_timeout: 30s\n    install_script: scripts/install.sh\n    pre_start_script: ./pre.sh",
    );
    let app = parse_yaml(&with).expect("valid");
    assert_eq!(
        app.spec.runtime.install_script.as_deref(),
        Some("scripts/install.sh")
    );
    assert_eq!(
        app.spec.runtime.pre_start_script.as_deref(),
        Some("./pre.sh")
    );
    let bad = SEED.replace(
        "startup_timeout: 30s",
        "startup_timeout: 30s\n    install_script: /etc/evil.sh\n    pre_start_script: ../up.sh",
    );
    let err = parse_yaml(&bad).expect_err("invalid");
    let ManifestError::Invalid(list) = &err else {
        panic!("expected validation errors, got {err}");
    };
    let fields: Vec<&str> = list.iter().map(|f| f.field.as_str()).collect();
    assert!(fields.contains(&"spec.runtime.install_script"), "{err}");
    assert!(fields.contains(&"spec.runtime.pre_start_script"), "{err}");
}

#[test]
fn the_seed_manifest_runs_both_artifacts_as_components() {
    let app = parse_yaml(SEED).expect("valid");
    let parts = app.components();
    let names: Vec<&str> = parts.iter().map(|c| c.artifact.name.as_str()).collect();
    assert_eq!(names, ["inference-engine", "model-server"]);
    // The primary keeps the app's runtime and health check.
    assert_eq!(parts[0].spec, app.spec);
    // The image runs on a container engine, with the app's restart policy and timeouts, its
    // configuration and limits, and no health check (port 8080 is the engine's).
    let model = &parts[1].spec;
    assert_eq!(model.runtime.kind, RuntimeKind::Raw);
    assert_eq!(model.runtime.restart, RestartPolicy::Always);
    assert_eq!(model.runtime.startup_timeout_ms, 30_000);
    assert_eq!(model.healthcheck, None);
    assert_eq!(model.env, app.spec.env);
    assert_eq!(model.files, app.spec.files);
    assert_eq!(model.resources, app.spec.resources);
}

#[test]
fn an_artifact_may_say_how_it_runs_and_is_checked() {
    let text = SEED.replace(
        "      type: oci-image\n",
        "      type: oci-image\n      runtime:\n        ports: [9000]\n        args: [serve]\n      healthcheck:\n        tcp:\n          port: 9000\n          interval: 2s\n          timeout: 1s\n",
    );
    let app = parse_yaml(&text).expect("valid");
    let model = &app.components()[1].spec;
    assert_eq!(
        model.runtime.kind,
        RuntimeKind::Raw,
        "type fitted to the image"
    );
    assert_eq!(model.runtime.ports, [9000]);
    assert_eq!(model.runtime.args, ["serve"]);
    let h = model.healthcheck.as_ref().expect("own health check");
    assert_eq!(h.probe, ProbeKind::Tcp { port: 9000 });
    assert_eq!(h.interval_ms, 2_000);
    // Round trip through the registry's JSON keeps the overrides.
    let json = serde_json::to_string(&app).expect("json");
    let back: Application = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.components(), app.components());
}

#[test]
fn component_errors_name_the_artifact() {
    let text = SEED
        .replace(
            "      type: oci-image\n",
            "      type: oci-image\n      runtime:\n        type: lxc\n      healthcheck:\n        tcp:\n          port: 0\n",
        )
        .replace("name: model-server", "name: inference-engine");
    let Err(ManifestError::Invalid(errs)) = parse_yaml(&text) else {
        panic!("invalid manifest accepted");
    };
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.artifacts[1].runtime.type"),
        "{errs:?}"
    );
    assert!(
        fields.contains(&"spec.artifacts[1].healthcheck.tcp.port"),
        "{errs:?}"
    );
    assert!(fields.contains(&"spec.artifacts[1].name"), "{errs:?}");
}

#[test]
fn one_artifact_is_one_component_with_the_app_spec() {
    let text = SEED.replace(
        "    - name: model-server\n      version: 1.5.0\n      type: oci-image\n",
        "",
    );
    let app = parse_yaml(&text).expect("valid");
    let parts = app.components();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].spec, app.spec);
}

/// The reported alias bomb: one 100 KB anchor in `configuration.env`, referenced 10,000 times
/// in `runtime.args` (136 KiB of YAML that deserializes to a gigabyte).
fn env_args_bomb() -> String {
    let big = "x".repeat(100_000);
    let aliases = vec!["*b"; 10_000].join(",");
    SEED.replace(
        "      API_PORT: 8080",
        &format!("      API_PORT: 8080\n      BIG: &b {big}"),
    )
    .replace(
        "    restart: always",
        &format!("    restart: always\n    args: [{aliases}]"),
    )
}

#[test]
fn an_alias_bomb_in_env_and_args_is_refused_before_it_expands() {
    let bomb = env_args_bomb();
    assert!(bomb.len() < 140 * 1024, "the reported size: {}", bomb.len());
    let err = parse_yaml(&bomb).expect_err("alias bomb").to_string();
    assert!(err.contains("expands beyond"), "{err}");
    assert!(err.contains("aliases"), "{err}");
}

#[test]
fn an_alias_bomb_in_labels_and_affinity_is_refused_before_it_expands() {
    // One 100 KB anchor (a label) referenced 10,000 times in a list of strings.
    let big = "y".repeat(100 * 1024);
    let aliases = vec!["*l"; 10_000].join(", ");
    let bomb = SEED
        .replace(
            "  version: 2.1.0\nspec:",
            &format!("  version: 2.1.0\n  labels:\n    big: &l {big}\nspec:"),
        )
        .replace(
            "values: [\"edge\", \"store\"]",
            &format!("values: [{aliases}]"),
        );
    let err = parse_yaml(&bomb).expect_err("alias bomb").to_string();
    assert!(err.contains("expands beyond"), "{err}");
}

#[test]
fn nested_aliases_are_bounded_too() {
    // The "billion laughs": each level references the previous one ten times (10^9 leaves).
    let mut doc = String::from("a0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let err = parse_yaml(&doc).expect_err("laughs").to_string();
    assert!(err.contains("expands beyond"), "{err}");
}

#[test]
fn a_large_manifest_without_aliases_is_refused_once_validated() {
    // 150 KB of quotes in a configuration file: 150 KB of YAML, twice that as stored (JSON).
    let text = SEED.replace(
        "threshold: 0.7",
        &format!(
            "threshold: 0.7\n            pad: {}",
            "\"".repeat(150 * 1024)
        ),
    );
    let err = parse_yaml_within(&text, 200 * 1024)
        .expect_err("too large")
        .to_string();
    assert!(err.contains("validated application"), "{err}");
    assert!(err.contains("204800"), "{err}");
    assert!(parse_yaml_within(&text, 400 * 1024).is_ok());
    let json = serde_json::to_string(
        &serde_norway::from_str::<RawManifest>(&text).expect("parses as YAML"),
    )
    .expect("JSON");
    let err = parse_json_within(&json, 200 * 1024)
        .expect_err("too large")
        .to_string();
    assert!(err.contains("too large"), "{err}");
}
