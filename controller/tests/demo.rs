//! The README's main job, `fleetd demo`, run for real: controller, three agents, v1 then v2,
//! and nothing left running afterwards.

mod support;

use std::process::Command;
use support::procs::{processes_under, workspace_bin};

#[test]
fn demo_deploys_v1_then_v2_to_three_agents_and_leaves_nothing_behind() {
    // The demo finds its sibling binaries next to fleetd.
    for bin in ["fleet-agent", "fleetctl", "fleet-sample-app"] {
        workspace_bin(bin);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let demo_dir = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["demo", "--exit-when-done"])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(&demo_dir)
        .output()
        .expect("run fleetd demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Each device's own app log (in the demo directory, not the demo's summary) shows the
    // upgrade: v1 started there first, and the last start is v2.
    let agents: Vec<_> = std::fs::read_dir(demo_dir.join("agents"))
        .expect("the demo's agent directories")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(agents.len(), 3, "three demo devices: {agents:?}");
    for agent in &agents {
        let logs = agent.join("data/logs");
        let text = ["out", "err"]
            .map(|s| std::fs::read_to_string(logs.join(format!("sample-app.{s}.log"))))
            .map(Result::unwrap_or_default)
            .concat();
        let starts: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("listening on"))
            .collect();
        assert!(
            starts.iter().any(|l| l.contains("1.0.0")),
            "{} ran v1 first:\n{text}",
            agent.display()
        );
        assert!(
            starts.last().is_some_and(|l| l.contains("2.0.0")),
            "{} runs v2 last:\n{text}",
            agent.display()
        );
    }
    assert_eq!(
        stdout
            .matches("fleet-sample-app 2.0.0 listening on")
            .count(),
        3,
        "every device runs v2:\n{stdout}"
    );
    let apps = processes_under(&demo_dir);
    assert!(apps.is_empty(), "app processes left behind: {apps:?}");
    // fleetd and the agents run from target/, but name the demo directory on their command line.
    let needle = demo_dir.to_string_lossy().to_string();
    let others: Vec<String> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && !c.contains("demo --exit-when-done"))
        .collect();
    assert!(others.is_empty(), "processes left behind: {others:?}");
}
