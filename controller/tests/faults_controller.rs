//! Fault suite, the controller: fleetd SIGKILLed at each phase of an upload (bytes streaming in,
//! the staged file being scanned) and of a staged rollout (a device of the first step still
//! downloading, a healthy step waiting for its interval, a paused rollout, the last step). After
//! each restart nothing is lost: no orphan file in the store, the artifact list as before, the
//! deployment still there at the same step, and the rollout completes. Each recovery time is
//! printed (`FAULT-RECOVERY ...`) for docs/faults.md.

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{deployment, sample_app_bytes, upload_sample, wait_deployment, APP};
use support::gate::Gate;
use support::recovery::Recovery;
use support::{admin_token, get, multipart, parse_json, post, upload, wait_until, Fleetd};

/// The store's staging directory, where an upload lives until it is committed.
fn staging(fleetd: &Fleetd) -> PathBuf {
    fleetd.data_dir().join("artifacts").join(".tmp")
}

/// What the API lists: artifact names, and the versions of the sample app.
fn listing(fleetd: &Fleetd) -> (String, String) {
    let names = get(&fleetd.url("/api/v1/artifacts"));
    let versions = get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/versions")));
    (names.1, versions.1)
}

/// Sends the head of an upload of `APP@version` (metadata first, then the first `sent` bytes of
/// the body with a file of `total` bytes; all of it when `sent` is larger) and leaves the
/// connection open, as a slow client mid-upload.
fn start_slow_upload(fleetd: &Fleetd, version: &str, sent: usize, total: usize) -> TcpStream {
    let meta =
        json!({"name": APP, "version": version, "platform": "linux/amd64", "type": "binary"});
    let file = vec![0x5a_u8; total];
    let (ct, body) = multipart(&[
        ("metadata", None, meta.to_string().as_bytes()),
        ("file", Some(APP), &file),
    ]);
    let addr = fleetd.http.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).expect("connect to fleetd");
    let head = format!(
        "POST /api/v1/artifacts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        admin_token(),
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("send head");
    conn.write_all(&body[..sent.min(body.len())])
        .expect("send the first bytes");
    conn
}

/// After a restart: nothing staged is left, the API lists what it did before, and the same
/// upload now succeeds.
fn assert_upload_left_nothing(fleetd: &Fleetd, before: &(String, String), version: &str) {
    let left: Vec<_> = std::fs::read_dir(staging(fleetd))
        .expect("staging directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "orphan staged uploads: {left:?}");
    let version_dir = fleetd.data_dir().join("artifacts").join(APP).join(version);
    assert!(
        !version_dir.exists(),
        "an interrupted upload left {}",
        version_dir.display()
    );
    assert_eq!(&listing(fleetd), before, "the artifact list is unchanged");
    let (status, body) = upload(fleetd, APP, version, &sample_app_bytes(version));
    assert_eq!(status, 201, "the same upload again succeeds: {body}");
}

#[test]
fn fleetd_killed_mid_upload_leaves_no_orphan_and_loses_no_artifact() {
    let mut fleetd = Fleetd::start();
    upload_sample(&fleetd, "1.0.0");
    let before = listing(&fleetd);

    // Phase 1: bytes streaming in (1 MiB of 8 sent; fleetd has written some to staging).
    let conn = start_slow_upload(&fleetd, "2.0.0", 1 << 20, 8 << 20);
    assert!(
        wait_until(Duration::from_secs(20), || support::dir_usage(&staging(
            &fleetd
        ))
        .1 > 0),
        "fleetd staged the first bytes; stderr:\n{}",
        fleetd.stderr()
    );
    fleetd.kill9();
    drop(conn);
    fleetd.restart();
    let clock = Recovery::start("fleetd SIGKILL while an upload streams in");
    assert_upload_left_nothing(&fleetd, &before, "2.0.0");
    clock.done("the same upload succeeded");
}

#[test]
fn fleetd_killed_while_an_upload_is_scanned_leaves_no_orphan() {
    let tools = tempfile::tempdir().expect("tempdir");
    let hold = tools.path().join("hold");
    let scanning = tools.path().join("scanning");
    let script = tools.path().join("scan.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch {}\nwhile [ -e {} ]; do sleep 0.05; done\nexit 0\n",
            scanning.display(),
            hold.display()
        ),
    )
    .expect("scan script");
    std::fs::write(&hold, b"").expect("hold file");
    let command = format!("sh {}", script.display());
    let mut fleetd = Fleetd::start_with_args(&["--scan-command", &command]);
    std::fs::remove_file(&hold).expect("release the first scan");
    upload_sample(&fleetd, "1.0.0");
    let before = listing(&fleetd);

    // Phase 2: the whole file is staged and the scan runs; the commit has not happened.
    std::fs::write(&hold, b"").expect("hold the scan");
    std::fs::remove_file(&scanning).expect("reset the marker");
    let conn = start_slow_upload(&fleetd, "2.0.0", usize::MAX, 1 << 20);
    assert!(
        wait_until(Duration::from_secs(20), || scanning.exists()),
        "the scan started; stderr:\n{}",
        fleetd.stderr()
    );
    assert!(
        support::dir_usage(&staging(&fleetd)).1 >= 1 << 20,
        "the whole file is staged"
    );
    fleetd.kill9();
    drop(conn);
    std::fs::remove_file(&hold).expect("release the orphaned scanner");
    fleetd.restart();
    let clock = Recovery::start("fleetd SIGKILL while an upload is scanned");
    assert_upload_left_nothing(&fleetd, &before, "2.0.0");
    clock.done("the same upload succeeded");
}

/// A canary of `version` over ring r1 with an hour between steps (steps move by `promote`).
fn slow_canary(fleetd: &Fleetd, version: &str) -> String {
    let (status, body) = support::post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": version,
            "strategy": {"type": "canary", "initial_percentage": 20, "increment_percentage": 40,
                         "increment_interval": "1h", "min_healthy_time": "1s",
                         "progress_deadline": "10m"},
            "target": {"selector": {"ring": "r1"}},
        }),
    );
    assert_eq!(status, 201, "create canary: {body}");
    body["id"].as_str().expect("id").to_string()
}

fn action(fleetd: &Fleetd, id: &str, what: &str) {
    let (status, body) = post(
        &fleetd.url(&format!("/api/v1/deployments/{id}/{what}")),
        "application/json",
        b"{}",
    );
    assert_eq!(status, 200, "{what}: {body}");
}

/// SIGKILLs fleetd, starts it again, and checks the rollout is where it was: same phase, same
/// current step, same step membership.
fn kill_and_check_same_step(fleetd: &mut Fleetd, id: &str, fault: &'static str) -> Recovery {
    let before = deployment(fleetd, id);
    fleetd.kill9();
    fleetd.restart();
    let clock = Recovery::start(fault);
    let after = deployment(fleetd, id);
    for field in ["phase", "current_step", "steps"] {
        let strip = |v: &Value| {
            let mut v = v["rollout"][field].clone();
            if let Some(steps) = v.as_array_mut() {
                for s in steps {
                    // Counts of healthy devices are recomputed from the statuses after a restart.
                    if let Some(o) = s.as_object_mut() {
                        o.retain(|k, _| k == "devices");
                    }
                }
            }
            v
        };
        assert_eq!(strip(&after), strip(&before), "rollout.{field}: {after:#}");
    }
    let (_, list) = get(&fleetd.url("/api/v1/deployments"));
    assert!(list.contains(id), "deployment {id} is listed: {list}");
    clock
}

fn step_healthy(fleetd: &Fleetd, id: &str, step: usize) -> bool {
    let v = deployment(fleetd, id);
    v["rollout"]["current_step"] == step && v["rollout"]["steps"][step]["healthy"] == 1
}

#[test]
fn fleetd_killed_at_each_phase_of_a_rollout_resumes_the_same_step() {
    let gate = Gate::shut();
    let public = format!("http://127.0.0.1:{}", gate.port);
    let mut fleetd = Fleetd::start_with(
        &[("FLEETD_ROLLOUT_TICK_MS", "200")],
        &["--public-url", &public],
    );
    gate.open_to(fleetd.http_port().expect("fleetd's HTTP port"));
    let agents = support::fleet::fleet_on_v1(&fleetd, "rk", 3, "r1", &[]);
    let refs: Vec<&Agent> = agents.iter().collect();
    upload_sample(&fleetd, "2.0.0");

    // Phase 1: the first step's device cannot download yet (the artifact server is down).
    gate.shut_again();
    let id = slow_canary(&fleetd, "2.0.0");
    let first = wait_until(Duration::from_secs(30), || {
        let v = deployment(&fleetd, &id);
        let Some(dev) = v["rollout"]["steps"][0]["devices"][0]
            .as_str()
            .map(str::to_string)
        else {
            return false;
        };
        support::fleet::app_status(&fleetd, &dev)["phase"] == "downloading"
    });
    assert!(
        first,
        "step 1 is downloading: {:#}",
        deployment(&fleetd, &id)
    );
    let clock = kill_and_check_same_step(
        &mut fleetd,
        &id,
        "fleetd SIGKILL during rollout step 1 (device downloading)",
    );
    gate.open_to(fleetd.http_port().expect("same HTTP port"));
    assert!(
        wait_until(Duration::from_secs(60), || step_healthy(&fleetd, &id, 0)),
        "{:#}",
        deployment(&fleetd, &id)
    );
    clock.done("step 1 healthy");

    // Phase 2: step 1 healthy, waiting out the interval before step 2.
    let clock = kill_and_check_same_step(
        &mut fleetd,
        &id,
        "fleetd SIGKILL while a rollout waits between steps",
    );
    assert!(wait_until(Duration::from_secs(30), || step_healthy(
        &fleetd, &id, 0
    )));
    action(&fleetd, &id, "promote");
    assert!(
        wait_until(Duration::from_secs(30), || step_healthy(&fleetd, &id, 1)),
        "{:#}",
        deployment(&fleetd, &id)
    );
    clock.done("promoted, step 2 healthy");

    // Phase 3: paused by the operator.
    action(&fleetd, &id, "pause");
    let clock =
        kill_and_check_same_step(&mut fleetd, &id, "fleetd SIGKILL while a rollout is paused");
    assert_eq!(deployment(&fleetd, &id)["rollout"]["phase"], "paused");
    action(&fleetd, &id, "resume");
    action(&fleetd, &id, "promote");
    assert!(wait_until(Duration::from_secs(30), || {
        deployment(&fleetd, &id)["rollout"]["current_step"] == 2
    }));
    clock.done("resumed and promoted to step 3");

    // Phase 4: the last step, while it completes.
    let clock = kill_and_check_same_step(
        &mut fleetd,
        &id,
        "fleetd SIGKILL during a rollout's last step",
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
    let (_, list) = get(&fleetd.url("/api/v1/deployments"));
    let list = parse_json(&list);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "both deployments kept: {list:#}"
    );
}
