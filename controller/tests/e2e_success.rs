//! One definition of "succeeded", end to end: a real fleetd, real agents and the real
//! `fleetctl deploy --wait`. The state the API shows, the rollout's phase and fleetctl's
//! verdict all come from the rollout, so a deployment that meets its success criteria succeeds
//! everywhere, even with a device that failed below the threshold or was skipped offline.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::cli::{fleetctl, push, sample_file};
use support::fleet::{deployment, wait_online, APP};
use support::procs::workspace_bin;
use support::{get, parse_json, wait_until, Fleetd};

const TICK: [(&str, &str); 1] = [("FLEETD_ROLLOUT_TICK_MS", "200")];

/// Runs `fleetctl deploy ... --wait` for sample-app 1.0.0 to `devices` with strategy `params`;
/// returns its exit code, its output and the deployment id it printed.
fn deploy_and_wait(
    fleetd: &Fleetd,
    devices: &str,
    params: &[&str],
) -> (Option<i32>, String, String) {
    let mut args = vec![
        "deploy",
        "--app",
        APP,
        "--version",
        "1.0.0",
        "--devices",
        devices,
        "--strategy",
        "all-at-once",
        "--wait",
        "--timeout",
        "60",
    ];
    for p in params {
        args.extend(["--param", p]);
    }
    let out = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", fleetd.url(""))
        .env("FLEET_TOKEN", support::admin_token())
        .args(&args)
        .output()
        .expect("run fleetctl deploy --wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = text
        .split_whitespace()
        .skip_while(|w| *w != "deployment")
        .nth(1)
        .unwrap_or_else(|| panic!("fleetctl printed the deployment id: {text}"))
        .to_string();
    (out.status.code(), text, id)
}

/// Asserts the deployment ended succeeded in the API (state and phase) and in fleetctl's
/// listing, returning the view.
fn assert_succeeded(fleetd: &Fleetd, id: &str) -> Value {
    let view = deployment(fleetd, id);
    assert_eq!(view["state"], "succeeded", "{view:#}");
    assert_eq!(view["rollout"]["phase"], "succeeded", "{view:#}");
    assert_eq!(
        view["rollout"]["steps"][0]["state"], "succeeded",
        "{view:#}"
    );
    let (ok, shown) = fleetctl(fleetd, &["--output", "json", "deploy", "show", id]);
    assert!(ok, "{shown}");
    assert_eq!(parse_json(&shown)["state"], "succeeded", "{shown}");
    view
}

#[test]
fn a_deployment_that_meets_its_success_percentage_succeeds_everywhere() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("ci");
    let (ok, out) = fleetctl(&fleetd, &["keygen", "--out", &key.to_string_lossy()]);
    assert!(ok, "{out}");
    let trusted = format!("{}.pub", key.display());
    let good = Agent::start("half-good", &fleetd.access(), &[]);
    // This agent accepts signed artifacts only: it refuses the unsigned one pushed below.
    let strict = Agent::start_with_args(
        "half-strict",
        &fleetd.access(),
        &[],
        &["--trusted-key", &trusted, "--require-signatures"],
    );
    wait_online(&fleetd, &[&good, &strict]);
    push(&fleetd, &sample_file(dir.path(), "1.0.0"), "1.0.0", &[]);

    let (code, out, id) = deploy_and_wait(
        &fleetd,
        "half-good,half-strict",
        &["success_percentage=50", "min_healthy_time=1s"],
    );
    let view = deployment(&fleetd, &id);
    assert_eq!(
        code,
        Some(0),
        "deploy --wait exits 0: {out}\n{view:#}\n--- strict agent ---\n{}",
        strict.log()
    );
    assert!(
        out.contains(&format!("deployment {id} succeeded: 1 succeeded, 1 failed")),
        "{out}"
    );
    assert!(!out.contains("ended"), "{out}");
    let view = assert_succeeded(&fleetd, &id);
    assert_eq!(
        view["devices"]["half-good"]["state"], "succeeded",
        "{view:#}"
    );
    assert_eq!(
        view["devices"]["half-strict"]["state"], "failed",
        "{view:#}"
    );
    let reason = view["devices"]["half-strict"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("unsigned"),
        "the refusal is shown: {view:#}"
    );
}

#[test]
fn a_device_skipped_offline_lets_the_deployment_end_succeeded() {
    let fleetd = Fleetd::start_with_env(&TICK);
    let dir = tempfile::tempdir().expect("tempdir");
    let online = Agent::start("skip-online", &fleetd.access(), &[]);
    let mut away = Agent::start("skip-away", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&online, &away]);
    away.stop();
    let url = fleetd.url("/api/v1/devices/skip-away");
    let offline = wait_until(Duration::from_secs(20), || {
        let (status, body) = get(&url);
        status == 200 && parse_json(&body)["online"] == Value::Bool(false)
    });
    assert!(offline, "fleetd saw skip-away go offline");
    push(&fleetd, &sample_file(dir.path(), "1.0.0"), "1.0.0", &[]);

    let (code, out, id) = deploy_and_wait(
        &fleetd,
        "skip-online,skip-away",
        &[
            "offline_policy=skip",
            "offline_timeout=1s",
            "min_healthy_time=1s",
        ],
    );
    let view = deployment(&fleetd, &id);
    assert_eq!(code, Some(0), "deploy --wait exits 0: {out}\n{view:#}");
    assert!(
        out.contains(&format!("deployment {id} succeeded: 1 succeeded, 0 failed")),
        "{out}"
    );
    let view = assert_succeeded(&fleetd, &id);
    assert_eq!(
        view["devices"]["skip-online"]["state"], "succeeded",
        "{view:#}"
    );
    assert_eq!(view["devices"]["skip-away"]["state"], "pending", "{view:#}");
}
