//! Rolling updates with `max_surge`, end to end with real agents: each batch is max_unavailable
//! devices updated in place plus max_surge devices that start the new version next to the old
//! one and stop the old one only after the grace period, so they never stop serving.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::{post_json, Fleetd, MqttClient};

const TICK: [(&str, &str); 1] = [("FLEETD_ROLLOUT_TICK_MS", "200")];

fn step_devices(view: &Value, i: usize) -> Vec<String> {
    view["rollout"]["steps"][i]["devices"]
        .as_array()
        .expect("step devices")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

/// The rollout hint in the (retained) desired state with 2.0.0 published to `device`.
fn desired_hint(sub: &mut MqttClient, agent: &Agent) -> Option<fleet_schema::BlueGreenHint> {
    let topic = format!("fleet/{}/cmd", agent.device_id);
    sub.subscribe(&topic);
    let msg = sub
        .wait_for(&topic, Duration::from_secs(15), |p| {
            agent
                .try_open_cmd(&p.payload)
                .is_some_and(|d| d.apps.iter().any(|a| a.version == "2.0.0"))
        })
        .expect("desired state with 2.0.0");
    let desired = agent.open_cmd(&msg.payload);
    desired.apps.iter().find(|a| a.name == APP)?.rollout
}

#[test]
fn max_surge_devices_update_make_before_break_and_widen_the_batch() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&format!("surge-{i}"), &fleetd.access(), &[("ring", "s")]))
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_online(&fleetd, &refs);
    upload_sample(&fleetd, "1.0.0");
    let ids: Vec<&str> = agents.iter().map(|a| a.device_id.as_str()).collect();
    let d1 = deploy(&fleetd, "1.0.0", &ids);
    wait_deployment(&fleetd, &d1, "succeeded", &refs);

    upload_sample(&fleetd, "2.0.0");
    let mut sub = MqttClient::connect(fleetd.mqtt_port, "surge-watch");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": "2.0.0",
            "strategy": {"type": "rolling", "max_unavailable": 1, "max_surge": 1,
                         "health_check_grace_period": "3s"},
            "target": {"selector": {"ring": "s"}},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let view = support::fleet::deployment(&fleetd, &id);
    let first = step_devices(&view, 0);
    assert_eq!(first.len(), 2, "max_unavailable + max_surge: {view:#}");
    assert_eq!(step_devices(&view, 1).len(), 1, "{view:#}");
    let (in_place, surging) = (&first[0], &first[1]);
    let agent_of = |id: &str| {
        agents
            .iter()
            .find(|a| a.device_id == id)
            .expect("a step device is one of ours")
    };
    assert_eq!(
        desired_hint(&mut sub, agent_of(in_place)),
        None,
        "in place: {view:#}"
    );
    let hint = desired_hint(&mut sub, agent_of(surging)).expect("the surge device gets a hint");
    assert_eq!((hint.validation_ms, hint.switch_delay_ms), (3_000, 0));

    // On the surge device the old version keeps running next to the new one for the grace
    // period before it is stopped.
    let agent = agents
        .iter()
        .find(|a| &a.device_id == surging)
        .expect("surging agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut both_since: Option<Instant> = None;
    let mut overlap = Duration::ZERO;
    while Instant::now() < deadline {
        let (old, new) = (
            agent.app_pids(APP, "1.0.0").len(),
            agent.app_pids(APP, "2.0.0").len(),
        );
        if old == 1 && new == 1 {
            let since = *both_since.get_or_insert_with(Instant::now);
            overlap = since.elapsed();
        } else if both_since.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        overlap >= Duration::from_millis(2_000),
        "old and new ran side by side for {overlap:?} only:\n{}",
        agent.log()
    );
    let view = wait_deployment(&fleetd, &id, "succeeded", &refs);
    for a in &agents {
        assert_eq!(
            view["devices"][&a.device_id]["state"], "succeeded",
            "{view:#}"
        );
        let only_v2 = support::wait_until(Duration::from_secs(20), || {
            a.app_pids(APP, "2.0.0").len() == 1 && a.app_pids(APP, "1.0.0").is_empty()
        });
        assert!(only_v2, "{} ends on 2.0.0 only:\n{}", a.device_id, a.log());
    }
}
