//! `oci-image` artifacts by registry reference, end to end without the internet: an in-test
//! registry ([`support::registry`]) serves two busybox-static images; `fleetctl artifact push
//! --image` registers v1 pinned by digest and v2 by tag with `--image-digest`; a real fleetd and
//! a real agent deploy them, and the agent pulls each through Docker or Podman from that
//! registry (its request log proves it), runs it with the manifest's environment, port and a
//! configuration file bind-mounted read-only and the app-counters endpoint reachable, with
//! signatures over the reference required, upgrades to v2, rolls back to v1 from the kept
//! image (no request reaches the registry), and removal leaves no container or image. Bad
//! references are refused with errors naming the problem. Skips loudly without an engine or
//! busybox-static; fails instead under FLEET_REQUIRE_EXTERNAL=1.

mod support;

use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{wait_deployment, wait_online};
use support::oci::{busybox_static, engine, fleetctl, rootfs, sh, skip_or_fail};
use support::procs::workspace_bin;
use support::registry::Registry;
use support::{get, post, post_json, wait_until, Fleetd};

/// App name, repository and container label, unique per test process.
static APP: LazyLock<String> = LazyLock::new(|| format!("oci-pull-{}", std::process::id()));

/// Where the configuration file is mounted inside the container.
const CONF: &str = "/etc/fleet-e2e/app.conf";

/// Removes the agent's containers and the pulled images, even when the test fails.
struct Cleanup {
    engine: &'static str,
    repo: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers(self.engine, true) {
            let _ = Command::new(self.engine).args(["rm", "-f", &id]).output();
        }
        let images = Command::new(self.engine)
            .args(["images", "-q", &self.repo])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in images.split_whitespace() {
            let _ = Command::new(self.engine).args(["rmi", "-f", id]).output();
        }
    }
}

/// Ids of the app's containers (running only, unless `all`).
fn containers(engine: &str, all: bool) -> Vec<String> {
    let filter = format!("label=fleet.app={}", *APP);
    let mut args = vec!["ps", "-q", "--filter", &filter];
    if all {
        args.push("-a");
    }
    sh(engine, &args)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn deploy(fleetd: &Fleetd, version: &str, agent: &Agent) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": *APP, "version": version, "target": {"devices": ["dev-pull"]}}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_deployment(fleetd, &id, "succeeded", &[agent]);
    id
}

fn rollback(fleetd: &Fleetd, id: &str) {
    let (status, body) = post_json(
        &fleetd.url(&format!("/api/v1/deployments/{id}/rollback")),
        &json!({}),
    );
    assert!(status == 200 || status == 202, "rollback: {status} {body}");
}

/// Waits until the app answers on `port` with `body` and its log shows `log_line`.
fn wait_serving(port: u16, body: &str, log_line: &str, agent: &Agent) {
    let url = format!("http://127.0.0.1:{port}/");
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        // The port refuses or drops connections while versions switch.
        last = ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        last.contains(body) && agent.app_log(&APP).contains(log_line)
    });
    assert!(
        ok,
        "never served {body:?} with {log_line:?} in the log (last: {last:?})\nagent log:\n{}\napp log:\n{}",
        agent.log(),
        agent.app_log(&APP)
    );
}

/// Manifest requests the registry saw for `reference` (a tag or digest).
fn manifest_fetches(registry: &Registry, reference: &str) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| r.ends_with(&format!("/manifests/{reference}")))
        .count()
}

/// `fleetctl` output and success, for commands expected to fail.
fn fleetctl_status(fleetd: &Fleetd, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", fleetd.url(""))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fleetctl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn registry_references_pull_run_upgrade_roll_back_and_leave_nothing_behind() {
    let Some(engine) = engine() else {
        return skip_or_fail("no usable container engine (docker info / podman info failed; apt-get install docker.io and start dockerd)");
    };
    let Some(busybox) = busybox_static() else {
        return skip_or_fail("busybox-static is not installed (apt-get install busybox-static)");
    };
    let registry = Registry::start();
    let repo = format!("{}/fleet-e2e/{}", registry.host(), *APP);
    let _cleanup = Cleanup {
        engine,
        repo: repo.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let mut digests = Vec::new();
    for v in ["1.0.0", "2.0.0"] {
        let start = format!(
            "#!/bin/sh\necho \"$GREETING from {v}\"\necho \"conf: $(cat {CONF})\"\n\
             wget -q -O /dev/null --post-data '{{\"requests\": 7}}' \"$FLEET_METRICS_URL\" \
             && echo 'metrics: posted' || echo \"metrics: failed ($FLEET_METRICS_URL)\"\n\
             exec /bin/httpd -f -p \"$PORT\" -h /www\n"
        );
        let root = rootfs(&busybox, dir.path(), v, &start);
        let name = repo.split_once('/').expect("host/path").1;
        digests.push(registry.push_rootfs(name, v, &root, &["/start"]));
    }
    let fleetd = Fleetd::start();
    // Signatures cover the reference document, so the agent may require them.
    let key = dir.path().join("ci");
    fleetctl(&fleetd, &["keygen", "--out", &key.to_string_lossy()]);
    let (private, public) = (key.with_extension("key"), key.with_extension("pub"));
    // A wildcard counters endpoint, so bridged containers reach it through the host alias.
    let agent = Agent::start_with_args(
        "dev-pull",
        &fleetd.access(),
        &[],
        &[
            "--metrics-listen",
            "0.0.0.0:0",
            "--trusted-key",
            &public.to_string_lossy(),
            "--require-signatures",
        ],
    );
    wait_online(&fleetd, &[&agent]);
    let (_, body) = get(&fleetd.url("/api/v1/devices/dev-pull"));
    let caps = support::parse_json(&body)["inventory"]["capabilities"].to_string();
    assert!(caps.contains("\"oci-pull\""), "{caps}");

    // Bad references are refused before anything is stored, naming the problem.
    let base = ["artifact", "push", "--name", &APP, "--version", "9.0.0"];
    for (image, digest, needle) in [
        ("", None, "empty"),
        ("127.0.0.1:5000/a b:1", None, "whitespace"),
        ("127.0.0.1:5000/a@sha256:123", None, "sha256:123"),
        ("127.0.0.1:5000/a:1", Some("md5:00"), "md5:00"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--type", "oci-image", "--image", image]);
        if let Some(d) = digest {
            args.extend(["--image-digest", d]);
        }
        let (ok, out) = fleetctl_status(&fleetd, &args);
        assert!(!ok && out.contains(needle), "{image:?}: {out}");
    }
    let upload_metadata = |meta: serde_json::Value| {
        let text = meta.to_string();
        let (ct, body) = support::multipart(&[("metadata", None, text.as_bytes())]);
        post(&fleetd.url("/api/v1/artifacts"), &ct, &body)
    };
    let (status, body) = upload_metadata(
        json!({"name": *APP, "version": "9.0.0", "type": "binary", "image": format!("{repo}:1")}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("oci-image only"), "{body}");

    // v1 pinned by digest (metadata only, as with curl), v2 by tag with the digest recorded at
    // push (fleetctl, which sends the reference document it would sign).
    let v1_ref = format!("{repo}@{}", digests[0]);
    let v2_ref = format!("{repo}:2.0.0");
    let (status, body) = upload_metadata(
        json!({"name": *APP, "version": "1.0.0", "type": "oci-image", "image": v1_ref}),
    );
    assert_eq!(status, 201, "{body}");
    let meta = support::parse_json(&body);
    assert_eq!(meta["image_digest"], json!(digests[0]), "{body}");
    assert!(
        meta["requirements"]["capabilities"]
            .to_string()
            .contains("oci-pull"),
        "{body}"
    );
    fleetctl(
        &fleetd,
        &[
            &base[..2],
            &[
                "--name",
                &APP,
                "--version",
                "2.0.0",
                "--type",
                "oci-image",
                "--image",
                &v2_ref,
                "--image-digest",
                &digests[1],
                "--sign",
                &private.to_string_lossy(),
            ],
        ]
        .concat(),
    );
    fleetctl(
        &fleetd,
        &[
            "artifact",
            "sign",
            &APP,
            "1.0.0",
            "--key",
            &private.to_string_lossy(),
        ],
    );
    let shown = fleetctl(&fleetd, &["artifact", "show", &APP, "2.0.0"]);
    assert!(
        shown.contains(&v2_ref) && shown.contains(&digests[1]),
        "{shown}"
    );
    for v in ["1.0.0", "2.0.0"] {
        let manifest = json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": *APP, "version": v},
            "spec": {
                "artifacts": [{"name": *APP, "version": v, "type": "oci-image"}],
                "configuration": {
                    "env": {"GREETING": "hello", "PORT": port},
                    "files": [{"path": CONF, "content": format!("settings of {v}\n")}]
                },
                "runtime": {"type": engine, "ports": [port], "stop_grace": "3s"},
                "healthcheck": {"http": {"path": "/", "port": port, "interval": "1s",
                    "timeout": "1s", "retries": 2}},
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}
            }
        });
        support::fleet::register_app(&fleetd, &manifest);
    }

    // First install pulls v1 through the registry; its rollback removes container and image.
    let d0 = deploy(&fleetd, "1.0.0", &agent);
    wait_serving(port, "served by 1.0.0", "conf: settings of 1.0.0", &agent);
    assert!(agent.app_log(&APP).contains("hello from 1.0.0"));
    assert!(
        agent.app_log(&APP).contains("metrics: posted"),
        "the container reached FLEET_METRICS_URL: {}",
        agent.app_log(&APP)
    );
    assert_eq!(
        manifest_fetches(&registry, &digests[0]),
        1,
        "{:?}",
        registry.requests()
    );
    let layer_fetches = registry
        .requests()
        .iter()
        .filter(|r| r.contains("/blobs/"))
        .count();
    assert!(
        layer_fetches >= 2,
        "config and layer fetched: {:?}",
        registry.requests()
    );
    assert!(
        !sh(engine, &["images", "-q", &repo]).is_empty(),
        "the pulled image is in the engine"
    );
    let conf_file = agent.data_dir().join(format!(
        "apps/{}/1.0.0/container-files/etc/fleet-e2e/app.conf",
        *APP
    ));
    assert!(conf_file.is_file(), "host copy of the mounted file");
    rollback(&fleetd, &d0);
    let gone = wait_until(Duration::from_secs(30), || {
        containers(engine, true).is_empty() && sh(engine, &["images", "-q", &repo]).is_empty()
    });
    assert!(
        gone,
        "no container or image left; containers {:?}, images {:?}\nagent log:\n{}",
        containers(engine, true),
        sh(engine, &["images", "-q", &repo]),
        agent.log()
    );

    // Install again: the image is gone, so it is pulled again by digest through the registry.
    // The manifest itself need not be requested again: Docker Engine with its classic image
    // store (e.g. 20.10, overlay2) keeps pulled manifests in containerd's content store, which
    // `rmi` only unreferences (containerd's garbage collector deletes them asynchronously),
    // and a pull by digest takes a manifest still found there, content-addressed and already
    // seen at this repository, without asking the registry. The image's config and layer were
    // deleted with it, so those must come through the registry again, and the image must carry
    // the pinned digest (as the agent checks in RepoDigests). Never pulled by tag.
    let before = registry.requests().len();
    deploy(&fleetd, "1.0.0", &agent);
    wait_serving(port, "served by 1.0.0", "conf: settings of 1.0.0", &agent);
    let again = registry.requests()[before..].to_vec();
    for blob in registry.blobs_of(&digests[0]) {
        assert!(
            again.iter().any(|r| r.ends_with(&format!("/blobs/{blob}"))),
            "{blob} of 1.0.0 fetched again: {again:?}"
        );
    }
    assert!(
        !again.iter().any(|r| r.ends_with("/manifests/1.0.0")),
        "pulled by digest, not by tag: {again:?}"
    );
    assert!(
        (1..=2).contains(&manifest_fetches(&registry, &digests[0])),
        "manifest fetched once more or taken from the engine's content store: {:?}",
        registry.requests()
    );
    let repo_digests = sh(
        engine,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &v1_ref,
        ],
    );
    assert!(
        repo_digests.contains(&format!("@{}", digests[0])),
        "{repo_digests}"
    );
    // Upgrade to v2 (pulled by its recorded digest).
    let d2 = deploy(&fleetd, "2.0.0", &agent);
    wait_serving(port, "served by 2.0.0", "conf: settings of 2.0.0", &agent);
    assert_eq!(
        manifest_fetches(&registry, &digests[1]),
        1,
        "{:?}",
        registry.requests()
    );
    assert!(
        wait_until(Duration::from_secs(15), || containers(engine, false).len()
            == 1),
        "only v2 runs: {:?}",
        containers(engine, false)
    );
    let limits = sh(
        engine,
        &[
            "inspect",
            "--format",
            "{{.HostConfig.Memory}}",
            &format!("fleet-{}-2.0.0", *APP),
        ],
    );
    assert_eq!(limits, "67108864");

    // Rollback to v1 from the kept image: the registry sees no request at all.
    let before = registry.requests().len();
    rollback(&fleetd, &d2);
    wait_serving(port, "served by 1.0.0", "conf: settings of 1.0.0", &agent);
    assert!(
        wait_until(Duration::from_secs(15), || containers(engine, false).len()
            == 1),
        "only v1 runs: {:?}",
        containers(engine, false)
    );
    assert_eq!(
        registry.requests().len(),
        before,
        "{:?}",
        registry.requests()
    );
}
