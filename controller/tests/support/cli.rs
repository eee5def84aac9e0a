//! Artifact steps through the real `fleetctl` for end-to-end tests: pushing sample-app
//! versions, running any fleetctl command, and waiting for the error a device reports.

use super::agent::Agent;
use super::fleet::{app_status, APP};
use super::procs::workspace_bin;
use super::{wait_until, Fleetd};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `fleetctl` against `fleetd`; returns (success, stdout + stderr).
pub fn fleetctl(fleetd: &Fleetd, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", fleetd.url(""))
        .env("FLEET_TOKEN", super::admin_token())
        .args(args)
        .output()
        .expect("run fleetctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until the app's reported `last_error` on `device` contains `needle`.
pub fn wait_error(fleetd: &Fleetd, agent: &Agent, needle: &str) -> String {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = app_status(fleetd, &agent.device_id);
        last["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
    });
    assert!(
        ok,
        "no error containing {needle:?}; app status {last:#}\nagent log:\n{}",
        agent.log()
    );
    last["last_error"].as_str().unwrap_or_default().to_string()
}

/// Writes the sample app for `version` to `dir` and returns its path.
pub fn sample_file(dir: &Path, version: &str) -> String {
    let path = dir.join(format!("app-{version}"));
    std::fs::write(&path, super::fleet::sample_app_bytes(version)).expect("write sample");
    path.to_string_lossy().into_owned()
}

/// Pushes `file` as sample-app `version` with fleetctl (plus `extra` flags), asserting success.
pub fn push(fleetd: &Fleetd, file: &str, version: &str, extra: &[&str]) {
    let mut args = vec![
        "artifact",
        "push",
        file,
        "--name",
        APP,
        "--version",
        version,
        "--platform",
        "linux/amd64",
    ];
    args.extend(extra);
    let (ok, out) = fleetctl(fleetd, &args);
    assert!(ok, "push {version}: {out}");
}
