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

    let list = json_of(&fleetctl(&fleetd, &["--output", "json", "device", "list"]));
    let dev = list
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == "ctl-1"))
        .cloned()
        .unwrap_or_else(|| panic!("ctl-1 listed: {list:#}"));
    assert_eq!(dev["apps"][0]["version"], "1.0.0", "{dev:#}");
    let shown = json_of(&fleetctl(
        &fleetd,
        &["--output", "json", "device", "show", "ctl-1"],
    ));
    assert_eq!(shown["id"], "ctl-1", "{shown:#}");
    assert_eq!(shown["apps"][0]["version"], "1.0.0", "{shown:#}");
    let text = text_of(&fleetctl(&fleetd, &["device", "show", "ctl-1"]));
    assert!(
        text.contains("id          ctl-1") && text.contains("sample-app@1.0.0 running"),
        "{text}"
    );

    // Deployments: list and show, and the old spellings scripts may still use.
    let list = json_of(&fleetctl(&fleetd, &["--output", "json", "deploy", "list"]));
    let id = list[0]["id"]
        .as_str()
        .expect("a deployment listed")
        .to_string();
    assert_eq!(list[0]["state"], "succeeded", "{list:#}");
    let shown = json_of(&fleetctl(
        &fleetd,
        &["--output", "json", "deploy", "show", &id],
    ));
    assert_eq!(shown["state"], "succeeded", "{shown:#}");
    assert_eq!(shown["devices"]["ctl-1"]["state"], "succeeded", "{shown:#}");
    let text = text_of(&fleetctl(&fleetd, &["deploy", "show", &id]));
    for line in [
        "state       succeeded",
        "step 1/1  succeeded",
        "ctl-1   succeeded",
    ] {
        assert!(text.contains(line), "deploy show prints {line:?}:\n{text}");
    }
    for old in [["deploy", "status"], ["deployment", "show"]] {
        let again = json_of(&fleetctl(
            &fleetd,
            &["--output", "json", old[0], old[1], &id],
        ));
        assert_eq!(
            (&again["id"], &again["state"]),
            (&shown["id"], &shown["state"])
        );
    }
    let old_list = json_of(&fleetctl(
        &fleetd,
        &["--output", "json", "deployment", "list"],
    ));
    assert_eq!(old_list[0]["id"], list[0]["id"], "{old_list:#}");

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

fn text_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "fleetctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "fleetctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn fleetctl_manages_tokens_enrollment_devices_broker_files_and_logs() {
    let fleetd = Fleetd::start();
    // Tokens: create (shown once), who am I, list (no secret), revoke.
    let created = json_of(&fleetctl(
        &fleetd,
        &[
            "--output",
            "json",
            "token",
            "create",
            "--name",
            "ci-web",
            "--scope",
            "deploy",
            "--app",
            "web",
            "--expires",
            "30d",
        ],
    ));
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["info"]["id"].as_str().expect("id").to_string();
    let me = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", &fleetd.http)
        .env("FLEET_TOKEN", &token)
        .args(["--output", "json", "whoami"])
        .output()
        .expect("run fleetctl");
    let me = json_of(&me);
    assert_eq!(
        (me["id"].as_str(), me["scope"].as_str()),
        (Some(id.as_str()), Some("deploy"))
    );
    assert_eq!(me["apps"], serde_json::json!(["web"]));
    // The CI token may not push another application: refused before any upload.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("app");
    std::fs::write(&file, sample_app_bytes("1.0.0")).expect("write artifact");
    let refused = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", &fleetd.http)
        .env("FLEET_TOKEN", &token)
        .args(["artifact", "push"])
        .arg(&file)
        .args(["--name", "db", "--version", "1.0.0"])
        .output()
        .expect("run fleetctl");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("limited to web"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let list = fleetctl(&fleetd, &["token", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("ci-web") && !text.contains(token.rsplit('_').next().expect("secret")),
        "{text}"
    );
    assert!(fleetctl(&fleetd, &["token", "revoke", &id])
        .status
        .success());
    let after = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", &fleetd.http)
        .env("FLEET_TOKEN", &token)
        .arg("devices")
        .output()
        .expect("run fleetctl");
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("revoked"));

    // Enrollment: an agent without a token waits; the operator sees it and accepts it.
    let enroll = json_of(&fleetctl(
        &fleetd,
        &[
            "--output", "json", "enroll", "create", "--name", "batch", "--label", "site=ctl",
            "--uses", "1",
        ],
    ));
    assert!(
        enroll["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("enroll_")),
        "{enroll:#}"
    );
    let waiting = Agent::start(
        "ctl-pending",
        &support::Access {
            enroll_token: String::new(),
            ..fleetd.access()
        },
        &[],
    );
    let listed = support::wait_until(Duration::from_secs(15), || {
        let out = fleetctl(
            &fleetd,
            &["--output", "json", "device", "list", "--pending"],
        );
        String::from_utf8_lossy(&out.stdout).contains("ctl-pending")
    });
    assert!(
        listed,
        "pending request listed; agent log:\n{}",
        waiting.log()
    );
    assert!(fleetctl(&fleetd, &["device", "accept", "ctl-pending"])
        .status
        .success());
    wait_online(&fleetd, &[&waiting]);
    // `devices` is the old spelling of `device list`: both print the same table.
    for list in [&["device", "list"][..], &["devices"][..]] {
        let text = text_of(&fleetctl(&fleetd, list));
        assert!(
            text.contains("ENROLLMENT") && text.contains("accepted"),
            "{list:?}: {text}"
        );
    }

    // Logs through fleetd: the agent's own answer to fleetd's signed request.
    upload_sample_with_fleetctl(&fleetd, &file);
    let deploy = fleetctl(
        &fleetd,
        &[
            "deploy",
            "--app",
            APP,
            "--version",
            "1.0.0",
            "--devices",
            "ctl-pending",
            "--wait",
        ],
    );
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    let logs = support::wait_until(Duration::from_secs(20), || {
        let out = fleetctl(&fleetd, &["logs", "ctl-pending", "--app", APP]);
        String::from_utf8_lossy(&out.stdout).contains("listening on")
    });
    assert!(logs, "fleetctl logs shows the app's output");

    // Revoke: the device is out.
    assert!(fleetctl(&fleetd, &["device", "revoke", "ctl-pending"])
        .status
        .success());
    let out = fleetctl(&fleetd, &["--output", "json", "device", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));

    // Broker files for Mosquitto.
    let out_dir = tempfile::tempdir().expect("temp dir");
    let files = fleetctl(
        &fleetd,
        &[
            "broker",
            "config",
            "mosquitto",
            "--dir",
            "/etc/mosquitto/fleet",
            "--out",
            &out_dir.path().to_string_lossy(),
        ],
    );
    assert!(
        files.status.success(),
        "{}",
        String::from_utf8_lossy(&files.stderr)
    );
    let acl = std::fs::read_to_string(out_dir.path().join("fleet.acl")).expect("acl");
    assert!(acl.contains("pattern write fleet/%u/status"), "{acl}");
    let conf = std::fs::read_to_string(out_dir.path().join("mosquitto-fleet.conf")).expect("conf");
    assert!(
        conf.contains("password_file /etc/mosquitto/fleet/fleet.passwd"),
        "{conf}"
    );
}

fn upload_sample_with_fleetctl(fleetd: &Fleetd, file: &std::path::Path) {
    let push = fleetctl(
        fleetd,
        &[
            "artifact",
            "push",
            &file.to_string_lossy(),
            "--name",
            APP,
            "--version",
            "1.0.0",
        ],
    );
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
}
