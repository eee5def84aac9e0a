//! Staged rollouts end to end: a real fleetd, real agents as separate processes, the real
//! sample app. A good canary completes step by step; a version that crashes on start is rolled
//! back after the first step and never reaches the other devices; a SIGKILLed fleetd resumes
//! the same step.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{upload_sample, wait_deployment, wait_driver_passes, wait_online, APP};
use support::{post, post_json, upload, wait_until, Fleetd};

const TICK: [(&str, &str); 1] = [("FLEETD_ROLLOUT_TICK_MS", "200")];

fn fleet_on_v1(fleetd: &Fleetd, prefix: &str, n: usize) -> Vec<Agent> {
    support::fleet::fleet_on_v1(fleetd, prefix, n, "r1", &[])
}

fn canary(fleetd: &Fleetd, version: &str, interval: &str) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": version,
            "strategy": {"type": "canary", "initial_percentage": 20, "increment_percentage": 40,
                         "increment_interval": interval, "min_healthy_time": "1s",
                         "progress_deadline": "60s"},
            "target": {"selector": {"ring": "r1"}},
        }),
    );
    assert_eq!(status, 201, "create canary: {body}");
    body["id"].as_str().expect("id").to_string()
}

fn step_sizes(view: &Value) -> Vec<usize> {
    view["rollout"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["devices"].as_array().map_or(0, Vec::len))
        .collect()
}

#[test]
fn a_good_canary_completes_through_every_step() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "good", 5);
    let refs: Vec<&Agent> = agents.iter().collect();
    upload_sample(&fleetd, "2.0.0");
    let id = canary(&fleetd, "2.0.0", "2s");
    let view = wait_deployment(&fleetd, &id, "succeeded", &refs);
    assert_eq!(step_sizes(&view), vec![1, 2, 2], "{view:#}");
    assert_eq!(view["rollout"]["phase"], "succeeded", "{view:#}");
    for a in &agents {
        assert_eq!(
            view["devices"][&a.device_id]["state"], "succeeded",
            "{view:#}"
        );
        let v2 = wait_until(Duration::from_secs(15), || {
            a.app_pids(APP, "2.0.0").len() == 1 && a.app_pids(APP, "1.0.0").is_empty()
        });
        assert!(v2, "{} runs exactly v2", a.device_id);
    }
}

#[test]
fn a_crashing_canary_is_rolled_back_after_the_first_step() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "crash", 5);
    let refs: Vec<&Agent> = agents.iter().collect();
    let (status, body) = upload(&fleetd, APP, "3.0.0", b"#!/bin/sh\nexit 1\n");
    assert!(status == 201 || status == 200, "upload: {body}");
    let id = canary(&fleetd, "3.0.0", "2s");
    let view = wait_deployment(&fleetd, &id, "rolled-back", &refs);
    let trigger = &view["rollout"]["trigger"];
    assert!(
        trigger["kind"] == "crash-loop" || trigger["kind"] == "step-failed",
        "{view:#}"
    );
    assert!(trigger["detail"].as_str().is_some_and(|d| !d.is_empty()));
    let first: Vec<String> = view["rollout"]["steps"][0]["devices"]
        .as_array()
        .expect("step 0")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    assert_eq!(first.len(), 1, "{view:#}");
    for a in &agents {
        let state = &view["devices"][&a.device_id]["state"];
        if first.contains(&a.device_id) {
            assert_eq!(state, "rolled-back", "{view:#}");
        } else {
            assert_eq!(state, "waiting", "{view:#}");
            assert!(
                !a.data_dir().join("apps").join(APP).join("3.0.0").exists(),
                "{} never received 3.0.0",
                a.device_id
            );
        }
        let back = wait_until(Duration::from_secs(30), || {
            a.app_pids(APP, "1.0.0").len() == 1
        });
        assert!(back, "{} runs 1.0.0 again:\n{}", a.device_id, a.log());
    }
}

#[test]
fn a_sigkilled_fleetd_resumes_the_same_step_and_promote_moves_on() {
    let mut fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "resume", 3);
    let refs: Vec<&Agent> = agents.iter().collect();
    let witness = Agent::start("resume-witness", &fleetd.access(), &[("ring", "witness")]);
    wait_online(&fleetd, &[&witness]);
    upload_sample(&fleetd, "2.0.0");
    let id = canary(&fleetd, "2.0.0", "1h");
    let healthy_first_step = || {
        let v = support::fleet::deployment(&fleetd, &id);
        v["rollout"]["steps"][0]["healthy"] == 1
    };
    assert!(wait_until(Duration::from_secs(60), healthy_first_step));
    // The driver ticked the canary with its first step healthy: it waits out the hour.
    wait_driver_passes(&fleetd, &witness, "1.0.0");
    let before = support::fleet::deployment(&fleetd, &id);
    assert_eq!(before["rollout"]["current_step"], 0, "{before:#}");

    fleetd.kill9();
    fleetd.restart();
    wait_online(&fleetd, &refs);
    // The restarted fleetd's driver ticked the canary (with its statuses read again).
    wait_online(&fleetd, &[&witness]);
    wait_driver_passes(&fleetd, &witness, "2.0.0");
    let after = support::fleet::deployment(&fleetd, &id);
    assert_eq!(after["rollout"]["current_step"], 0, "same step: {after:#}");
    assert_eq!(after["state"], "in-progress", "{after:#}");
    assert_eq!(after["rollout"]["steps"][0], before["rollout"]["steps"][0]);

    let (status, body) = post(
        &fleetd.url(&format!("/api/v1/deployments/{id}/pause")),
        "application/json",
        b"{}",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &fleetd.url(&format!("/api/v1/deployments/{id}/pause")),
        "application/json",
        b"{}",
    );
    assert_eq!(status, 409, "pausing twice is a conflict: {body}");
    assert!(body.contains("paused"), "{body}");
    for next in 1..=2u64 {
        // Promote resumes and skips the hour-long interval, one step at a time, once the
        // current step is healthy.
        let ok = wait_until(Duration::from_secs(60), || {
            let v = support::fleet::deployment(&fleetd, &id);
            let step = v["rollout"]["current_step"].as_u64().unwrap_or(0) as usize;
            v["rollout"]["steps"][step]["healthy"] == 1
        });
        assert!(ok, "{:#}", support::fleet::deployment(&fleetd, &id));
        let (status, body) = post(
            &fleetd.url(&format!("/api/v1/deployments/{id}/promote")),
            "application/json",
            b"{}",
        );
        assert_eq!(status, 200, "{body}");
        let moved = wait_until(Duration::from_secs(30), || {
            support::fleet::deployment(&fleetd, &id)["rollout"]["current_step"] == next
        });
        assert!(moved, "{:#}", support::fleet::deployment(&fleetd, &id));
    }
    let view = wait_deployment(&fleetd, &id, "succeeded", &refs);
    assert_eq!(step_sizes(&view), vec![1, 1, 1], "{view:#}");
}

#[test]
fn manifests_register_and_errors_name_the_field() {
    let fleetd = Fleetd::start();
    let seed = include_str!("../../schema/src/manifest/seed_app.yaml");
    let url = fleetd.url("/api/v1/applications");
    let (status, body) = post(&url, "application/yaml", seed.as_bytes());
    assert_eq!(status, 201, "{body}");
    let (status, _) = post(&url, "application/yaml", seed.as_bytes());
    assert_eq!(status, 200, "same manifest again is idempotent");
    let changed = seed.replace("memory: 2Gi", "memory: 3Gi");
    let (status, body) = post(&url, "application/yaml", changed.as_bytes());
    assert_eq!(status, 409, "{body}");
    let typo = seed.replace("retries: 3", "retries: 3\n      retrys: 4");
    let (status, body) = post(&url, "application/yaml", typo.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("retrys"), "{body}");
    let (status, body) = support::get(&fleetd.url("/api/v1/applications/edge-inference/2.1.0"));
    assert_eq!(status, 200, "{body}");
    let app = support::parse_json(&body);
    assert_eq!(
        app["application"]["spec"]["resources"]["memory_limit"],
        2u64 << 30
    );
}

#[test]
fn a_rolling_update_never_updates_more_devices_than_max_unavailable() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents = fleet_on_v1(&fleetd, "roll", 4);
    let refs: Vec<&Agent> = agents.iter().collect();
    upload_sample(&fleetd, "2.0.0");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": "2.0.0",
            "strategy": {"type": "rolling", "max_unavailable": 1, "batch_size": 2,
                         "health_check_grace_period": "1s"},
            "target": {"selector": {"ring": "r1"}},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let mut max_updating = 0;
    let mut seen_updating = false;
    let done = wait_until(Duration::from_secs(90), || {
        let v = support::fleet::deployment(&fleetd, &id);
        let updating = v["devices"].as_object().map_or(0, |m| {
            m.values()
                .filter(|d| d["state"] == "pending" || d["state"] == "in-progress")
                .count()
        });
        max_updating = max_updating.max(updating);
        seen_updating |= updating > 0;
        v["state"] == "succeeded"
    });
    let view = wait_deployment(&fleetd, &id, "succeeded", &refs);
    assert!(done);
    assert!(seen_updating, "the poll saw devices updating");
    assert!(
        max_updating <= 1,
        "at most max_unavailable=1 updating, saw {max_updating}"
    );
    assert_eq!(
        step_sizes(&view),
        vec![1, 1, 1, 1],
        "batch size is bounded by max_unavailable"
    );
}

#[test]
fn a_device_joining_later_receives_the_release_of_its_group() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let first = Agent::start("late-1", &fleetd.access(), &[("store", "17")]);
    wait_online(&fleetd, &[&first]);
    upload_sample(&fleetd, "1.0.0");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/groups"),
        &json!({"name": "store-17", "match_expressions": [
            {"key": "store", "operator": "In", "values": ["17"]}]}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": APP, "version": "1.0.0", "target": {"group": "store-17"}}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_deployment(&fleetd, &id, "succeeded", &[&first]);

    let second = Agent::start("late-2", &fleetd.access(), &[("store", "17")]);
    let other = Agent::start("late-3", &fleetd.access(), &[("store", "18")]);
    wait_online(&fleetd, &[&second, &other]);
    let got = wait_until(Duration::from_secs(60), || {
        second.app_pids(APP, "1.0.0").len() == 1
    });
    assert!(got, "the late joiner runs the release:\n{}", second.log());
    // The rollout stays succeeded while the late joiner installs (the state is the rollout's
    // phase); the joiner's own progress shows when it runs the release.
    let mut view = Value::Null;
    let reported = wait_until(Duration::from_secs(30), || {
        view = support::fleet::deployment(&fleetd, &id);
        view["devices"]["late-2"]["state"] == "succeeded"
    });
    assert!(reported, "late-2 reports the release running: {view:#}");
    assert_eq!(view["state"], "succeeded", "{view:#}");
    assert!(view["devices"].get("late-3").is_none(), "{view:#}");
    assert!(other.app_pids(APP, "1.0.0").is_empty());
}

#[test]
fn a_registered_application_carries_its_spec_and_placement() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let pi = Agent::start(
        "place-pi",
        &fleetd.access(),
        &[("type", "pi"), ("ring", "p")],
    );
    let other = Agent::start(
        "place-x86",
        &fleetd.access(),
        &[("type", "x86"), ("ring", "p")],
    );
    wait_online(&fleetd, &[&pi, &other]);
    upload_sample(&fleetd, "2.0.0");
    let manifest = json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": APP, "version": "2.0.0"},
        "spec": {
            "artifacts": [{"name": APP, "version": "2.0.0", "type": "binary"}],
            "configuration": {"env": {"GREETING": "hi", "PORT": 0}},
            "runtime": {"restart": "on-failure", "startup_timeout": "20s"},
            "placement": {"device_selector": {"type": "pi"}}
        }
    });
    support::fleet::register_app(&fleetd, &manifest);
    let mut sub = support::MqttClient::connect(fleetd.mqtt_port, "spec-watch");
    sub.subscribe("fleet/place-pi/cmd");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": APP, "version": "2.0.0", "target": {"selector": {"ring": "p"}}}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["devices"],
        json!(["place-pi"]),
        "placement keeps the pi only"
    );
    let msg = sub
        .wait_for("fleet/place-pi/cmd", Duration::from_secs(10), |p| {
            pi.try_open_cmd(&p.payload)
                .is_some_and(|d| !d.apps.is_empty())
        })
        .expect("desired state published");
    let desired = pi.open_cmd(&msg.payload);
    let spec = &desired.apps[0].spec;
    assert_eq!(spec.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(spec.env.get("PORT").map(String::as_str), Some("0"));
    assert_eq!(spec.runtime.startup_timeout_ms, 20_000);
    assert_eq!(
        spec.runtime.restart,
        fleet_schema::app_spec::RestartPolicy::OnFailure
    );

    // Late joiners matching the target are held to the placement too.
    let id = body["id"].as_str().expect("id").to_string();
    let late_pi = Agent::start(
        "place-pi-late",
        &fleetd.access(),
        &[("type", "pi"), ("ring", "p")],
    );
    let late_x86 = Agent::start(
        "place-x86-late",
        &fleetd.access(),
        &[("type", "x86"), ("ring", "p")],
    );
    wait_online(&fleetd, &[&late_pi, &late_x86]);
    let view = wait_deployment(&fleetd, &id, "succeeded", &[&pi, &late_pi]);
    assert_eq!(
        view["devices"]["place-pi-late"]["state"], "succeeded",
        "{view:#}"
    );
    assert!(view["devices"].get("place-x86-late").is_none(), "{view:#}");
    let why = view["rollout"]["ineligible"]["place-x86-late"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.starts_with("placement:") && why.contains("pi"),
        "the reason is shown: {view:#}"
    );
    assert!(late_x86.app_pids(APP, "2.0.0").is_empty());
}
