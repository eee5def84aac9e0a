//! Fault suite, the device: a real agent SIGKILLed while it downloads, installs, starts and
//! rolls back a version of an archive app whose install and pre-start scripts the test holds.
//! At every kill no half-installed version runs, and after the restart the app ends on the
//! desired version or the previous one, never on none. Each recovery time is printed
//! (`FAULT-RECOVERY ...`) for docs/faults.md.

mod support;

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{app_status, deploy, deployment, wait_deployment, wait_online, APP};
use support::gate::Gate;
use support::recovery::Recovery;
use support::{multipart, post, post_json, wait_until, Fleetd};

/// Files the test holds the device's scripts with, and the marks the scripts leave.
struct Holds {
    dir: tempfile::TempDir,
}

impl Holds {
    fn new() -> Holds {
        Holds {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes the script `what` (`install`, `start`) of `version` wait until released.
    fn hold(&self, what: &str, version: &str) {
        std::fs::write(self.path(&format!("hold-{what}-{version}")), b"").expect("hold file");
    }

    fn release(&self, what: &str, version: &str) {
        let _ = std::fs::remove_file(self.path(&format!("hold-{what}-{version}")));
    }

    /// True once a script `what` of `version` has started (and left its mark).
    fn reached(&self, what: &str, version: &str) -> bool {
        self.path(&format!("{what}-{version}")).exists()
    }

    fn clear(&self, what: &str, version: &str) {
        let _ = std::fs::remove_file(self.path(&format!("{what}-{version}")));
    }

    /// A script that marks its start and waits while it is held.
    fn script(&self, what: &str, version: &str) -> String {
        format!(
            "#!/bin/sh\ntouch {mark}\nwhile [ -e {hold} ]; do sleep 0.05; done\n",
            mark = self.path(&format!("{what}-{version}")).display(),
            hold = self.path(&format!("hold-{what}-{version}")).display()
        )
    }
}

/// Uploads and registers `APP@version`: an archive whose entry point runs its own copy of
/// `sleep` (so its processes are found under the version's directory), or exits 1 when
/// `crashes`, with the held install and pre-start scripts.
fn push_archive(fleetd: &Fleetd, holds: &Holds, version: &str, crashes: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::create_dir_all(root.join("scripts")).expect("mkdir");
    std::fs::copy("/bin/sleep", root.join("bin/sleeper")).expect("copy sleep");
    let run = if crashes {
        "#!/bin/sh\necho crashing\nexit 1\n".to_string()
    } else {
        format!("#!/bin/sh\necho running {version}\nexec ./bin/sleeper 600\n")
    };
    std::fs::write(root.join("bin/run.sh"), run).expect("run.sh");
    std::fs::write(
        root.join("scripts/install.sh"),
        holds.script("install", version),
    )
    .expect("install.sh");
    std::fs::write(
        root.join("scripts/pre-start.sh"),
        holds.script("start", version),
    )
    .expect("pre-start.sh");
    let tgz = dir.path().join("app.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "tar");
    let bytes = std::fs::read(&tgz).expect("archive");
    let meta =
        json!({"name": APP, "version": version, "platform": "linux/amd64", "type": "archive"});
    let (ct, body) = multipart(&[
        ("file", Some("app.tar.gz"), &bytes),
        ("metadata", None, meta.to_string().as_bytes()),
    ]);
    let (status, text) = post(&fleetd.url("/api/v1/artifacts"), &ct, &body);
    assert_eq!(status, 201, "upload {version}: {text}");
    support::fleet::register_app(
        fleetd,
        &json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": APP, "version": version},
            "spec": {
                "artifacts": [{"name": APP, "version": version, "type": "archive"}],
                "runtime": {"entrypoint": "bin/run.sh", "restart": "on-failure",
                            "install_script": "scripts/install.sh",
                            "pre_start_script": "scripts/pre-start.sh"}
            }
        }),
    );
}

/// Versions with a running process on the agent.
fn running_versions(agent: &Agent) -> Vec<String> {
    ["1.0.0", "2.0.0", "3.0.0"]
        .into_iter()
        .filter(|v| !agent.app_pids(APP, v).is_empty())
        .map(str::to_string)
        .collect()
}

/// True when exactly one process of `version`, and none of another version, runs.
fn runs_alone(agent: &Agent, version: &str) -> bool {
    running_versions(agent) == [version] && agent.app_pids(APP, version).len() == 1
}

/// No process of a version that is not completely installed.
fn assert_nothing_half_installed_runs(agent: &Agent, version: &str) {
    let dir = agent.data_dir().join("apps").join(APP).join(version);
    if !dir.join("bin/sleeper").exists() {
        assert!(
            agent.app_pids(APP, version).is_empty(),
            "{version} runs before it is installed"
        );
    }
    let staging = agent
        .data_dir()
        .join("apps")
        .join(APP)
        .join(format!(".{version}.staging"));
    let from_staging = support::procs::processes_under(&staging);
    assert!(
        from_staging.is_empty(),
        "a staged version runs: {from_staging:?}"
    );
}

fn wait_phase(fleetd: &Fleetd, agent: &Agent, phase: &str) {
    let ok = wait_until(Duration::from_secs(30), || {
        app_status(fleetd, &agent.device_id)["phase"] == phase
    });
    assert!(
        ok,
        "app never reported {phase}: {:#}\n{}",
        app_status(fleetd, &agent.device_id),
        agent.log()
    );
}

#[test]
fn agent_killed_while_downloading_installing_starting_and_rolling_back_ends_on_a_version() {
    let holds = Holds::new();
    let gate = Gate::shut();
    let public = format!("http://127.0.0.1:{}", gate.port);
    let fleetd = Fleetd::start_with(
        &[("FLEETD_ROLLOUT_TICK_MS", "200")],
        &["--public-url", &public],
    );
    gate.open_to(fleetd.http_port().expect("fleetd's HTTP port"));
    let mut agent = Agent::start("akill-1", &fleetd.access(), &[("ring", "akill")]);
    wait_online(&fleetd, &[&agent]);
    push_archive(&fleetd, &holds, "1.0.0", false);
    let d1 = deploy(&fleetd, "1.0.0", &["akill-1"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    push_archive(&fleetd, &holds, "2.0.0", false);
    push_archive(&fleetd, &holds, "3.0.0", true);

    // Download: the artifact server is down, the agent is retrying.
    gate.shut_again();
    let d2 = deploy(&fleetd, "2.0.0", &["akill-1"]);
    wait_phase(&fleetd, &agent, "downloading");
    agent.kill9();
    assert_eq!(
        running_versions(&agent),
        ["1.0.0"],
        "v1 serves while v2 downloads"
    );
    holds.hold("install", "2.0.0");
    agent.restart();
    gate.open_to(fleetd.http_port().expect("fleetd's HTTP port"));
    let clock = Recovery::start("agent SIGKILL during a download");
    assert!(
        wait_until(Duration::from_secs(60), || holds
            .reached("install", "2.0.0")),
        "the download completed after the restart:\n{}",
        agent.log()
    );
    clock.done("the download completed and the install began");

    // Install: the install script of 2.0.0 runs (held) in the staging directory.
    agent.kill9();
    assert_nothing_half_installed_runs(&agent, "2.0.0");
    assert_eq!(
        running_versions(&agent),
        ["1.0.0"],
        "v1 serves while v2 installs"
    );
    holds.clear("install", "2.0.0");
    holds.release("install", "2.0.0");
    holds.hold("start", "2.0.0");
    agent.restart();
    let clock = Recovery::start("agent SIGKILL during an install");
    assert!(
        wait_until(Duration::from_secs(60), || holds.reached("start", "2.0.0")),
        "the install completed after the restart:\n{}",
        agent.log()
    );
    clock.done("installed again and starting");
    assert!(
        holds.reached("install", "2.0.0"),
        "the install ran again from scratch"
    );

    // Start: the pre-start script of 2.0.0 runs (held).
    agent.kill9();
    assert_nothing_half_installed_runs(&agent, "2.0.0");
    assert!(
        agent.app_pids(APP, "2.0.0").is_empty(),
        "v2 is not running before its pre-start script finished"
    );
    holds.release("start", "2.0.0");
    agent.restart();
    let clock = Recovery::start("agent SIGKILL during a start");
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    assert!(
        wait_until(Duration::from_secs(30), || runs_alone(&agent, "2.0.0")),
        "exactly v2 runs: {:?}\n{}",
        running_versions(&agent),
        agent.log()
    );
    clock.done("deployment succeeded, v2 runs alone");

    // Rollback: 3.0.0 crashes next to 2.0.0 (kept as the fallback); the agent is killed the
    // moment fleetd decides to roll back, before it has converged.
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP, "version": "3.0.0",
            "strategy": {"type": "canary", "initial_percentage": 100,
                         "min_healthy_time": "1s", "progress_deadline": "60s"},
            "target": {"devices": ["akill-1"]},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let d3 = body["id"].as_str().expect("id").to_string();
    assert!(
        wait_until(Duration::from_secs(90), || !deployment(&fleetd, &d3)
            ["rollout"]["trigger"]
            .is_null()),
        "a rollback trigger fired: {:#}\n{}",
        deployment(&fleetd, &d3),
        agent.log()
    );
    agent.kill9();
    assert_eq!(
        agent.app_pids(APP, "2.0.0").len(),
        1,
        "the previous version serves while the new one crashes"
    );
    agent.restart();
    let clock = Recovery::start("agent SIGKILL during a rollback");
    wait_deployment(&fleetd, &d3, "rolled-back", &[&agent]);
    assert!(
        wait_until(Duration::from_secs(30), || runs_alone(&agent, "2.0.0")),
        "back on exactly v2: {:?}\n{}",
        running_versions(&agent),
        agent.log()
    );
    clock.done("rolled back, v2 runs alone");
    let leftovers: Vec<String> = std::fs::read_dir(agent.data_dir().join("apps").join(APP))
        .expect("app dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no staging directory left: {leftovers:?}"
    );
}
