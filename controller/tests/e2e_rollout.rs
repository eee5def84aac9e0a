//! End to end: a real fleetd, real agents as separate processes, a real broker (embedded, or
//! Mosquitto), the real sample app deployed as v1 then v2.

mod support;

use std::time::Duration;
use support::agent::Agent;
use support::external::{BrokerRef, Mosquitto, MosquittoAuth};
use support::fleet::{
    app_status, deploy, sample_app_addr, upload_sample, wait_agent_answers, wait_deployment,
    wait_offline, wait_online, APP,
};
use support::{get, wait_until, Fleetd};

/// Deploys v1 then v2 to three agents and checks every device ends on v2 with v1 gone.
fn upgrade_three_devices(fleetd: &Fleetd) {
    let access = fleetd.access();
    let agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&format!("dev-{i}"), &access, &[("site", "lab")]))
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    let ids: Vec<&str> = agents.iter().map(|a| a.device_id.as_str()).collect();
    wait_online(fleetd, &refs);
    upload_sample(fleetd, "1.0.0");
    upload_sample(fleetd, "2.0.0");

    let d1 = deploy(fleetd, "1.0.0", &ids);
    wait_deployment(fleetd, &d1, "succeeded", &refs);
    let mut v1_pids = Vec::new();
    for a in &agents {
        let pids = a.app_pids(APP, "1.0.0");
        assert_eq!(
            pids.len(),
            1,
            "{}: one v1 process, got {pids:?}",
            a.device_id
        );
        v1_pids.extend(pids);
    }

    let d2 = deploy(fleetd, "2.0.0", &ids);
    let view = wait_deployment(fleetd, &d2, "succeeded", &refs);
    for id in &ids {
        assert_eq!(view["devices"][id]["state"], "succeeded", "{view:#}");
        let app = app_status(fleetd, id);
        assert_eq!(app["version"], "2.0.0", "{app:#}");
        assert_eq!(app["phase"], "running", "{app:#}");
    }
    for a in &agents {
        let gone = wait_until(Duration::from_secs(15), || {
            a.app_pids(APP, "1.0.0").is_empty()
        });
        assert!(
            gone,
            "{}: v1 still running: {:?}",
            a.device_id,
            a.app_pids(APP, "1.0.0")
        );
        assert_eq!(
            a.app_pids(APP, "2.0.0").len(),
            1,
            "{}: one v2 process",
            a.device_id
        );
        for pid in &v1_pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || support::procs::is_zombie(*pid),
                "v1 process {pid} survived the upgrade"
            );
        }
        // The new version really serves.
        let addr = sample_app_addr(a, "2.0.0").expect("sample app logged its address");
        let (status, body) = get(&format!("http://{addr}/health"));
        assert_eq!((status, body.trim()), (200, "ok"));
    }
}

#[test]
fn three_agents_upgrade_from_v1_to_v2_on_the_embedded_broker() {
    let fleetd = Fleetd::start();
    upgrade_three_devices(&fleetd);
}

#[test]
fn three_agents_upgrade_from_v1_to_v2_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::start(MosquittoAuth::FleetFiles) else {
        return;
    };
    let fleetd = Fleetd::start_external(&BrokerRef::of(&mosquitto));
    upgrade_three_devices(&fleetd);
}

#[test]
fn agent_killed_during_a_deployment_reaches_the_desired_version() {
    let fleetd = Fleetd::start();
    let mut agent = Agent::start("killed-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    upload_sample(&fleetd, "2.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["killed-1"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);

    // Killed while the deployment is under way, then offline while more happens.
    let d2 = deploy(&fleetd, "2.0.0", &["killed-1"]);
    agent.kill9();
    wait_offline(&fleetd, &agent);
    agent.restart();
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .app_pids(APP, "1.0.0")
            .is_empty()),
        "v1 still running after the upgrade"
    );
    let v2 = agent.app_pids(APP, "2.0.0");
    assert_eq!(v2.len(), 1, "exactly one v2 process: {v2:?}");

    // A restart of the agent on the desired version neither re-downloads nor double-starts.
    let log_before = agent.log().len();
    agent.kill9();
    agent.restart();
    wait_online(&fleetd, &[&agent]);
    // The restarted agent has handled its retained desired state once it answers a request
    // sent after it: whatever it would redo, it has started by then.
    wait_agent_answers(&fleetd, &agent);
    assert_eq!(
        agent.app_pids(APP, "2.0.0"),
        v2,
        "app was restarted or duplicated"
    );
    let since_restart = agent.log()[log_before..].to_lowercase();
    assert!(
        !since_restart.contains("download"),
        "agent downloaded again after restart:\n{since_restart}"
    );
}

#[test]
fn fleetd_killed_after_a_deployment_was_created_completes_it_after_restart() {
    let mut fleetd = Fleetd::start();
    let access = fleetd.access();
    let agents: Vec<Agent> = (1..=2)
        .map(|i| Agent::start(&format!("crash-{i}"), &access, &[]))
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_online(&fleetd, &refs);
    upload_sample(&fleetd, "1.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["crash-1", "crash-2"]);
    fleetd.restart(); // SIGKILL right after the deployment was acknowledged
    let view = wait_deployment(&fleetd, &d1, "succeeded", &refs);
    assert_eq!(view["version"], "1.0.0");
    let (status, versions) = get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/versions")));
    assert_eq!(status, 200);
    assert!(versions.contains("1.0.0"), "{versions}");
    for a in &agents {
        assert_eq!(a.app_pids(APP, "1.0.0").len(), 1);
    }
}
