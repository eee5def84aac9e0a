//! Attacks on the bus that must fail, on the embedded broker (which lets any authenticated
//! client publish anywhere) and on Mosquitto with the password and ACL files fleetd writes:
//! another device's credentials cannot make a device act, change what the API shows for it, or
//! keep its retained desired state away for longer than the controller's repair; a replayed
//! desired state is refused even from a compromised broker; forged presence and requests are
//! ignored; a revoked device is disconnected and stays out; strangers cannot connect.

mod support;

use fleet_schema::{
    AgentRequest, AppPhase, AppStatus, ArtifactRef, ControllerStatus, DesiredApp, DesiredState,
};
use std::time::Duration;
use support::agent::Agent;
use support::device::SimDevice;
use support::external::{BrokerRef, Mosquitto, MosquittoAuth};
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::{get, parse_json, post, wait_until, Fleetd, MqttClient};

const SECS: Duration = Duration::from_secs(15);

/// fleetd on the embedded broker, or on a secured Mosquitto (None: Mosquitto missing, skip).
fn fleet(mosquitto: bool) -> Option<(Fleetd, Option<Mosquitto>)> {
    if mosquitto {
        let m = Mosquitto::start(MosquittoAuth::FleetFiles)?;
        Some((Fleetd::start_external(&BrokerRef::of(&m)), Some(m)))
    } else {
        Some((Fleetd::start(), None))
    }
}

/// A client that can read (and, on the embedded broker, write) every device's `cmd`: an API
/// token on the embedded broker, the broker's own administrator on Mosquitto (a compromised
/// broker).
fn bus_admin(f: &Fleetd, m: Option<&Mosquitto>, id: &str) -> MqttClient {
    match m {
        None => MqttClient::connect(f.mqtt_port, id),
        Some(m) => MqttClient::connect_as(m.port, id, Some(("_fleetd", &m.controller_password())))
            .expect("the broker's administrator connects"),
    }
}

fn evil_state(generation: u64) -> DesiredState {
    let mut spec = fleet_schema::AppSpec::default();
    spec.runtime.entrypoint = Some("/bin/sh".into());
    spec.runtime.args = vec!["-c".into(), "touch /tmp/fleet-pwned-marker".into()];
    DesiredState {
        device_id: "victim".into(),
        generation,
        apps: vec![DesiredApp {
            name: APP.into(),
            version: "6.6.6".into(),
            artifact: ArtifactRef {
                name: APP.into(),
                version: "6.6.6".into(),
                size: 4,
                sha256: "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589".into(),
                url: "http://127.0.0.1:1/evil".into(),
                ..Default::default()
            },
            deployment_id: Some("d-evil".into()),
            spec,
            rollout: None,
            components: Vec::new(),
        }],
        issued_at: 0,
    }
}

fn another_device_cannot_act_for_a_device(mosquitto: bool) {
    let Some((f, m)) = fleet(mosquitto) else {
        return;
    };
    let _ = std::fs::remove_file("/tmp/fleet-pwned-marker");
    let victim = Agent::start("victim", &f.access(), &[]);
    wait_online(&f, &[&victim]);
    upload_sample(&f, "1.0.0");
    upload_sample(&f, "2.0.0");
    let d1 = deploy(&f, "1.0.0", &["victim"]);
    wait_deployment(&f, &d1, "succeeded", &[&victim]);

    // The controller's genuine desired state of generation 1, recorded for a replay later.
    let mut admin = bus_admin(&f, m.as_ref(), "recorder");
    admin.subscribe("fleet/victim/cmd");
    let gen1 = admin
        .wait_for("fleet/victim/cmd", SECS, |p| {
            victim
                .try_open_cmd(&p.payload)
                .is_some_and(|d| d.generation == 1)
        })
        .expect("retained desired state of generation 1");

    // The intruder: a device enrolled with its own key and credentials.
    let mut intruder = SimDevice::enroll(&f.access(), "intruder");
    intruder.publish_status(&support::device_status("intruder", &[]));
    assert!(wait_until(SECS, || get(&f.url("/api/v1/devices/intruder"))
        .0
        == 200));
    let evil = fleet_schema::encode(&evil_state(u64::MAX)).expect("encodes");
    let signed_by_intruder = intruder.seal("fleet/victim/cmd", &evil);
    let mut fake = support::device_status("victim", &[]);
    fake.observed_generation = 1;
    fake.apps = vec![AppStatus {
        name: APP.into(),
        version: "6.6.6".into(),
        phase: AppPhase::Running,
        restart_count: 0,
        last_error: None,
        running_version: Some("6.6.6".into()),
        deployment_id: Some(d1.clone()),
        health: Default::default(),
        health_message: None,
        components: Vec::new(),
    }];
    let fake_status = intruder.seal(
        "fleet/victim/status",
        &fleet_schema::encode(&fake).expect("encodes"),
    );
    let forged_presence = fleet_schema::encode(&ControllerStatus {
        online: true,
        version: "evil".into(),
        http_url: Some("http://127.0.0.1:1".into()),
        at: u64::MAX,
    })
    .expect("encodes");
    let forged_req = fleet_schema::encode(&AgentRequest::LogHistory {
        app: None,
        lines: 1000,
    })
    .expect("encodes");
    for (topic, payload, retain) in [
        ("fleet/victim/cmd", evil.clone(), false),
        ("fleet/victim/cmd", signed_by_intruder, false),
        ("fleet/victim/status", fake_status, true),
        ("fleet/_controller/status", forged_presence, true),
        ("fleet/victim/req", forged_req, false),
        ("fleet/victim/cmd", Vec::new(), true),
    ] {
        intruder.mqtt.publish(topic, payload, retain);
    }
    if m.is_none() {
        // The embedded broker delivered everything: the victim refused it, and says so.
        let refused = wait_until(SECS, || {
            let log = victim.log();
            log.contains("not a signed FleetD message")
                && log.contains(&format!("signed by key {}", intruder.end().key().id()))
        });
        assert!(
            refused,
            "the victim refused the forgeries:\n{}",
            victim.log()
        );
        let view = parse_json(&get(&f.url("/api/v1/devices/victim")).1);
        assert!(
            wait_until(SECS, || parse_json(
                &get(&f.url("/api/v1/devices/victim")).1
            )["refused"]["count"]
                .as_u64()
                .is_some_and(|n| n >= 2)),
            "the refusals show in the victim's status: {view:#}"
        );
        let metrics = f.metrics();
        assert!(
            metrics.contains(r#"topic="status",reason="wrong-signer""#),
            "fleetd refused the forged status: {metrics}"
        );
    } else {
        // Mosquitto's ACL let none of it through: the intruder may write only its own topics.
        let denied = wait_until(SECS, || {
            m.as_ref()
                .is_some_and(|m| m.log().contains("Denied PUBLISH from fleet-agent-intruder"))
        });
        assert!(
            denied,
            "Mosquitto denied the intruder:\n{}",
            m.as_ref().map(Mosquitto::log).unwrap_or_default()
        );
        // Nor read the victim's desired state: subscribed to both, it receives its own (sent
        // after the broker would have handed it the victim's retained one) and nothing else.
        intruder.mqtt.subscribe("fleet/victim/cmd");
        intruder.mqtt.subscribe("fleet/intruder/cmd");
        let (status, body) = support::post_json(
            &f.url("/api/v1/deployments"),
            &serde_json::json!({"application": APP, "version": "1.0.0", "target": {"devices": ["intruder"]}}),
        );
        assert_eq!(status, 201, "{body}");
        let seen = intruder
            .mqtt
            .until("fleet/intruder/cmd", SECS)
            .expect("the intruder's own desired state");
        assert!(
            seen.iter().all(|p| p.topic != "fleet/victim/cmd"),
            "the ACL kept the victim's desired state from the intruder"
        );
    }

    // The API still shows the victim as it is, and the deployment stays what it was.
    let dev = parse_json(&get(&f.url("/api/v1/devices/victim")).1);
    assert_eq!(dev["apps"][0]["version"], "1.0.0", "{dev:#}");
    assert!(!std::path::Path::new("/tmp/fleet-pwned-marker").exists());
    // The retained desired state is the controller's again within the repair interval (a new
    // subscriber gets it from the broker).
    let restored = wait_until(SECS, || {
        let mut check = bus_admin(&f, m.as_ref(), "checker");
        check.subscribe("fleet/victim/cmd");
        check
            .wait_for("fleet/victim/cmd", Duration::from_millis(500), |p| {
                p.retain && victim.try_open_cmd(&p.payload).is_some()
            })
            .is_some()
    });
    assert!(restored, "retained desired state restored");

    // A real deployment still goes through: the victim was not parked at generation 2^64-1.
    let d2 = deploy(&f, "2.0.0", &["victim"]);
    wait_deployment(&f, &d2, "succeeded", &[&victim]);
    assert_eq!(victim.app_pids(APP, "2.0.0").len(), 1);

    // Replaying the genuine generation-1 state, even from the broker's administrator, is
    // refused: the victim keeps 2.0.0.
    admin.publish("fleet/victim/cmd", gen1.payload.to_vec(), false);
    let refused = wait_until(SECS, || {
        victim
            .log()
            .contains("desired state generation 1 is older than the generation 2")
    });
    assert!(refused, "replay refused:\n{}", victim.log());
    assert_eq!(victim.app_pids(APP, "2.0.0").len(), 1, "still on 2.0.0");
    assert!(victim.app_pids(APP, "1.0.0").is_empty());
}

#[test]
fn another_device_cannot_act_for_a_device_on_the_embedded_broker() {
    another_device_cannot_act_for_a_device(false);
}

#[test]
fn another_device_cannot_act_for_a_device_on_mosquitto() {
    another_device_cannot_act_for_a_device(true);
}

fn a_revoked_device_is_disconnected_and_stays_out(mosquitto: bool) {
    let Some((f, m)) = fleet(mosquitto) else {
        return;
    };
    let agent = Agent::start("revokee", &f.access(), &[]);
    wait_online(&f, &[&agent]);
    let (status, body) = post(
        &f.url("/api/v1/devices/revokee/revoke"),
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse_json(&body)["enrollment"]["state"], "revoked");
    let offline = wait_until(SECS, || {
        parse_json(&get(&f.url("/api/v1/devices/revokee")).1)["online"] == false
    });
    assert!(offline, "shown offline");
    // Its next connections are refused (the agent keeps trying, and asks to enroll again: also
    // refused, the key is revoked).
    let out = wait_until(Duration::from_secs(30), || {
        agent.log().contains("enrollment refused") || agent.log().contains("re-enrollment refused")
    });
    assert!(out, "the revoked agent stays out:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(2));
    let dev = parse_json(&get(&f.url("/api/v1/devices/revokee")).1);
    assert_eq!(dev["online"], false, "still out: {dev:#}");
    assert_eq!(dev["enrollment"], "revoked");
    // Its own credentials no longer open the broker.
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.data_dir().join("enrollment.json")).expect("record"),
    )
    .expect("json");
    let port = m.as_ref().map_or(f.mqtt_port, |m| m.port);
    let again = MqttClient::connect_as(
        port,
        "fleet-agent-revokee",
        Some(("revokee", rec["mqtt_password"].as_str().expect("password"))),
    );
    assert!(again.is_err(), "revoked credentials refused");
    // A deployment cannot target it.
    upload_sample(&f, "1.0.0");
    let (status, body) = support::post_json(
        &f.url("/api/v1/deployments"),
        &serde_json::json!({"application": APP, "version": "1.0.0", "target": {"devices": ["revokee"]}}),
    );
    assert!(
        status >= 400,
        "no deployment to a revoked device: {status} {body}"
    );
}

#[test]
fn a_revoked_device_is_disconnected_and_stays_out_on_the_embedded_broker() {
    a_revoked_device_is_disconnected_and_stays_out(false);
}

#[test]
fn a_revoked_device_is_disconnected_and_stays_out_on_mosquitto() {
    a_revoked_device_is_disconnected_and_stays_out(true);
}

fn strangers_cannot_connect(mosquitto: bool) {
    let Some((f, m)) = fleet(mosquitto) else {
        return;
    };
    let port = m.as_ref().map_or(f.mqtt_port, |m| m.port);
    let dev = SimDevice::enroll(&f.access(), "known");
    let password = dev.end_ref().enrolled().mqtt_password.clone();
    assert!(
        MqttClient::connect_as(port, "anyone", None).is_err(),
        "no credentials"
    );
    assert!(
        MqttClient::connect_as(port, "fleet-agent-known", Some(("known", "wrong"))).is_err(),
        "wrong password"
    );
    assert!(
        MqttClient::connect_as(port, "anyone", Some(("_fleetd", "guess"))).is_err(),
        "guessed controller password"
    );
    assert!(
        MqttClient::connect_as(port, "anyone", Some(("ghost", &password))).is_err(),
        "another device's password"
    );
    if m.is_none() {
        // The embedded broker also binds client ids: nobody takes over a device's or the
        // controller's connection.
        assert!(
            MqttClient::connect_as(port, "fleet-agent-victim", Some(("known", &password))).is_err(),
            "a device's credentials on another device's client id"
        );
        let token = support::admin_token();
        for id in ["fleet-agent-known", "fleetd-controller"] {
            assert!(
                MqttClient::connect_as(port, id, Some((&support::admin_username(), token)))
                    .is_err(),
                "a token on the reserved client id {id}"
            );
        }
    }
}

#[test]
fn strangers_cannot_connect_to_the_embedded_broker() {
    strangers_cannot_connect(false);
}

#[test]
fn strangers_cannot_connect_to_mosquitto() {
    strangers_cannot_connect(true);
}
