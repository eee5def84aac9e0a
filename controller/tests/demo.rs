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
    assert!(
        stdout.contains("all 3 devices run sample-app 2.0.0"),
        "demo reached v2:\n{stdout}"
    );
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
