//! An application of several artifacts end to end, in the seed's manifest shape (a `binary`
//! and an `oci-image`): a real fleetd deploys both to a real agent, which runs the binary as a
//! process and the image with Docker or Podman (whichever answers `info`), each supervised
//! and health-checked, and reports each component in the device status. An upgrade whose
//! image crashes never counts the device healthy although its binary runs and is healthy, and
//! its rollback returns both components to the old version together. Skips loudly without an
//! engine or busybox-static; fails instead under FLEET_REQUIRE_EXTERNAL=1.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{deployment, sample_app_bytes, wait_deployment, wait_online};
use support::oci::{self, fleetctl};
use support::{get, post_json, upload, wait_until, Fleetd};

/// The application (unique per test process: container labels carry it, and parallel runs
/// share one engine).
static APP: LazyLock<String> = LazyLock::new(|| format!("edge-inference-{}", std::process::id()));
const ENGINE_ART: &str = "inference-engine";
const MODEL_ART: &str = "model-server";

/// The unit the agent runs a component as (its container label and log file name).
fn unit(component: &str) -> String {
    format!("{}__{component}", *APP)
}

/// Ids of the model server's containers (running ones, or all with `all`).
fn containers(engine: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q"];
    if all {
        args.push("-a");
    }
    let filter = format!("label=fleet.app={}", unit(MODEL_ART));
    args.extend(["--filter", &filter]);
    let out = Command::new(engine)
        .args(&args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace().map(str::to_string).collect()
}

/// The model server's image for `version`, saved as a tarball: busybox httpd serving
/// "served by <version>" on $MODEL_PORT, or (`broken`) a start that exits at once.
fn build_image(engine: &str, busybox: &Path, dir: &Path, tag: &str, version: &str) -> PathBuf {
    let start = if version == "2.0.0" {
        "#!/bin/sh\necho \"model $FLEET_COMPONENT cannot load its model\" >&2\nexit 3\n".to_string()
    } else {
        "#!/bin/sh\necho \"$FLEET_APP_NAME/$FLEET_COMPONENT $FLEET_APP_VERSION\"\nexec /bin/httpd -f -p \"$MODEL_PORT\" -h /www\n".to_string()
    };
    oci::build_image(engine, busybox, dir, tag, version, &start)
}

/// The seed's manifest shape: the binary first (it takes the app's runtime and health check),
/// the image second with its own port and health check.
fn manifest(version: &str, engine: &str, engine_port: u16, model_port: u16) -> Value {
    let probe = |port: u16, path: &str| json!({"http": {"path": path, "port": port, "interval": "1s", "timeout": "1s", "retries": 2}});
    json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": *APP, "version": version},
        "spec": {
            "artifacts": [
                {"name": ENGINE_ART, "version": version, "type": "binary"},
                {"name": MODEL_ART, "version": version, "type": "oci-image",
                 "runtime": {"type": engine, "ports": [model_port], "stop_grace": "3s"},
                 "healthcheck": probe(model_port, "/")}
            ],
            "configuration": {"env": {"PORT": engine_port, "MODEL_PORT": model_port}},
            "runtime": {"type": "raw", "restart": "always", "stop_grace": "3s"},
            "healthcheck": probe(engine_port, "/health"),
            "resources": {"limits": {"memory": "64Mi"}}
        }
    })
}

/// The app as the API reports it on the device.
fn app_status(fleetd: &Fleetd, device: &str) -> Value {
    let (status, body) = get(&fleetd.url(&format!("/api/v1/devices/{device}")));
    assert_eq!(status, 200, "{body}");
    let dev = support::parse_json(&body);
    dev["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == json!(*APP)).cloned())
        .unwrap_or(Value::Null)
}

/// True when the app runs `version` with both components running and healthy.
fn all_running(app: &Value, version: &str) -> bool {
    let parts = app["components"].as_array().cloned().unwrap_or_default();
    app["version"] == json!(version)
        && app["phase"] == json!("running")
        && app["health"] == json!("healthy")
        && parts.len() == 2
        && parts
            .iter()
            .all(|c| c["phase"] == json!("running") && c["health"] == json!("healthy"))
}

/// What an app answers to `GET path` on a loopback port; empty when nothing answers.
fn served(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_binary_and_an_image_run_as_one_app_and_roll_back_together() {
    let Some((engine, busybox)) = oci::engine_and_busybox() else {
        return;
    };
    let tag = format!("fleet-components-e2e-{}", std::process::id());
    let _cleanup = oci::Cleanup {
        engine,
        app: unit(MODEL_ART),
        tag: tag.clone(),
        versions: &["1.0.0", "2.0.0"],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Each version's binary listens on its own port (an upgrade in place starts the new one
    // before the old one stops); the image's port is the same (the engine stops the old
    // container before starting the new one).
    let (engine_v1, engine_v2, model_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let ports = |v: &str| if v == "1.0.0" { engine_v1 } else { engine_v2 };
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-multi", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    let log = || format!("agent log:\n{}\nfleetd:\n{}", agent.log(), fleetd.stderr());

    for v in ["1.0.0", "2.0.0"] {
        let (status, body) = upload(&fleetd, ENGINE_ART, v, &sample_app_bytes(v));
        assert_eq!(status, 201, "upload {ENGINE_ART}@{v}: {body}");
        let tarball = build_image(engine, &busybox, dir.path(), &tag, v);
        let path = tarball.to_string_lossy();
        let args = ["--name", MODEL_ART, "--version", v, "--type", "oci-image"];
        fleetctl(&fleetd, &[&["artifact", "push", &path][..], &args].concat());
        support::fleet::register_app(&fleetd, &manifest(v, engine, ports(v), model_port));
    }

    // Version 1: both components run, each supervised and health-checked, reported apart.
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": *APP, "version": "1.0.0", "target": {"devices": ["dev-multi"]}}),
    );
    assert_eq!(status, 201, "{body}");
    let d1 = body["id"].as_str().expect("id").to_string();
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    let mut app = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        app = app_status(&fleetd, "dev-multi");
        all_running(&app, "1.0.0")
    });
    assert!(
        ok,
        "both components run and are healthy: {app:#}\n{}",
        log()
    );
    let names: Vec<&str> = app["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, [ENGINE_ART, MODEL_ART]);
    assert!(
        served(engine_v1, "/").contains("1.0.0"),
        "engine serves 1.0.0"
    );
    assert!(
        served(model_port, "/").contains("served by 1.0.0"),
        "{}",
        log()
    );
    assert_eq!(containers(engine, false).len(), 1, "one model container");
    let greeting = format!("{}/{MODEL_ART} 1.0.0", *APP);
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .app_log(&unit(MODEL_ART))
            .contains(&greeting)),
        "the container knows its app and component: {}",
        agent.app_log(&unit(MODEL_ART))
    );
    let (ok, table) = fleetctl_status(&fleetd);
    assert!(ok, "{table}");
    assert!(
        table.contains(&format!("{ENGINE_ART} running [healthy]"))
            && table.contains(&format!("{MODEL_ART} running [healthy]")),
        "fleetctl shows each component: {table}"
    );

    // Version 2: the binary comes up healthy but the image crashes. The device never counts
    // healthy, the rollout rolls back, and both components return to 1.0.0.
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": *APP, "version": "2.0.0",
                "strategy": {"type": "rolling", "auto_rollback": true},
                "target": {"devices": ["dev-multi"]}}),
    );
    assert_eq!(status, 201, "{body}");
    let d2 = body["id"].as_str().expect("id").to_string();
    let mut engine_v2_seen = false;
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(90), || {
        if served(engine_v2, "/").contains("2.0.0") {
            engine_v2_seen = true;
        }
        last = deployment(&fleetd, &d2);
        assert_ne!(last["state"], json!("succeeded"), "{last:#}\n{}", log());
        last["state"] == json!("rolled-back")
    });
    assert!(ok, "the upgrade rolled back: {last:#}\n{}", log());
    // The image's crash loop is the app's: the step never counted the device healthy.
    assert_eq!(
        last["rollout"]["trigger"]["kind"],
        json!("crash-loop"),
        "{last:#}"
    );
    assert_eq!(last["rollout"]["steps"][0]["healthy"], json!(0), "{last:#}");
    assert!(
        engine_v2_seen,
        "the binary of 2.0.0 ran while the image crashed\n{}",
        log()
    );
    let ok = wait_until(Duration::from_secs(60), || {
        app = app_status(&fleetd, "dev-multi");
        all_running(&app, "1.0.0")
    });
    assert!(ok, "both components back at 1.0.0: {app:#}\n{}", log());
    assert!(served(engine_v1, "/").contains("1.0.0"), "{}", log());
    assert!(
        wait_until(Duration::from_secs(15), || served(engine_v2, "/")
            .is_empty()),
        "the binary of 2.0.0 stopped"
    );
    assert!(
        served(model_port, "/").contains("served by 1.0.0"),
        "{}",
        log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || containers(engine, false).len()
            == 1),
        "only the 1.0.0 model container runs: {:?}",
        containers(engine, false)
    );
    let err = agent.app_log(&unit(MODEL_ART));
    assert!(err.contains("cannot load its model"), "{err}");
}

/// `fleetctl devices` (the human table).
fn fleetctl_status(fleetd: &Fleetd) -> (bool, String) {
    support::cli::fleetctl(fleetd, &["devices"])
}
