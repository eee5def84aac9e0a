//! Issue 10, blue-green forwarder: 10,500 connections to an agent's service port exhausted its
//! file descriptors and made a concurrent deployment fail. Here a real agent (limit 16
//! connections per forwarder) serves the real sample app's port through its forwarder; the test
//! holds 16 connections open, opens 200 more, which must each be closed at once, then deploys
//! v2 blue-green while the 16 are still held: the deployment (download, install, start, health
//! probes, switch) must succeed, the agent must say the limit was hit, and the port must answer
//! v2 afterwards.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{upload_sample, wait_deployment, wait_online, APP};
use support::{free_port, post, post_json, wait_until, Fleetd};

const MAX: usize = 16;

fn register(fleetd: &Fleetd, version: &str, port: u16) {
    let manifest = json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": APP, "version": version},
        "spec": {
            "artifacts": [{"name": APP, "version": version, "type": "binary"}],
            "runtime": {"ports": [port], "startup_timeout": "20s"},
            "healthcheck": {"http": {"path": "/health", "port": port, "interval": "200ms",
                                     "timeout": "200ms", "retries": 1}}
        }
    });
    let (status, body) = post(
        &fleetd.url("/api/v1/applications"),
        "application/json",
        manifest.to_string().as_bytes(),
    );
    assert!(status == 201 || status == 200, "register {version}: {body}");
}

fn blue_green(fleetd: &Fleetd, version: &str, device: &str) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP, "version": version,
            "strategy": {"type": "blue-green", "validation_period": "1s", "switch_delay": "1s",
                         "progress_deadline": "60s"},
            "target": {"devices": [device]},
        }),
    );
    assert_eq!(status, 201, "create blue-green: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// The version the app on `port` says it is, if it answers.
fn served_version(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["version"].as_str().map(str::to_string)
}

#[test]
fn a_connection_flood_is_bounded_and_a_deployment_still_succeeds() {
    let fleetd = Fleetd::start_with_env(&[("FLEETD_ROLLOUT_TICK_MS", "200")]);
    let max = MAX.to_string();
    let agent = Agent::start_with_args(
        "fwd-1",
        &fleetd.access(),
        &[],
        &["--forward-max-connections", &max],
    );
    wait_online(&fleetd, &[&agent]);
    let port = free_port();
    for v in ["1.0.0", "2.0.0"] {
        upload_sample(&fleetd, v);
        register(&fleetd, v, port);
    }
    let d1 = blue_green(&fleetd, "1.0.0", "fwd-1");
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    let v1_up = wait_until(Duration::from_secs(20), || {
        served_version(port).as_deref() == Some("1.0.0")
    });
    assert!(v1_up, "v1 serves the port:\n{}", agent.log());

    // Fill every slot with a connection that stays open (the app waits for a request).
    let held: Vec<TcpStream> = (0..MAX)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("held connection"))
        .collect();
    // Every further connection is closed by the agent at once: its read ends (EOF or reset)
    // instead of waiting for an answer that never comes.
    let mut closed = 0;
    for i in 0..200 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            closed += 1;
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) if buf.is_empty() => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => panic!(
                "connection {i} beyond the limit was not closed: {other:?}\n{}",
                agent.log()
            ),
        }
    }
    assert_eq!(closed, 200);
    let said = wait_until(Duration::from_secs(10), || {
        agent.log().contains("limit reached") && agent.log().contains("forward_connections")
    });
    assert!(said, "the agent logs the limit:\n{}", agent.log());

    // The agent keeps working while the slots are still taken: a blue-green deployment
    // (download, install, start, health probes on the instance's own port, switch) succeeds.
    let d2 = blue_green(&fleetd, "2.0.0", "fwd-1");
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    drop(held);
    let v2_up = wait_until(Duration::from_secs(20), || {
        served_version(port).as_deref() == Some("2.0.0")
    });
    assert!(v2_up, "v2 serves the port afterwards:\n{}", agent.log());
    let lines = agent
        .log()
        .lines()
        .filter(|l| l.contains("forward_connections"))
        .count();
    assert!(
        lines <= 2,
        "the limit is logged at a bounded rate, not per connection ({lines} lines)"
    );
}
