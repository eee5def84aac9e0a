//! Hostile traffic on the bus against a real fleetd: junk retained messages, oversized
//! statuses, and a poisoned session on an external Mosquitto that does not bound message sizes.

mod support;

use fleet_schema::{DeviceId, Topic};
use std::time::Duration;
use support::agent::Agent;
use support::external::{BrokerRef, Mosquitto, MosquittoAuth};
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online};
use support::*;

const SECS: Duration = Duration::from_secs(20);

/// The value of `fleetd_limit_hits_total{limit="<limit>"}` (0 when absent).
fn limit_hits(f: &Fleetd, limit: &str) -> u64 {
    counter(
        &f.metrics(),
        &format!("fleetd_limit_hits_total{{limit=\"{limit}\"}}"),
    )
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes once on a fresh connection; true when the broker acknowledged it.
fn try_publish(port: u16, id: &str, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
    let mut c = MqttClient::connect(port, id);
    c.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
        .expect("queue publish");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match c.conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => return true,
            Ok(Err(_)) => return false,
            _ => {}
        }
    }
    false
}

/// A status `size` bytes larger than a minimal one (a long agent version).
fn padded_status(id: &str, size: usize) -> fleet_schema::DeviceStatus {
    let mut s = device_status(id, &[]);
    s.agent_version = "x".repeat(size);
    s
}

/// Every topic a fresh subscriber to `#` gets before a marker published after its SUBACK.
fn retained_topics(port: u16) -> Vec<(String, usize)> {
    let mut watcher = MqttClient::connect(port, "fresh-watcher");
    watcher.subscribe_checked("#").expect("subscribed to #");
    let mut marker = MqttClient::connect(port, "marker");
    marker.publish("fleet/marker/logs", b"m".to_vec(), false);
    watcher
        .until("fleet/marker/logs", SECS)
        .expect("the marker arrives")
        .into_iter()
        .map(|p| (p.topic, p.payload.len()))
        .filter(|(t, _)| t != "fleet/marker/logs")
        .collect()
}

/// The attack as reported: retained 1.9 MB messages on junk topics (200 in the report, 20
/// here), and oversized statuses from an enrolled and a made-up device. The embedded broker's
/// front refuses each before rumqttd holds it; fleetd counts them; nothing grows.
#[test]
fn embedded_broker_refuses_junk_retained_and_oversized_statuses() {
    let f = Fleetd::start();
    let port = f.mqtt_port;
    for i in 0..20 {
        let acked = try_publish(
            port,
            &format!("junk-{i}"),
            &format!("junk/{i}"),
            vec![0x4a; 1_900_000],
            true,
        );
        assert!(!acked, "junk/{i} must be refused");
    }
    let mut dev = announce(&f, &device_status("big-1", &[]));
    let topic = Topic::Status(DeviceId::parse("big-1").expect("id")).to_string();
    let body = fleet_schema::encode(&padded_status("big-1", 400 * 1024)).expect("encode");
    let sealed = dev.seal(&topic, &body);
    assert!(!try_publish(port, "big-1-forged", &topic, sealed, true));
    assert!(!try_publish(
        port,
        "ghost",
        "fleet/ghost/status",
        vec![7; 1_000_000],
        true
    ));

    assert!(
        wait_until(SECS, || limit_hits(&f, "mqtt_retained_topic") >= 20
            && limit_hits(&f, "mqtt_status_bytes") >= 2),
        "limit hits counted; metrics:\n{}",
        f.metrics()
    );
    let seen = retained_topics(port);
    assert!(
        seen.iter()
            .all(|(t, len)| t.starts_with("fleet/") && *len < 256 * 1024),
        "only small fleet/ messages are retained: {seen:?}"
    );
    let (status, devices) = get(&f.url("/api/v1/devices"));
    assert_eq!(status, 200);
    assert!(
        devices.len() < 16 * 1024,
        "devices API stays small: {} bytes",
        devices.len()
    );
    assert!(!devices.contains("ghost"), "{devices}");
    assert!(
        f.stderr().contains("limit reached"),
        "the refusals are logged: {}",
        f.stderr()
    );
}

/// On a broker that does not bound sizes, fleetd itself refuses a status above
/// `--mqtt-max-status-bytes` before opening or storing it.
#[test]
fn fleetd_refuses_an_oversized_status_from_an_external_broker() {
    let Some(broker) = Mosquitto::start(MosquittoAuth::FleetFiles) else {
        return;
    };
    let f = Fleetd::start_external(&BrokerRef::of(&broker));
    let mut dev = announce(&f, &device_status("big-2", &[]));
    dev.publish_status(&padded_status("big-2", 400 * 1024));
    assert!(
        wait_until(SECS, || limit_hits(&f, "mqtt_status_bytes") >= 1),
        "oversized status counted; stderr:\n{}",
        f.stderr()
    );
    let (status, devices) = get(&f.url("/api/v1/devices"));
    assert_eq!(status, 200);
    assert!(
        devices.len() < 16 * 1024,
        "devices API stays small: {} bytes",
        devices.len()
    );
    let (_, one) = get(&f.url("/api/v1/devices/big-2"));
    assert!(one.contains("\"test\""), "the earlier status stands: {one}");
}

/// The attack as reported (20,000 idle connections exhausted fleetd's descriptors while
/// rumqttd logged "Too many open files" millions of times), scaled to a hard limit of 4,400
/// open files: fleetd fits its connection cap to the limit, closes the excess at once, keeps
/// serving, and logs a bounded number of lines.
#[test]
fn idle_connections_cannot_exhaust_descriptors() {
    let Some(prlimit) = support::external::require_tool("prlimit", &["/usr/bin/prlimit"]) else {
        return;
    };
    let prlimit = prlimit.to_string_lossy().to_string();
    let f = Fleetd::start_wrapped(&[&prlimit, "--nofile=4400:4400", "--"], &[]);
    assert!(
        f.stderr().contains("admits at most 101 connections"),
        "the cap is fitted to the limit: {}",
        f.stderr()
    );
    let mut idle = Vec::new();
    for _ in 0..5000 {
        match std::net::TcpStream::connect(("127.0.0.1", f.mqtt_port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    // Each connection is closed at once (over the cap) or after the CONNECT timeout, but for
    // at most the 101 admitted ones still waiting.
    assert!(
        wait_until(SECS, || {
            let closed =
                limit_hits(&f, "mqtt_connections") + limit_hits(&f, "mqtt_connect_timeout");
            closed >= 5000 - 101
        }),
        "excess connections closed and counted; metrics:\n{}",
        f.metrics()
    );
    assert!(limit_hits(&f, "mqtt_connections") > 0);
    assert_eq!(
        get(&f.url("/api/v1/health")).0,
        200,
        "the API still answers"
    );
    drop(idle);
    // Once the idle sockets are gone, devices get in again.
    let mut dev = announce(&f, &device_status("after-flood", &[]));
    dev.publish_status(&device_status("after-flood", &[]));
    let log_len = f.stderr().len();
    assert!(
        log_len < 64 * 1024,
        "bounded logging: {log_len} bytes of stderr"
    );
}

/// Times the agent's log says it connected.
fn agent_connects(a: &Agent) -> usize {
    a.log().matches("connected to broker").count()
}

/// The attack as reported: with Mosquitto and no size limit, one 3 MiB retained message on a
/// device's `cmd` topic. fleetd and the agent must not loop on it: fleetd replaces it, the agent
/// recovers, a deployment completes, and deleting the message changes nothing.
#[test]
fn a_poisoned_cmd_topic_on_mosquitto_heals_without_a_reconnect_loop() {
    let Some(broker) = Mosquitto::start(MosquittoAuth::FleetFiles) else {
        return;
    };
    let f = Fleetd::start_external(&BrokerRef::of(&broker));
    let agent = Agent::start("poisoned-1", &f.access(), &[]);
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");
    let d1 = deploy(&f, "1.0.0", &["poisoned-1"]);
    wait_deployment(&f, &d1, "succeeded", &[&agent]);
    let fleetd_before = counter(&f.metrics(), "fleetd_mqtt_connects_total");
    let agent_before = agent_connects(&agent);

    // The broker's administrator (the only one the ACL lets write `cmd`) poisons the topic.
    let cmd = "fleet/poisoned-1/cmd";
    let mut admin = MqttClient::connect_as(
        broker.port,
        "poisoner",
        Some(("_fleetd", &broker.controller_password())),
    )
    .expect("admin connects");
    admin.publish(cmd, vec![0x33; 3 * 1024 * 1024], true);

    // fleetd recovers and replaces the retained copy with the real desired state.
    let mut watcher = MqttClient::connect_as(
        broker.port,
        "cmd-watcher",
        Some(("_fleetd", &broker.controller_password())),
    )
    .expect("watcher connects");
    watcher.subscribe(cmd);
    let repaired = watcher.wait_for(cmd, SECS, |p| agent.try_open_cmd(&p.payload).is_some());
    assert!(
        repaired.is_some(),
        "retained cmd repaired; stderr:\n{}",
        f.stderr()
    );

    // Deleting the message is repaired too, and the device still converges.
    admin.publish(cmd, Vec::new(), true);
    upload_sample(&f, "2.0.0");
    let d2 = deploy(&f, "2.0.0", &["poisoned-1"]);
    wait_deployment(&f, &d2, "succeeded", &[&agent]);

    let fleetd_reconnects = counter(&f.metrics(), "fleetd_mqtt_connects_total") - fleetd_before;
    let agent_reconnects = agent_connects(&agent) - agent_before;
    eprintln!("after the poisoning: fleetd reconnected {fleetd_reconnects} times, the agent {agent_reconnects} times");
    assert!(
        fleetd_reconnects <= 4,
        "fleetd reconnected {fleetd_reconnects} times; stderr:\n{}",
        f.stderr()
    );
    assert!(
        agent_reconnects <= 6,
        "the agent reconnected {agent_reconnects} times; log:\n{}",
        agent.log()
    );
    assert!(
        limit_hits(&f, "mqtt_incoming_packet_bytes") >= 1,
        "fleetd counts the oversized packet; metrics:\n{}",
        f.metrics()
    );
}
