//! `oci-image` artifacts end to end with a real container engine: a busybox-static image built
//! here (`import` of a root filesystem, `save` to a tarball, no registry), uploaded as the
//! artifact, deployed by a real fleetd to a real agent that loads and runs it with Docker or
//! Podman (whichever answers `info`), with the manifest's environment, port, limits and HTTP
//! health check. Covers: removal (rollback of a first install) leaves no container or image,
//! install, upgrade, rollback from the kept image without a download, and refusal of a device
//! without the `oci` capability. Skips loudly without an engine or busybox-static; fails
//! instead under FLEET_REQUIRE_EXTERNAL=1.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{wait_deployment, wait_online};
use support::oci::{self, fleetctl, sh};
use support::{get, post_json, wait_until, Fleetd};

/// The app (and container label), unique per test process so parallel runs sharing one engine
/// cannot touch each other's containers.
static APP: LazyLock<String> = LazyLock::new(|| format!("oci-web-{}", std::process::id()));

/// Builds the image for `version` (busybox httpd serving "<version>" on $PORT after printing
/// $GREETING) and saves it as a tarball in `dir`.
fn build_image(engine: &str, busybox: &Path, dir: &Path, tag: &str, version: &str) -> PathBuf {
    let start = format!(
        "#!/bin/sh\necho \"$GREETING from {version}\"\nexec /bin/httpd -f -p \"$PORT\" -h /www\n"
    );
    oci::build_image(engine, busybox, dir, tag, version, &start)
}

fn deploy(fleetd: &Fleetd, version: &str, device: &str) -> (u16, serde_json::Value) {
    post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": *APP, "version": version, "target": {"devices": [device]}}),
    )
}

/// Ids of the containers the agent runs for the app.
fn containers(engine: &str) -> Vec<String> {
    let out = sh(
        engine,
        &["ps", "-q", "--filter", &format!("label=fleet.app={}", *APP)],
    );
    out.split_whitespace().map(str::to_string).collect()
}

/// Waits until the app answers on `port` with `body`.
fn wait_served(port: u16, body: &str, agent: &Agent) {
    let url = format!("http://127.0.0.1:{port}/");
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        last = get(&url).1;
        last.contains(body)
    });
    assert!(
        ok,
        "port {port} never served {body:?} (last: {last:?})\nagent log:\n{}\napp log:\n{}",
        agent.log(),
        agent.app_log(&APP)
    );
}

#[test]
fn oci_images_load_run_upgrade_roll_back_and_leave_nothing_behind() {
    let Some((engine, busybox)) = oci::engine_and_busybox() else {
        return;
    };
    let tag = format!("fleet-oci-e2e-{}", std::process::id());
    let _cleanup = oci::Cleanup {
        engine,
        app: APP.clone(),
        tag: tag.clone(),
        versions: &["1.0.0", "2.0.0"],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-oci", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    let (_, body) = get(&fleetd.url("/api/v1/devices/dev-oci"));
    let dev = support::parse_json(&body);
    let caps = dev["inventory"]["capabilities"].to_string();
    assert!(caps.contains("\"oci\"") && caps.contains(engine), "{caps}");

    for v in ["1.0.0", "2.0.0"] {
        let tarball = build_image(engine, &busybox, dir.path(), &tag, v);
        fleetctl(
            &fleetd,
            &[
                "artifact",
                "push",
                &tarball.to_string_lossy(),
                "--name",
                &APP,
                "--version",
                v,
                "--type",
                "oci-image",
            ],
        );
        let manifest = json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": *APP, "version": v},
            "spec": {
                "artifacts": [{"name": *APP, "version": v, "type": "oci-image"}],
                "configuration": {"env": {"GREETING": "hello", "PORT": port}},
                "runtime": {"type": engine, "ports": [port], "stop_grace": "3s"},
                "healthcheck": {"http": {"path": "/", "port": port, "interval": "1s",
                    "timeout": "1s", "retries": 2}},
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}
            }
        });
        support::fleet::register_app(&fleetd, &manifest);
    }

    // A device without a container engine is refused, naming it and the capability.
    support::announce(&fleetd, &support::device_status("dev-no-oci", &[]));
    let (status, body) = deploy(&fleetd, "1.0.0", "dev-no-oci");
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("dev-no-oci") && err.contains("capability \"oci\""),
        "{err}"
    );

    // First install, then its rollback removes the app: no container, no image left.
    let (status, body) = deploy(&fleetd, "1.0.0", "dev-oci");
    assert_eq!(status, 201, "{body}");
    let d0 = body["id"].as_str().expect("id").to_string();
    wait_deployment(&fleetd, &d0, "succeeded", &[&agent]);
    wait_served(port, "served by 1.0.0", &agent);
    let image_v1 = std::fs::read_to_string(
        agent
            .data_dir()
            .join(format!("apps/{}/1.0.0/oci-image", *APP)),
    )
    .expect("image record");
    let image_v1 = image_v1.lines().nth(1).expect("image id").to_string();
    let name = format!("fleet-{}-1.0.0", *APP);
    let limits = sh(
        engine,
        &[
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &name,
        ],
    );
    assert_eq!(limits, "67108864 500000000", "memory and cpu limits");
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .app_log(&APP)
            .contains("hello from 1.0.0")),
        "environment reached the container: {}",
        agent.app_log(&APP)
    );
    let (status, body) = post_json(
        &fleetd.url(&format!("/api/v1/deployments/{d0}/rollback")),
        &json!({}),
    );
    assert!(status == 200 || status == 202, "rollback: {status} {body}");
    let gone = wait_until(Duration::from_secs(30), || {
        containers(engine).is_empty()
            && !Command::new(engine)
                .args(["image", "inspect", &image_v1])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    });
    assert!(
        gone,
        "container and image removed with the app; containers {:?}\nagent log:\n{}",
        containers(engine),
        agent.log()
    );

    // Install, upgrade: v1's container is stopped once v2 serves.
    for v in ["1.0.0", "2.0.0"] {
        let (status, body) = deploy(&fleetd, v, "dev-oci");
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_string();
        wait_deployment(&fleetd, &id, "succeeded", &[&agent]);
        wait_served(port, &format!("served by {v}"), &agent);
    }
    assert!(
        wait_until(Duration::from_secs(15), || containers(engine).len() == 1),
        "only v2 runs: {:?}",
        containers(engine)
    );

    // Rollback from the kept image: the stored v1 blob is spoiled, so a download would fail.
    std::fs::write(
        fleetd
            .data_dir()
            .join(format!("artifacts/{}/1.0.0/blob", *APP)),
        b"gone",
    )
    .expect("overwrite the stored blob");
    let (status, body) = deploy(&fleetd, "1.0.0", "dev-oci");
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_deployment(&fleetd, &id, "succeeded", &[&agent]);
    wait_served(port, "served by 1.0.0", &agent);
    let ids = containers(engine);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let running = sh(engine, &["inspect", "--format", "{{.Name}}", &ids[0]]);
    assert_eq!(running.trim_start_matches('/'), name);
}
