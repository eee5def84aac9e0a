//! Fleet-level steps for end-to-end tests: the sample app as an artifact, deployments, and
//! waiting for a deployment's outcome, with the agents' logs in every failure message.

use super::agent::Agent;
use super::procs::workspace_bin;
use super::{get, parse_json, post_json, upload, wait_until, Fleetd};
use std::time::Duration;

/// The app name the end-to-end tests deploy.
pub const APP: &str = "sample-app";

/// The sample HTTP service's bytes for `version`: the built `fleet-sample-app`, with a trailer
/// for every version but 1.0.0 so that versions differ in bytes (ELF ignores trailing data).
pub fn sample_app_bytes(version: &str) -> Vec<u8> {
    let mut bytes =
        std::fs::read(workspace_bin("fleet-sample-app")).expect("read fleet-sample-app");
    if version != "1.0.0" {
        bytes.extend_from_slice(format!("\nfleetd-test-trailer {version}\n").as_bytes());
    }
    bytes
}

/// Uploads the sample app as `version`, asserting success.
pub fn upload_sample(fleetd: &Fleetd, version: &str) {
    let (status, body) = upload(fleetd, APP, version, &sample_app_bytes(version));
    assert!(
        status == 201 || status == 200,
        "upload {version}: {status} {body}"
    );
}

/// Waits until every agent's device is known to fleetd and online.
pub fn wait_online(fleetd: &Fleetd, agents: &[&Agent]) {
    for a in agents {
        let url = fleetd.url(&format!("/api/v1/devices/{}", a.device_id));
        let ok = wait_until(Duration::from_secs(20), || {
            let (status, body) = get(&url);
            status == 200 && parse_json(&body)["online"] == serde_json::json!(true)
        });
        assert!(
            ok,
            "device {} never came online; agent log:\n{}",
            a.device_id,
            a.log()
        );
    }
}

/// Creates an all-at-once deployment of the sample app to `devices`; returns its id.
pub fn deploy(fleetd: &Fleetd, version: &str, devices: &[&str]) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &serde_json::json!({
            "application": APP,
            "version": version,
            "strategy": {"type": "all-at-once"},
            "target": {"devices": devices},
        }),
    );
    assert_eq!(status, 201, "create deployment: {body}");
    body["id"].as_str().expect("deployment id").to_string()
}

/// The deployment's JSON view.
pub fn deployment(fleetd: &Fleetd, id: &str) -> serde_json::Value {
    let (status, body) = get(&fleetd.url(&format!("/api/v1/deployments/{id}")));
    assert_eq!(status, 200, "{body}");
    parse_json(&body)
}

/// Waits until the deployment's overall state is `state`; on timeout fails with the
/// deployment, fleetd's stderr and every agent's log.
pub fn wait_deployment(
    fleetd: &Fleetd,
    id: &str,
    state: &str,
    agents: &[&Agent],
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(60), || {
        last = deployment(fleetd, id);
        last["state"] == serde_json::json!(state)
    });
    if !ok {
        let logs: Vec<String> = agents
            .iter()
            .map(|a| format!("--- agent {} ---\n{}", a.device_id, a.log()))
            .collect();
        panic!(
            "deployment {id} never reached {state}: {last:#}\n--- fleetd ---\n{}\n{}",
            fleetd.stderr(),
            logs.join("\n")
        );
    }
    last
}

/// The app's reported status on a device, from the API.
pub fn app_status(fleetd: &Fleetd, device: &str) -> serde_json::Value {
    let (status, body) = get(&fleetd.url(&format!("/api/v1/devices/{device}")));
    assert_eq!(status, 200, "{body}");
    let dev = parse_json(&body);
    dev["apps"]
        .as_array()
        .and_then(|apps| {
            apps.iter()
                .find(|a| a["name"] == serde_json::json!(APP))
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

/// The address the sample app on an agent says it listens on (latest line of its log).
pub fn sample_app_addr(agent: &Agent, version: &str) -> Option<String> {
    agent
        .app_log(APP)
        .lines()
        .rev()
        .find(|l| l.contains(&format!("fleet-sample-app {version} listening on")))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

/// Starts `n` agents `<prefix>-1..n` labelled `ring=<ring>` (with `args` as extra flags), all
/// running sample-app 1.0.0 deployed all at once.
pub fn fleet_on_v1(
    fleetd: &Fleetd,
    prefix: &str,
    n: usize,
    ring: &str,
    args: &[&str],
) -> Vec<Agent> {
    let agents: Vec<Agent> = (1..=n)
        .map(|i| {
            Agent::start_with_args(
                &format!("{prefix}-{i}"),
                &fleetd.access(),
                &[("ring", ring)],
                args,
            )
        })
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_online(fleetd, &refs);
    upload_sample(fleetd, "1.0.0");
    let ids: Vec<&str> = agents.iter().map(|a| a.device_id.as_str()).collect();
    let d1 = deploy(fleetd, "1.0.0", &ids);
    wait_deployment(fleetd, &d1, "succeeded", &refs);
    agents
}

/// Registers an application version from a JSON manifest, asserting it is new (201).
pub fn register_app(fleetd: &Fleetd, manifest: &serde_json::Value) {
    let (status, body) = super::post(
        &fleetd.url("/api/v1/applications"),
        "application/json",
        manifest.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "register {manifest}: {body}");
}

/// The application [`wait_driver_passes`] deploys.
pub const WITNESS_APP: &str = "driver-witness";

/// A positive sign that fleetd's rollout driver has made complete passes from now on: a
/// one-device all-at-once deployment of [`WITNESS_APP`] `version` to `witness` (a device no
/// other deployment of the test targets), created now, reaches `succeeded`. That takes several
/// driver passes (the device installs and runs it, then stays healthy), and every pass ticks
/// every running rollout: after it, a test may assert that another rollout did *not* move.
pub fn wait_driver_passes(fleetd: &Fleetd, witness: &Agent, version: &str) {
    let (status, body) = upload(fleetd, WITNESS_APP, version, &sample_app_bytes(version));
    assert!(
        status == 201 || status == 200,
        "upload {WITNESS_APP} {version}: {status} {body}"
    );
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &serde_json::json!({
            "application": WITNESS_APP,
            "version": version,
            "strategy": {"type": "all-at-once"},
            "target": {"devices": [witness.device_id]},
        }),
    );
    assert_eq!(status, 201, "create the witness deployment: {body}");
    let id = body["id"].as_str().expect("deployment id");
    wait_deployment(fleetd, id, "succeeded", &[witness]);
}

/// A positive sign that `agent` has handled every message the broker queued for it before
/// now: it answers a log-history request fleetd sends it now (`source=agent`). The agent
/// handles bus messages in order, and the broker hands it a retained desired state when it
/// subscribes, before any later request.
pub fn wait_agent_answers(fleetd: &Fleetd, agent: &Agent) {
    let url = fleetd.url(&format!(
        "/api/v1/devices/{}/logs?source=agent&limit=1",
        agent.device_id
    ));
    let answered = wait_until(Duration::from_secs(30), || {
        let (status, body) = get(&url);
        status == 200
            && body.lines().any(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|b| b["history"] == serde_json::json!(true))
            })
    });
    assert!(
        answered,
        "agent {} never answered a history request:\n{}",
        agent.device_id,
        agent.log()
    );
}

/// Waits until fleetd shows `agent`'s device offline (its connection is gone).
pub fn wait_offline(fleetd: &Fleetd, agent: &Agent) {
    let url = fleetd.url(&format!("/api/v1/devices/{}", agent.device_id));
    let offline = wait_until(Duration::from_secs(30), || {
        let (status, body) = get(&url);
        status == 200 && parse_json(&body)["online"] == serde_json::json!(false)
    });
    assert!(offline, "device {} never went offline", agent.device_id);
}
