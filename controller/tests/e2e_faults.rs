//! End to end, under faults: a tampered artifact, an artifact server that is down for a while,
//! and hostile payloads on the bus.

mod support;

use std::time::Duration;
use support::agent::Agent;
use support::fleet::{
    app_status, deploy, deployment, register_app, upload_sample, wait_deployment, wait_online, APP,
};
use support::gate::Gate;
use support::{get, wait_until, Fleetd, MqttClient};

#[test]
fn tampered_artifact_is_refused_and_the_previous_version_keeps_running() {
    let fleetd = Fleetd::start();
    let agent = Agent::start("tamper-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["tamper-1"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    let v1 = agent.app_pids(APP, "1.0.0");
    assert_eq!(v1.len(), 1);

    upload_sample(&fleetd, "2.0.0");
    // Change bytes in the store after upload: same size, different content.
    let blob = fleetd
        .data_dir()
        .join("artifacts")
        .join(APP)
        .join("2.0.0")
        .join("blob");
    let mut bytes = std::fs::read(&blob).expect("stored blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("tamper with the blob");

    let d2 = deploy(&fleetd, "2.0.0", &["tamper-1"]);
    let view = wait_deployment(&fleetd, &d2, "failed", &[&agent]);
    let dev = &view["devices"]["tamper-1"];
    assert_eq!(dev["state"], "failed", "{view:#}");
    let reason = dev["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("sha256"),
        "reason names the check: {reason}"
    );

    let app = app_status(&fleetd, "tamper-1");
    assert_eq!(app["phase"], "failed", "{app:#}");
    assert_eq!(app["running_version"], "1.0.0", "{app:#}");
    assert_eq!(
        agent.app_pids(APP, "1.0.0"),
        v1,
        "v1 kept running, same process"
    );
    assert!(
        agent.app_pids(APP, "2.0.0").is_empty(),
        "tampered v2 never ran"
    );
}

#[test]
fn an_artifact_server_down_for_a_while_delays_a_rollout_but_does_not_fail_it() {
    // Download URLs point at a gate that drops every connection (fleetd restarting, a link
    // down): the device keeps retrying, says why, and the rollout waits for it.
    let gate = Gate::shut();
    let public = format!("http://127.0.0.1:{}", gate.port);
    let fleetd = Fleetd::start_with_args(&["--public-url", &public]);
    let agent = Agent::start("outage-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["outage-1"]);

    let mut last = serde_json::Value::Null;
    let retried = wait_until(Duration::from_secs(20), || {
        last = app_status(&fleetd, "outage-1");
        gate.refused() >= 2 && last["last_error"].as_str().is_some()
    });
    assert!(
        retried,
        "the agent retried and reported why ({} refused): {last:#}\n{}",
        gate.refused(),
        agent.log()
    );
    assert_eq!(last["phase"], "downloading", "{last:#}");
    let view = deployment(&fleetd, &d1);
    assert_eq!(view["state"], "in-progress", "{view:#}");
    assert_eq!(
        view["devices"]["outage-1"]["state"], "in-progress",
        "{view:#}"
    );

    gate.open_to(fleetd.http_port().expect("fleetd's HTTP port"));
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1);
}

#[test]
fn an_app_version_reusing_an_older_artifact_is_fetched_once() {
    // A configuration-only release: web@1.0.1 runs the artifact of 1.0.0. The agent used to
    // record the download under the artifact's version and fetch it again, forever.
    let fleetd = Fleetd::start();
    let agent = Agent::start("reuse-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    register_app(
        &fleetd,
        &serde_json::json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": APP, "version": "1.0.1"},
            "spec": {"artifacts": [{"name": APP, "version": "1.0.0", "type": "binary"}]}
        }),
    );
    let d = deploy(&fleetd, "1.0.1", &["reuse-1"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.1").len(), 1);
    // Handled everything it was sent (a second download would have started by then).
    support::fleet::wait_agent_answers(&fleetd, &agent);
    let fetches = agent.log().matches("downloading").count();
    assert_eq!(fetches, 1, "one download:\n{}", agent.log());
}

#[test]
fn hostile_payloads_on_status_and_cmd_crash_nothing() {
    let fleetd = Fleetd::start();
    let mut agent = Agent::start("hostile-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    upload_sample(&fleetd, "2.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["hostile-1"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);

    let good = fleet_schema::encode(&support::device_status("x", &[])).expect("encodes");
    let garbage = vec![0xff, 0x13, 0x37, 0x00, 0xde, 0xad];
    let truncated = good[..good.len() / 2].to_vec();
    let oversized = vec![0xa1; fleet_schema::DEFAULT_MAX_PAYLOAD + 1024];
    let mut mqtt = MqttClient::connect(fleetd.mqtt_port, "hostile-publisher");
    let topics = [
        "fleet/x/status",
        "fleet/x/cmd",
        "fleet/hostile-1/cmd",
        "fleet/hostile-1/status",
    ];
    for topic in topics {
        for payload in [&garbage, &truncated] {
            mqtt.publish(topic, payload.clone(), false);
        }
    }
    // An oversized payload never reaches the broker: the front closes its publisher.
    for (i, topic) in topics.iter().enumerate() {
        let mut big = MqttClient::connect(fleetd.mqtt_port, &format!("hostile-big-{i}"));
        assert!(
            big.publish_refused(topic, oversized.clone(), false),
            "oversized publish on {topic} refused"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || fleetd
            .metrics()
            .contains("fleetd_limit_hits_total{limit=\"mqtt_status_bytes\"} 4")),
        "the front counted the oversized payloads: {}",
        fleetd.metrics()
    );
    // Retained garbage where the agent's desired state lives, then a retained delete.
    mqtt.publish("fleet/hostile-1/cmd", garbage.clone(), true);
    mqtt.publish("fleet/hostile-1/cmd", Vec::new(), true);

    let rejected = || -> f64 {
        fleetd
            .metrics()
            .lines()
            .filter(|l| l.starts_with("fleetd_rejected_payloads_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(10), || rejected() >= 4.0),
        "fleetd counted the rejected payloads: {}",
        fleetd.metrics()
    );
    assert_eq!(
        get(&fleetd.url("/api/v1/health")).0,
        200,
        "fleetd still serves"
    );
    assert!(agent.is_running(), "agent survived; log:\n{}", agent.log());
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log()
            .contains("refused message")),
        "agent logged the refused payloads:\n{}",
        agent.log()
    );
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1, "app untouched");

    // The bus still works: the next deployment goes through, and an agent that restarts now
    // still finds its desired state (the controller repaired the retained message). A wiped
    // agent has a new key: an operator resets the device so it may enroll again, and the
    // controller seals the desired state for the new key.
    let d2 = deploy(&fleetd, "2.0.0", &["hostile-1"]);
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    agent.kill9();
    support::procs::kill_processes_under(&agent.data_dir());
    std::fs::remove_dir_all(agent.data_dir()).expect("wipe the agent's data");
    let (status, body) = support::post(
        &fleetd.url("/api/v1/devices/hostile-1/reset"),
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "reset: {body}");
    agent.restart();
    let ok = wait_until(Duration::from_secs(30), || {
        agent.app_pids(APP, "2.0.0").len() == 1 && deployment(&fleetd, &d2)["state"] == "succeeded"
    });
    assert!(
        ok,
        "a wiped agent re-converged from the retained desired state:\n{}",
        agent.log()
    );
}

#[test]
fn an_agent_re_reports_when_the_controller_resends_the_generation_it_holds() {
    let fleetd = Fleetd::start();
    let agent = Agent::start("repeat-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["repeat-1"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);

    let mut mqtt = MqttClient::connect(fleetd.mqtt_port, "repeat-observer");
    mqtt.subscribe("fleet/repeat-1/cmd");
    let cmd = mqtt
        .wait_for("fleet/repeat-1/cmd", Duration::from_secs(10), |_| true)
        .expect("retained desired state");
    mqtt.subscribe("fleet/repeat-1/status");
    let decode = |p: &rumqttc::Publish| -> fleet_schema::DeviceStatus {
        agent.open_report("fleet/repeat-1/status", &p.payload)
    };
    let first = mqtt
        .wait_for("fleet/repeat-1/status", Duration::from_secs(10), |_| true)
        .map(|p| decode(&p))
        .expect("retained status");
    std::thread::sleep(Duration::from_millis(20));
    // The same generation again, as the controller's catch-up sends it.
    mqtt.publish("fleet/repeat-1/cmd", cmd.payload.to_vec(), false);
    let again = mqtt.wait_for("fleet/repeat-1/status", Duration::from_secs(10), |p| {
        decode(p).reported_at > first.reported_at
    });
    let again = again
        .map(|p| decode(&p))
        .expect("agent re-reported its status");
    assert_eq!(again.observed_generation, first.observed_generation);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1, "nothing restarted");
}
