//! `fleetctl` against a real fleetd and a real agent: the commands operators and CI scripts
//! use, in their `--output json` form.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::fleet::{sample_app_bytes, wait_online, APP};
use support::procs::workspace_bin;
use support::{parse_json, Fleetd};

fn fleetctl(fleetd: &Fleetd, args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", &fleetd.http)
        .env("FLEET_TOKEN", support::admin_token())
        .args(args)
        .output()
        .expect("run fleetctl")
}

#[test]
fn fleetctl_pushes_deploys_lists_and_watches_status() {
    let fleetd = Fleetd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("app");
    std::fs::write(&file, sample_app_bytes("1.0.0")).expect("write artifact");

    // Live status stream, started before the device exists.
    let mut watch = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_TOKEN", support::admin_token())
        .env("FLEET_SERVER", &fleetd.http)
        .args(["--output", "json", "status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run fleetctl status --watch");
    let stdout = watch.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let agent = Agent::start("ctl-1", &fleetd.access(), &[("site", "ctl")]);
    wait_online(&fleetd, &[&agent]);

    let push = fleetctl(
        &fleetd,
        &[
            "--output",
            "json",
            "artifact",
            "push",
            &file.to_string_lossy(),
            "--name",
            APP,
            "--version",
            "1.0.0",
            "--type",
            "binary",
        ],
    );
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let meta = parse_json(&String::from_utf8_lossy(&push.stdout));
    assert_eq!(meta["id"], format!("{APP}@1.0.0"), "{meta:#}");

    let deploy = fleetctl(
        &fleetd,
        &[
            "deploy",
            "--app",
            APP,
            "--version",
            "1.0.0",
            "--selector",
            "site=ctl",
            "--wait",
        ],
    );
    assert!(
        deploy.status.success(),
        "deploy --wait: {}\n{}",
        String::from_utf8_lossy(&deploy.stdout),
        String::from_utf8_lossy(&deploy.stderr)
    );

    let devices = fleetctl(&fleetd, &["--output", "json", "devices"]);
    assert!(devices.status.success());
    let list = parse_json(&String::from_utf8_lossy(&devices.stdout));
    let dev = list
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == "ctl-1"))
        .cloned()
        .unwrap_or_else(|| panic!("ctl-1 listed: {list:#}"));
    assert_eq!(dev["apps"][0]["version"], "1.0.0", "{dev:#}");

    // The watcher printed the device's changes as they happened, ending with v1 running.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut running = false;
    while Instant::now() < deadline && !running {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            running = line.contains("ctl-1") && line.contains("1.0.0") && line.contains("running");
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        running,
        "status --watch showed ctl-1 running 1.0.0; saw:\n{}",
        seen.join("\n")
    );

    // Errors are the server's message and a non-zero exit.
    let bad = fleetctl(
        &fleetd,
        &[
            "deploy",
            "--app",
            APP,
            "--version",
            "9.9.9",
            "--devices",
            "ctl-1",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("9.9.9"),
        "error names the version: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
