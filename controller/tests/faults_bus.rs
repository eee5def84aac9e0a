//! Fault suite, the bus: the broker (an external Mosquitto) SIGKILLed and started again on the
//! same port in the middle of a rollout, and the link between an agent and the broker cut for
//! longer than the MQTT keep-alive while the device's app keeps logging. Nothing is lost: the
//! rollout completes, and every log line of the outage reaches fleetd's log store after the
//! link is back, while the agent's disk backlog and memory stay within their limits. Each
//! recovery time is printed (`FAULT-RECOVERY ...`) for docs/faults.md.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::external::{BrokerRef, Mosquitto, MosquittoAuth};
use support::fleet::{deployment, upload_sample, wait_deployment, wait_online, APP};
use support::link::Link;
use support::recovery::Recovery;
use support::{dir_usage, get, parse_json, upload, wait_until, Fleetd};

/// The agent's MQTT keep-alive (agent/src/bus.rs `KEEP_ALIVE`): the cut lasts longer.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn health(fleetd: &Fleetd) -> serde_json::Value {
    parse_json(&get(&fleetd.url("/api/v1/health")).1)
}

#[test]
fn the_broker_killed_and_restarted_during_a_rollout_loses_nothing() {
    let Some(mut mosquitto) = Mosquitto::start(MosquittoAuth::FleetFiles) else {
        return;
    };
    let fleetd = Fleetd::start_external_with(
        &BrokerRef::of(&mosquitto),
        &[("FLEETD_ROLLOUT_TICK_MS", "200")],
    );
    let agents = support::fleet::fleet_on_v1(&fleetd, "bk", 3, "bk", &[]);
    let refs: Vec<&Agent> = agents.iter().collect();
    upload_sample(&fleetd, "2.0.0");
    let (status, body) = support::post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP, "version": "2.0.0",
            "strategy": {"type": "canary", "initial_percentage": 34, "increment_percentage": 33,
                         "increment_interval": "2s", "min_healthy_time": "1s",
                         "progress_deadline": "120s"},
            "target": {"selector": {"ring": "bk"}},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    // Mid-rollout: the first step done, the next ones to come (each lasts at least its 2 s
    // interval, so the poll cannot miss the window).
    let mid = wait_until(Duration::from_secs(60), || {
        deployment(&fleetd, &id)["rollout"]["current_step"]
            .as_u64()
            .is_some_and(|s| s >= 1)
    });
    let view = deployment(&fleetd, &id);
    assert!(mid && view["state"] == "in-progress", "{view:#}");

    mosquitto.kill9();
    assert!(
        wait_until(Duration::from_secs(20), || health(&fleetd)
            ["mqtt_connected"]
            == false),
        "fleetd noticed the broker is gone"
    );
    mosquitto.start_again();
    let clock = Recovery::start("broker SIGKILL and restart during a rollout");
    assert!(
        wait_until(Duration::from_secs(30), || health(&fleetd)
            ["mqtt_connected"]
            == true),
        "fleetd reconnected; stderr:\n{}",
        fleetd.stderr()
    );
    let view = wait_deployment(&fleetd, &id, "succeeded", &refs);
    clock.done("deployment succeeded");
    for a in &agents {
        assert_eq!(
            view["devices"][&a.device_id]["state"], "succeeded",
            "{view:#}"
        );
        assert!(
            wait_until(Duration::from_secs(15), || {
                a.app_pids(APP, "2.0.0").len() == 1 && a.app_pids(APP, "1.0.0").is_empty()
            }),
            "{} runs exactly 2.0.0",
            a.device_id
        );
    }
    wait_online(&fleetd, &refs);
}

/// Numbers of the `tick N` lines of the ticker app in fleetd's log store.
fn stored_ticks(fleetd: &Fleetd, device: &str) -> Vec<u64> {
    let (status, body) = get(&fleetd.url(&format!(
        "/api/v1/devices/{device}/logs?app=ticker&limit=10000"
    )));
    assert_eq!(status, 200, "{body}");
    let mut ticks: Vec<u64> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| {
            let batch = parse_json(l);
            batch["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| {
                    e["message"]
                        .as_str()?
                        .strip_prefix("tick ")?
                        .trim()
                        .parse()
                        .ok()
                })
        })
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    ticks
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_link_cut_longer_than_the_keep_alive_loses_no_log_line_and_stays_bounded() {
    const SPOOL_MESSAGES: usize = 500;
    const SPOOL_BYTES: u64 = 2 << 20;
    let fleetd = Fleetd::start();
    let link = Link::to(fleetd.mqtt_port);
    let mut access = fleetd.access();
    access.mqtt_url = format!("mqtt://127.0.0.1:{}", link.port);
    let (messages, bytes) = (SPOOL_MESSAGES.to_string(), SPOOL_BYTES.to_string());
    let agent = Agent::start_with_args(
        "cut-1",
        &access,
        &[],
        &[
            "--metrics-interval-ms",
            "500",
            "--spool-max-messages",
            &messages,
            "--spool-max-bytes",
            &bytes,
        ],
    );
    wait_online(&fleetd, &[&agent]);
    let ticker = b"#!/bin/sh\ni=0\nwhile true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done\n";
    let (status, body) = upload(&fleetd, "ticker", "1.0.0", ticker);
    assert_eq!(status, 201, "{body}");
    let (status, body) = support::post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": "ticker", "version": "1.0.0",
                "strategy": {"type": "all-at-once"}, "target": {"devices": ["cut-1"]}}),
    );
    assert_eq!(status, 201, "{body}");
    let d = body["id"].as_str().expect("id").to_string();
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    assert!(
        wait_until(Duration::from_secs(20), || stored_ticks(&fleetd, "cut-1")
            .len()
            >= 5),
        "ticks reach fleetd before the cut"
    );

    link.cut();
    let cut_at = Instant::now();
    let last_before = stored_ticks(&fleetd, "cut-1").last().copied().unwrap_or(0);
    let spool = agent.data_dir().join("spool");
    let (mut most_files, mut most_bytes, mut most_rss) = (0, 0, 0);
    let offline = wait_until(Duration::from_secs(30), || {
        parse_json(&get(&fleetd.url("/api/v1/devices/cut-1")).1)["online"] == false
    });
    assert!(offline, "fleetd saw the device go offline");
    while cut_at.elapsed() < KEEP_ALIVE + Duration::from_secs(3) {
        let (files, bytes) = dir_usage(&spool);
        most_files = most_files.max(files);
        most_bytes = most_bytes.max(bytes);
        most_rss = most_rss.max(rss_kib(agent.pid().expect("agent runs")));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "during the cut: backlog at most {most_files} messages, {most_bytes} bytes; agent RSS at most {most_rss} KiB"
    );
    assert!(
        most_files >= 10,
        "metrics and logs were spooled: {most_files} files"
    );
    assert!(
        most_files <= SPOOL_MESSAGES && most_bytes <= SPOOL_BYTES,
        "the backlog stays within its limits: {most_files} messages, {most_bytes} bytes"
    );
    assert!(
        most_rss < 64 * 1024,
        "agent memory stays bounded: {most_rss} KiB"
    );
    assert!(link.refused() > 0, "the agent kept trying to reconnect");
    link.restore();
    let clock = Recovery::start("link cut between agent and broker, longer than the keep-alive");
    let mut ticks = Vec::new();
    let whole = wait_until(Duration::from_secs(60), || {
        ticks = stored_ticks(&fleetd, "cut-1");
        let (Some(&lo), Some(&hi)) = (ticks.first(), ticks.last()) else {
            return false;
        };
        let after = ticks.iter().filter(|t| **t > last_before).count() as u64;
        // Ten lines a second during the cut: at least the cut's lines, none missing.
        after >= 150 && hi - lo + 1 == ticks.len() as u64
    });
    assert!(
        whole,
        "every line of the outage reached fleetd: {} lines, {:?}..{:?}\n{}",
        ticks.len(),
        ticks.first(),
        ticks.last(),
        agent.log()
    );
    clock.done("every log line of the outage stored by fleetd");
    assert!(
        wait_until(Duration::from_secs(30), || dir_usage(&spool).0 == 0),
        "the backlog drained"
    );
}
