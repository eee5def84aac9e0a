//! The error-rate and health-check rollback triggers with real agents and the real sample app:
//! a canary of a version that answers 20% of its requests with errors (its own counters, posted
//! to the agent's local endpoint, carried on `fleet/<device>/metrics`) is rolled back by the
//! error-rate trigger; one whose health check fails is rolled back by the health trigger. Both
//! record the numbers that fired them, and devices outside the first step never get the
//! version.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{upload_sample, wait_deployment, APP};
use support::{post_json, wait_until, Fleetd};

const TICK: [(&str, &str); 1] = [("FLEETD_ROLLOUT_TICK_MS", "200")];

fn fleet_on_v1(fleetd: &Fleetd, prefix: &str, n: usize) -> Vec<Agent> {
    support::fleet::fleet_on_v1(
        fleetd,
        prefix,
        n,
        prefix,
        &["--metrics-interval-ms", "1000"],
    )
}

/// Registers sample-app `version` (uploaded as its artifact) with `spec` merged in.
fn register(fleetd: &Fleetd, version: &str, env: Value, healthcheck: Option<Value>) {
    upload_sample(fleetd, version);
    let mut spec = json!({
        "artifacts": [{"name": APP, "version": version, "type": "binary"}],
        "configuration": {"env": env},
        "runtime": {"restart": "on-failure"},
    });
    if let Some(h) = healthcheck {
        spec["healthcheck"] = h;
    }
    let manifest = json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": APP, "version": version},
        "spec": spec,
    });
    support::fleet::register_app(fleetd, &manifest);
}

/// A canary whose first step is one device of four and whose second step would only come a
/// minute later, so a trigger must fire during the first step.
fn canary(fleetd: &Fleetd, ring: &str, version: &str, triggers: Value) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": version,
            "strategy": {"type": "canary", "initial_percentage": 25, "increment_percentage": 25,
                         "increment_interval": "60s", "min_healthy_time": "1s",
                         "progress_deadline": "90s", "rollback_triggers": triggers},
            "target": {"selector": {"ring": ring}},
        }),
    );
    assert_eq!(status, 201, "create canary: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// Checks that only the first step's device got `version`, and every device runs 1.0.0 again.
fn only_first_step_touched_and_all_back(view: &Value, agents: &[Agent], version: &str) {
    let first: Vec<&str> = view["rollout"]["steps"][0]["devices"]
        .as_array()
        .expect("step 0")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(first.len(), 1, "{view:#}");
    for a in agents {
        if first.contains(&a.device_id.as_str()) {
            assert_eq!(
                view["devices"][&a.device_id]["state"], "rolled-back",
                "{view:#}"
            );
        } else {
            assert!(
                !a.data_dir().join("apps").join(APP).join(version).exists(),
                "{} never received {version}",
                a.device_id
            );
        }
        let back = wait_until(Duration::from_secs(30), || {
            a.app_pids(APP, "1.0.0").len() == 1 && a.app_pids(APP, version).is_empty()
        });
        assert!(back, "{} runs 1.0.0 again:\n{}", a.device_id, a.log());
    }
}

#[test]
fn a_canary_with_a_high_error_rate_is_rolled_back_by_the_error_rate_trigger() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "errs", 4);
    let refs: Vec<&Agent> = agents.iter().collect();
    register(
        &fleetd,
        "2.0.0",
        json!({"SAMPLE_ERROR_PERCENT": "20", "SAMPLE_SELF_LOAD_RPS": "20"}),
        None,
    );
    let id = canary(
        &fleetd,
        "errs",
        "2.0.0",
        json!([{"type": "high-error-rate", "threshold": 0.05, "duration": "10s"}]),
    );
    let view = wait_deployment(&fleetd, &id, "rolled-back", &refs);
    let trigger = &view["rollout"]["trigger"];
    assert_eq!(trigger["kind"], "error-rate", "{view:#}");
    // 20% of the app's own requests failed: the recorded rate is that, in per mille.
    let observed = trigger["observed"].as_u64().expect("observed");
    assert!((150..=250).contains(&observed), "{view:#}");
    assert_eq!(trigger["threshold"], 50, "{view:#}");
    assert_eq!(
        trigger["action"], "gradual",
        "the seed's action for this trigger: {view:#}"
    );
    let detail = trigger["detail"].as_str().expect("detail");
    assert!(
        detail.contains("errors in") && detail.contains("threshold 5.0%"),
        "{detail}"
    );
    only_first_step_touched_and_all_back(&view, &agents, "2.0.0");
}

#[test]
fn a_canary_whose_health_check_fails_is_rolled_back_by_the_health_trigger() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "sick", 4);
    let refs: Vec<&Agent> = agents.iter().collect();
    // Only the first step's single device runs this version, so a fixed port is free.
    let port = support::free_port();
    register(
        &fleetd,
        "3.0.0",
        json!({"SAMPLE_HEALTH_STATUS": "503", "PORT": port.to_string()}),
        Some(
            json!({"http": {"path": "/health", "port": port, "interval": "1s",
                             "timeout": "1s", "retries": 2}}),
        ),
    );
    let id = canary(
        &fleetd,
        "sick",
        "3.0.0",
        json!([{"type": "health-check-failure", "threshold": 0.5, "duration": "3s"}]),
    );
    let view = wait_deployment(&fleetd, &id, "rolled-back", &refs);
    let trigger = &view["rollout"]["trigger"];
    assert_eq!(trigger["kind"], "health-check", "{view:#}");
    assert_eq!(trigger["observed"], 100, "one of one unhealthy: {view:#}");
    assert_eq!(trigger["threshold"], 50, "{view:#}");
    assert_eq!(trigger["action"], "immediate", "{view:#}");
    only_first_step_touched_and_all_back(&view, &agents, "3.0.0");
}

#[test]
fn invalid_trigger_settings_are_refused_with_the_field_named() {
    let fleetd = Fleetd::start();
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP, "version": "1.0.0",
            "strategy": {"type": "canary", "rollback_triggers": [
                {"type": "high-error-rate", "threshold": 5}]},
            "target": {"devices": ["x"]},
        }),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body.to_string();
    assert!(
        msg.contains("rollback_triggers[0].threshold") && msg.contains("fraction"),
        "{msg}"
    );
}
