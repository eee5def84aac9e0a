//! An application of several artifacts end to end, in the seed's manifest shape (a `binary`
//! and an `oci-image`): a real fleetd deploys both to a real agent, which runs the binary as a
//! process and the image with Docker or Podman (whichever answers `info`), each supervised
//! and health-checked, and reports each component in the device status. An upgrade whose
//! image crashes never counts the device healthy although its binary runs and is healthy, and
//! the rollout's rollback returns both components to the old version together; an upgrade
//! whose image fails to start keeps both components on the old version on the device itself.
//! Skips loudly without an engine or busybox-static; fails instead under
//! FLEET_REQUIRE_EXTERNAL=1.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{deployment, sample_app_bytes, wait_deployment, wait_online};
use support::oci::{self, fleetctl};
use support::{get, post_json, upload, wait_until, Fleetd};

const ENGINE_ART: &str = "inference-engine";
const MODEL_ART: &str = "model-server";

/// One test's application on one device: fleetd, the agent, the ports, both versions of both
/// artifacts uploaded and both manifests registered.
struct Rig {
    engine: &'static str,
    /// The application (unique per test and process: container labels carry it, and parallel
    /// runs share one engine).
    app: String,
    fleetd: Fleetd,
    agent: Agent,
    /// Each version's binary listens on its own port (an upgrade in place starts the new one
    /// before the old one stops).
    engine_v1: u16,
    engine_v2: u16,
    /// The image's port (published on the host only when `published`).
    model_port: u16,
    _cleanup: oci::Cleanup,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// `None` after skipping loudly (no engine or busybox). With `published`, the image
    /// publishes its port and has a health check of its own; without, it runs as the seed's
    /// manifest leaves it (a fitted runtime, no port, no health check).
    /// `broken` names the component whose 2.0.0 fails: the image's exits at start (it cannot
    /// load its model), the binary's is given a configuration it refuses.
    fn start(name: &str, published: bool, broken: &str) -> Option<Rig> {
        let (engine, busybox) = oci::engine_and_busybox()?;
        let app = format!("{name}-{}", std::process::id());
        let tag = format!("fleet-{app}");
        let cleanup = oci::Cleanup {
            engine,
            app: format!("{app}__{MODEL_ART}"),
            tag: tag.clone(),
            versions: &["1.0.0", "2.0.0"],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine_v1, engine_v2, model_port) = (
            support::free_port(),
            support::free_port(),
            support::free_port(),
        );
        let fleetd = Fleetd::start();
        let agent = Agent::start("dev-multi", &fleetd.access(), &[]);
        wait_online(&fleetd, &[&agent]);
        let rig = Rig {
            engine,
            app,
            fleetd,
            agent,
            engine_v1,
            engine_v2,
            model_port,
            _cleanup: cleanup,
            _dir: dir,
        };
        for v in ["1.0.0", "2.0.0"] {
            let (status, body) = upload(&rig.fleetd, ENGINE_ART, v, &sample_app_bytes(v));
            assert_eq!(status, 201, "upload {ENGINE_ART}@{v}: {body}");
            let fails = v == "2.0.0" && broken == MODEL_ART;
            let tarball = build_image(engine, &busybox, rig._dir.path(), &tag, v, fails);
            let path = tarball.to_string_lossy();
            let args = ["--name", MODEL_ART, "--version", v, "--type", "oci-image"];
            fleetctl(
                &rig.fleetd,
                &[&["artifact", "push", &path][..], &args].concat(),
            );
            let mut manifest = rig.manifest(v, published);
            if v == "2.0.0" && broken == ENGINE_ART {
                manifest["spec"]["configuration"]["env"]["SAMPLE_HEALTH_STATUS"] = json!("none");
            }
            support::fleet::register_app(&rig.fleetd, &manifest);
        }
        Some(rig)
    }

    /// The unit the agent runs a component as (its container label and log file name).
    fn unit(&self, component: &str) -> String {
        format!("{}__{component}", self.app)
    }

    fn engine_port(&self, version: &str) -> u16 {
        if version == "1.0.0" {
            self.engine_v1
        } else {
            self.engine_v2
        }
    }

    /// The seed's manifest shape: the binary first (it takes the app's runtime and health
    /// check), then the image.
    fn manifest(&self, version: &str, published: bool) -> Value {
        let probe = |port: u16, path: &str| json!({"http": {"path": path, "port": port, "interval": "1s", "timeout": "1s", "retries": 2}});
        let mut model = json!({"name": MODEL_ART, "version": version, "type": "oci-image"});
        if published {
            model["runtime"] =
                json!({"type": self.engine, "ports": [self.model_port], "stop_grace": "3s"});
            model["healthcheck"] = probe(self.model_port, "/");
        }
        let port = self.engine_port(version);
        json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": self.app, "version": version},
            "spec": {
                "artifacts": [{"name": ENGINE_ART, "version": version, "type": "binary"}, model],
                "configuration": {"env": {"PORT": port, "MODEL_PORT": self.model_port}},
                "runtime": {"type": "raw", "restart": "always", "stop_grace": "3s"},
                "healthcheck": probe(port, "/health"),
                "resources": {"limits": {"memory": "64Mi"}}
            }
        })
    }

    /// Creates a deployment of `version` to the device; returns its id.
    fn deploy(&self, version: &str, strategy: Value) -> String {
        let (status, body) = post_json(
            &self.fleetd.url("/api/v1/deployments"),
            &json!({"application": self.app, "version": version, "strategy": strategy,
                    "target": {"devices": ["dev-multi"]}}),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// The app as the API reports it on the device.
    fn status(&self) -> Value {
        let (status, body) = get(&self.fleetd.url("/api/v1/devices/dev-multi"));
        assert_eq!(status, 200, "{body}");
        let dev = support::parse_json(&body);
        dev["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == json!(self.app)).cloned())
            .unwrap_or(Value::Null)
    }

    /// Waits until the app's status satisfies `cond`; fails naming the last status.
    fn wait_status(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut app = Value::Null;
        let ok = wait_until(Duration::from_secs(60), || {
            app = self.status();
            cond(&app)
        });
        assert!(ok, "{what}: {app:#}\n{}", self.log());
        app
    }

    /// Ids of the model server's running containers.
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=fleet.app={}", self.unit(MODEL_ART));
        let out = Command::new(self.engine)
            .args(["ps", "-q", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        out.split_whitespace().map(str::to_string).collect()
    }

    fn log(&self) -> String {
        format!(
            "agent log:\n{}\nfleetd:\n{}",
            self.agent.log(),
            self.fleetd.stderr()
        )
    }
}

/// The model server's image for `version`, saved as a tarball: busybox httpd serving
/// "served by <version>" on $MODEL_PORT, or (`fails`) one that cannot load its model and exits.
fn build_image(
    engine: &str,
    busybox: &Path,
    dir: &Path,
    tag: &str,
    version: &str,
    fails: bool,
) -> PathBuf {
    let start = if fails {
        "#!/bin/sh\necho \"model $FLEET_COMPONENT cannot load its model\" >&2\nexit 3\n".to_string()
    } else {
        "#!/bin/sh\necho \"$FLEET_APP_NAME/$FLEET_COMPONENT $FLEET_APP_VERSION\"\nexec /bin/httpd -f -p \"$MODEL_PORT\" -h /www\n".to_string()
    };
    oci::build_image(engine, busybox, dir, tag, version, &start)
}

/// True when the app runs `version` with both components running and healthy (or, for a
/// component without a health check, running with no verdict).
fn all_running(app: &Value, version: &str) -> bool {
    let parts = app["components"].as_array().cloned().unwrap_or_default();
    app["version"] == json!(version)
        && app["phase"] == json!("running")
        && app["health"] == json!("healthy")
        && parts.len() == 2
        && parts.iter().all(|c| {
            c["phase"] == json!("running")
                && (c["health"] == json!("healthy") || c["health"] == json!("unknown"))
        })
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

/// Deploys 1.0.0 and checks both components run, each reported (API and fleetctl) and
/// knowing its app and component.
fn install_v1(rig: &Rig) {
    let d1 = rig.deploy("1.0.0", json!({"type": "all-at-once"}));
    wait_deployment(&rig.fleetd, &d1, "succeeded", &[&rig.agent]);
    let app = rig.wait_status("both components run and are healthy", |a| {
        all_running(a, "1.0.0")
    });
    let names: Vec<&str> = app["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, [ENGINE_ART, MODEL_ART]);
    assert!(
        served(rig.engine_v1, "/").contains("1.0.0"),
        "{}",
        rig.log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || rig.containers().len() == 1),
        "one model container: {:?}\n{}",
        rig.containers(),
        rig.log()
    );
    let greeting = format!("{}/{MODEL_ART} 1.0.0", rig.app);
    let model_log = || rig.agent.app_log(&rig.unit(MODEL_ART));
    assert!(
        wait_until(Duration::from_secs(5), || model_log().contains(&greeting)),
        "the container knows its app and component: {}",
        model_log()
    );
    let (ok, table) = support::cli::fleetctl(&rig.fleetd, &["device", "list"]);
    assert!(ok, "{table}");
    assert!(
        table.contains(&format!("{ENGINE_ART} running [healthy]")) && table.contains(MODEL_ART),
        "fleetctl shows each component: {table}"
    );
}

#[test]
fn a_binary_and_an_image_run_as_one_app_and_roll_back_together() {
    let Some(rig) = Rig::start("edge-inference", true, MODEL_ART) else {
        return;
    };
    // A device whose agent predates components (it does not report the capability) is refused
    // up front, naming it and what it lacks.
    let _old = support::announce(&rig.fleetd, &support::device_status("dev-old-agent", &[]));
    let (status, body) = post_json(
        &rig.fleetd.url("/api/v1/deployments"),
        &json!({"application": rig.app, "version": "1.0.0",
                "target": {"devices": ["dev-old-agent"]}}),
    );
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("dev-old-agent") && err.contains("capability \"components\""),
        "{err}"
    );

    install_v1(&rig);
    let app = rig.status();
    assert_eq!(app["components"][1]["health"], json!("healthy"), "{app:#}");
    assert!(
        served(rig.model_port, "/").contains("served by 1.0.0"),
        "{}",
        rig.log()
    );

    // Version 2: the binary comes up healthy but the image crashes. The device never counts
    // healthy, the rollout rolls back, and both components return to 1.0.0.
    let d2 = rig.deploy("2.0.0", json!({"type": "rolling", "auto_rollback": true}));
    let mut engine_v2_seen = false;
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(90), || {
        engine_v2_seen |= served(rig.engine_v2, "/").contains("2.0.0");
        last = deployment(&rig.fleetd, &d2);
        assert_ne!(last["state"], json!("succeeded"), "{last:#}\n{}", rig.log());
        last["state"] == json!("rolled-back")
    });
    assert!(ok, "the upgrade rolled back: {last:#}\n{}", rig.log());
    // The image's crash loop is the app's: the step never counted the device healthy.
    let trigger = &last["rollout"]["trigger"];
    assert_eq!(trigger["kind"], json!("crash-loop"), "{last:#}");
    assert_eq!(last["rollout"]["steps"][0]["healthy"], json!(0), "{last:#}");
    assert!(
        engine_v2_seen,
        "the binary of 2.0.0 ran while the image crashed\n{}",
        rig.log()
    );
    rig.wait_status("both components back at 1.0.0", |a| all_running(a, "1.0.0"));
    assert!(
        served(rig.engine_v1, "/").contains("1.0.0"),
        "{}",
        rig.log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || served(rig.engine_v2, "/")
            .is_empty()),
        "the binary of 2.0.0 stopped"
    );
    assert!(
        served(rig.model_port, "/").contains("served by 1.0.0"),
        "{}",
        rig.log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || rig.containers().len() == 1),
        "only the 1.0.0 model container runs: {:?}",
        rig.containers()
    );
    let err = rig.agent.app_log(&rig.unit(MODEL_ART));
    assert!(err.contains("cannot load its model"), "{err}");
}

#[test]
fn a_component_that_fails_to_start_keeps_both_components_on_the_old_version() {
    // The image as the seed's manifest leaves it: no port, no health check of its own.
    let Some(rig) = Rig::start("edge-fallback", false, ENGINE_ART) else {
        return;
    };
    install_v1(&rig);
    let model_v1 = rig.containers();

    // All at once (no automatic rollback): 2.0.0's binary refuses its configuration and dies
    // at start while 1.0.0 serves. The agent keeps the image on 1.0.0 too (its 2.0.0 is
    // stopped, or never started): never half of the app on each version.
    let d2 = rig.deploy("2.0.0", json!({"type": "all-at-once"}));
    let view = wait_deployment(&rig.fleetd, &d2, "failed", &[&rig.agent]);
    let app = rig.wait_status("2.0.0 failed, both components on 1.0.0", |a| {
        let phases: Vec<&Value> = a["components"]
            .as_array()
            .map(|c| c.iter().map(|c| &c["phase"]).collect())
            .unwrap_or_default();
        a["version"] == json!("2.0.0")
            && a["phase"] == json!("failed")
            && a["running_version"] == json!("1.0.0")
            && phases == [&json!("failed"), &json!("stopped")]
    });
    let error = app["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("component {ENGINE_ART}: ")),
        "{app:#}\n{view:#}"
    );
    assert!(
        served(rig.engine_v1, "/").contains("1.0.0"),
        "{}",
        rig.log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || rig.containers() == model_v1),
        "the 1.0.0 model container serves on, alone: {:?} (was {model_v1:?})\n{}",
        rig.containers(),
        rig.log()
    );
}
