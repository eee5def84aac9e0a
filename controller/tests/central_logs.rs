//! The central log store end to end: a real agent's app output is kept by fleetd and
//! `fleetctl logs` still shows it after the device went offline; `-f` follows new lines; a
//! device flooding its log topic stays within its size limit on disk while another device's
//! lines stay readable.

mod support;

use fleet_schema::{LogBatch, LogEntry, LogLevel};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::agent::Agent;
use support::cli::fleetctl;
use support::device::SimDevice;
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::procs::workspace_bin;
use support::{get, parse_json, wait_until, Fleetd};

/// The per-device limit the test runs fleetd with.
const MAX_BYTES: u64 = 64 * 1024;

/// Publishes one sealed live log batch of `lines` lines (`tag` in each message) as `dev`.
fn publish_lines(dev: &mut SimDevice, tag: &str, lines: usize) {
    let batch = LogBatch {
        device_id: dev.id.clone(),
        entries: (0..lines)
            .map(|i| LogEntry {
                timestamp: support::procs::now_ms(),
                app: "noisy".into(),
                stream: "stdout".into(),
                level: LogLevel::Info,
                message: format!("{tag} {i} {}", "x".repeat(100)),
            })
            .collect(),
        dropped: 0,
        history: false,
    };
    let topic = format!("fleet/{}/logs", dev.id);
    let sealed = dev.seal(&topic, &fleet_schema::encode(&batch).expect("encodes"));
    dev.mqtt.publish(&topic, sealed, false);
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn logs_outlive_the_device_follow_live_and_a_flood_stays_bounded() {
    let max = MAX_BYTES.to_string();
    let fleetd = Fleetd::start_with_args(&["--log-max-bytes", &max]);
    let mut agent = Agent::start("logs-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    let d = deploy(&fleetd, "1.0.0", &["logs-1"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    let stored = wait_until(Duration::from_secs(30), || {
        fleetctl(&fleetd, &["logs", "logs-1", "--app", APP])
            .1
            .contains("listening on")
    });
    assert!(stored, "the app's start line reached the store");
    let (ok, out) = fleetctl(&fleetd, &["logs", "logs-1", "--app", APP, "--from-device"]);
    assert!(
        ok && out.contains("listening on"),
        "the agent's own ring, via fleetd: {out}"
    );

    // Offline: the agent is gone, its lines are not.
    agent.stop();
    let offline = wait_until(Duration::from_secs(20), || {
        let (_, body) = get(&fleetd.url("/api/v1/devices/logs-1"));
        parse_json(&body)["online"] == serde_json::json!(false)
    });
    assert!(offline, "logs-1 went offline");
    let (ok, out) = fleetctl(&fleetd, &["logs", "logs-1", "--app", APP, "--since", "1h"]);
    assert!(ok && out.contains("listening on"), "{out}");
    let (ok, out) = fleetctl(
        &fleetd,
        &["--output", "json", "logs", "logs-1", "--limit", "1"],
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1, "--limit 1: {out}");
    let future = (support::procs::now_ms() + 3_600_000).to_string();
    let (ok, out) = fleetctl(&fleetd, &["logs", "logs-1", "--since", &future]);
    assert!(ok && out.trim().is_empty(), "nothing after --since: {out}");
    let (ok, out) = fleetctl(&fleetd, &["logs", "logs-1", "--since", "yesterday"]);
    assert!(
        !ok && out.contains("since"),
        "a bad --since is named: {out}"
    );

    // Follow: a line published after the follower started shows up in it.
    let mut sim = SimDevice::enroll(&fleetd.access(), "logs-sim");
    let mut follower = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", fleetd.url(""))
        .env("FLEET_TOKEN", support::admin_token())
        .args(["logs", "logs-sim", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fleetctl logs -f");
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = false;
    for _ in 0..20 {
        publish_lines(&mut sim, "live-tail", 1);
        if rx
            .recv_timeout(Duration::from_millis(500))
            .is_ok_and(|l| l.contains("live-tail"))
        {
            seen = true;
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "fleetctl logs -f printed the new line");

    // Flood: far more than the limit; the store keeps the newest within it.
    for i in 0..150 {
        publish_lines(&mut sim, &format!("flood-{i}"), 40);
    }
    let newest = wait_until(Duration::from_secs(30), || {
        fleetctl(&fleetd, &["logs", "logs-sim", "--limit", "1"])
            .1
            .contains("flood-149 39")
    });
    assert!(newest, "the newest flood line is stored");
    let on_disk = dir_bytes(&fleetd.data_dir().join("logs").join("logs-sim"));
    assert!(
        on_disk <= MAX_BYTES + 16 * 1024 && on_disk > MAX_BYTES / 2,
        "the flooder holds {on_disk} bytes on disk (limit {MAX_BYTES})"
    );
    let (ok, out) = fleetctl(&fleetd, &["logs", "logs-1", "--app", APP]);
    assert!(
        ok && out.contains("listening on"),
        "the other device is untouched: {out}"
    );
}
