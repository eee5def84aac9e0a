//! `runtime.type: systemd` against a real systemd: a private user manager (`systemd --user`
//! in its own mount namespace, so the fake `/run/systemd/system` it needs never reaches the
//! rest of the machine), a real `fleet-agent` with `--systemd-scope user`, and a desired
//! state over a real broker. The app is deployed, adopted across an agent restart, upgraded,
//! made to crash, rolled back and removed; every step is checked on systemd's side and in the
//! status. A second test checks a device without the manager: no capability, nothing run.

mod support;
mod systemd_support;

use fleet_agent::layout;
use fleet_agent::store::{AppRecord, Store};
use fleet_schema::app_spec::{ConfigFile, HealthCheck, ProbeKind, RestartPolicy, RuntimeKind};
use fleet_schema::{AppPhase, AppSpec, AppStatus, DeviceStatus, HealthState, MetricsBatch};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{broker, AgentProc, Observer, TestApp};
use systemd_support::{alive, proc_field, wait_until, UserManager};

const DEV: &str = "sd-dev";
const APP: &str = "sdapp";

fn unit(version: &str) -> String {
    format!("fleet-{APP}@{version}.service")
}

fn app(st: &DeviceStatus) -> Option<&AppStatus> {
    st.apps.iter().find(|a| a.name == APP)
}

fn spec() -> AppSpec {
    let mut spec = AppSpec::default();
    spec.runtime.kind = RuntimeKind::Systemd;
    spec.runtime.restart = RestartPolicy::Always;
    spec.runtime.stop_grace_ms = 2000;
    spec.resources.memory_limit = Some(256 << 20);
    spec.resources.open_files = Some(777);
    spec.env.insert("GREETING".into(), "hello".into());
    spec.files.push(ConfigFile {
        path: "cfg.txt".into(),
        content: "ok".into(),
        mode: None,
        secret: false,
    });
    spec.healthcheck = Some(HealthCheck {
        probe: ProbeKind::Exec {
            command: vec!["test".into(), "-f".into(), "cfg.txt".into()],
        },
        interval_ms: 200,
        timeout_ms: 1000,
        retries: 2,
        start_period_ms: 0,
    });
    spec
}

/// Runs until a `crash` file appears beside the version directories, then exits 3 at once.
const SCRIPT: &str = "echo \"started $FLEET_APP_VERSION\"\n\
    if [ -f \"$FLEET_APP_DIR/../crash\" ]; then echo 'ERROR: boom' >&2; exit 3; fi\n\
    exec sleep 600";

fn desired_version(agent: &AgentProc, generation: u64, version: &str) -> Vec<u8> {
    let mut d = support::desired(
        DEV,
        generation,
        &[TestApp {
            name: APP,
            script: String::new(),
            spec: spec(),
        }],
    );
    for a in &mut d.apps {
        a.version = version.into();
        a.artifact.version = version.into();
    }
    agent.cmd(&d)
}

/// The main pid of a unit that is active, checked to be a child of the manager running
/// the version's script with the spec's environment and limits.
fn running_under_systemd(mgr: &UserManager, version: &str) -> u32 {
    let s = mgr.show(&unit(version));
    assert_eq!(
        s.get("ActiveState").map(String::as_str),
        Some("active"),
        "{s:?}"
    );
    let pid: u32 = s
        .get("MainPID")
        .and_then(|p| p.parse().ok())
        .expect("MainPID");
    assert!(pid > 0 && alive(pid), "main process alive: {s:?}");
    let ppid = proc_field(pid, "stat")
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
    assert_eq!(
        ppid,
        Some(mgr.pid().to_string()),
        "a child of systemd, not of the agent"
    );
    let env = proc_field(pid, "environ");
    for var in [
        format!("FLEET_DEVICE_ID={DEV}"),
        format!("FLEET_APP_VERSION={version}"),
        "GREETING=hello".to_string(),
    ] {
        assert!(
            env.split('\0').any(|kv| kv == var),
            "{var} in the environment"
        );
    }
    let limits = proc_field(pid, "limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 777 ")),
        "LimitNOFILE applied: {limits}"
    );
    let text = std::fs::read_to_string(mgr.unit_dir().join(unit(version))).expect("unit file");
    assert!(
        text.contains("MemoryMax=268435456\n") && text.contains("Restart=always\n"),
        "{text}"
    );
    pid
}

fn install_version(data: &Path, version: &str) {
    let exe = layout::executable(data, APP, version);
    std::fs::create_dir_all(exe.parent().expect("parent")).expect("mkdir");
    std::fs::write(&exe, format!("#!/bin/bash\n{SCRIPT}\n")).expect("script");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Store::open(&layout::database(data)).expect("store");
    let installed = ["1.0.0".to_string(), version.to_string()].into();
    store
        .set_app(
            APP,
            &AppRecord {
                installed,
                current: Some("1.0.0".into()),
            },
        )
        .expect("record");
}

#[test]
fn systemd_apps_are_deployed_adopted_upgraded_crash_looped_rolled_back_and_removed() {
    let Some(mgr) = UserManager::start() else {
        return;
    };
    let Some(broker) = broker() else {
        return;
    };
    let status = format!("fleet/{DEV}/status");
    let metrics = format!("fleet/{DEV}/metrics");
    let obs = Observer::start(broker.port, &[status.clone(), metrics.clone()]);
    let test_app = TestApp {
        name: APP,
        script: SCRIPT.into(),
        spec: spec(),
    };
    let mut agent = AgentProc::start(
        DEV,
        broker.port,
        &[test_app],
        &["--systemd-scope", "user", "--metrics-interval-ms", "300"],
    );
    let running = |version: &'static str| {
        move |s: &DeviceStatus| {
            app(s)
                .filter(|a| {
                    a.version == version
                        && a.phase == AppPhase::Running
                        && a.health == HealthState::Healthy
                })
                .map(|_| s.clone())
        }
    };

    // 1. Deployed: a unit written, enabled and started; the capability is reported.
    let st = obs.wait_for(
        &status,
        Duration::from_secs(30),
        "v1 running",
        running("1.0.0"),
    );
    let caps = &st.inventory.as_ref().expect("inventory").capabilities;
    assert!(caps.iter().any(|c| c == "systemd"), "{caps:?}");
    let v1 = running_under_systemd(&mgr, "1.0.0");
    // Metrics are sampled from the unit's main process group.
    obs.wait_for(
        &metrics,
        Duration::from_secs(10),
        "app metrics",
        |b: &MetricsBatch| {
            b.apps
                .iter()
                .find(|a| a.app == APP && a.memory_bytes > 0 && a.threads > 0)
                .map(|_| ())
        },
    );
    assert!(
        mgr.unit_dir()
            .join("default.target.wants")
            .join(unit("1.0.0"))
            .exists(),
        "enabled"
    );

    // 2. Adopted across an agent restart: same main process, no second copy.
    agent.stop();
    assert!(alive(v1), "the unit keeps running without the agent");
    install_version(&agent.data(), "2.0.0");
    agent.restart();
    wait_until("the agent adopts the unit", Duration::from_secs(20), || {
        agent.log().contains("adopting running unit")
    });
    obs.wait_for(
        &status,
        Duration::from_secs(20),
        "v1 adopted",
        running("1.0.0"),
    );
    assert_eq!(
        running_under_systemd(&mgr, "1.0.0"),
        v1,
        "adopted, not restarted"
    );
    assert_eq!(
        support::pids_with_env(&format!("FLEET_DEVICE_ID={DEV}")),
        [v1]
    );

    // 3. Upgraded: v2's unit runs, v1's unit is stopped, disabled and deleted.
    obs.publish(
        &format!("fleet/{DEV}/cmd"),
        true,
        desired_version(&agent, 2, "2.0.0"),
    );
    obs.wait_for(
        &status,
        Duration::from_secs(30),
        "v2 running",
        running("2.0.0"),
    );
    let v2 = running_under_systemd(&mgr, "2.0.0");
    wait_until("v1's unit is gone", Duration::from_secs(20), || {
        !mgr.unit_dir().join(unit("1.0.0")).exists()
            && mgr
                .show(&unit("1.0.0"))
                .get("LoadState")
                .map(String::as_str)
                == Some("not-found")
    });
    assert!(!alive(v1), "v1's process is gone");
    assert!(!mgr
        .unit_dir()
        .join("default.target.wants")
        .join(unit("1.0.0"))
        .exists());

    // 4. Crashing: systemd restarts it, the agent reports the restarts and the crash loop.
    std::fs::write(agent.data().join(format!("apps/{APP}/crash")), "").expect("crash flag");
    let _ = Command::new("kill").args(["-9", &v2.to_string()]).status();
    let st = obs.wait_for(
        &status,
        Duration::from_secs(60),
        "crash loop",
        |s: &DeviceStatus| app(s).filter(|a| a.phase == AppPhase::CrashLoop).cloned(),
    );
    assert!(st.restart_count >= 3, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("exit status 3"),
        "{st:?}"
    );
    let restarts: u32 = mgr
        .show(&unit("2.0.0"))
        .get("NRestarts")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(restarts >= 2, "systemd did the restarts: {restarts}");
    assert!(
        agent.app_log(APP).contains("ERROR: boom"),
        "output reaches the app's logs"
    );

    // 5. Rolled back to v1 (still installed): a fresh v1 unit, v2's unit gone.
    std::fs::remove_file(agent.data().join(format!("apps/{APP}/crash"))).expect("no crash");
    obs.publish(
        &format!("fleet/{DEV}/cmd"),
        true,
        desired_version(&agent, 3, "1.0.0"),
    );
    obs.wait_for(
        &status,
        Duration::from_secs(30),
        "v1 running again",
        running("1.0.0"),
    );
    let back = running_under_systemd(&mgr, "1.0.0");
    assert_ne!(back, v1, "a new run of v1");
    wait_until("v2's unit is gone", Duration::from_secs(20), || {
        !mgr.unit_dir().join(unit("2.0.0")).exists()
            && mgr
                .show(&unit("2.0.0"))
                .get("LoadState")
                .map(String::as_str)
                == Some("not-found")
    });

    // 6. Removed: no unit, no enablement, no process left.
    let empty = support::desired(DEV, 4, &[]);
    obs.publish(&format!("fleet/{DEV}/cmd"), true, agent.cmd(&empty));
    obs.wait_for(
        &status,
        Duration::from_secs(30),
        "app removed",
        |s: &DeviceStatus| (s.observed_generation == 4 && app(s).is_none()).then_some(()),
    );
    wait_until("every unit is gone", Duration::from_secs(30), || {
        !mgr.unit_dir().join(unit("1.0.0")).exists()
            && !mgr
                .systemctl(&["list-units", "--all", "--plain", "--no-legend"])
                .contains("fleet-")
    });
    wait_until("no process is left", Duration::from_secs(10), || {
        support::pids_with_env(&format!("FLEET_DEVICE_ID={DEV}")).is_empty()
    });
    let wants = mgr.unit_dir().join("default.target.wants");
    let left: Vec<_> = std::fs::read_dir(&wants)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert!(
        left.iter().all(|n| *n == 0),
        "no enablement left in {}",
        wants.display()
    );
    drop(agent);
}

#[test]
fn without_the_manager_there_is_no_capability_and_nothing_runs() {
    if Path::new("/run/systemd/system").is_dir() {
        fleet_testkit::skip_or_fail(
            "this machine runs systemd as PID 1: the test of a device without a system manager \
             needs a machine (or container) where systemd is not PID 1",
        );
        return;
    }
    let Some(broker) = broker() else {
        return;
    };
    let dev = "sd-absent";
    let status = format!("fleet/{dev}/status");
    let obs = Observer::start(broker.port, std::slice::from_ref(&status));
    let test_app = TestApp {
        name: APP,
        script: SCRIPT.into(),
        spec: spec(),
    };
    let _agent = AgentProc::start(
        dev,
        broker.port,
        &[test_app],
        &["--systemd-scope", "system"],
    );
    let st = obs.wait_for(
        &status,
        Duration::from_secs(20),
        "start refused",
        |s: &DeviceStatus| {
            app(s)
                .filter(|a| a.last_error.is_some() && a.restart_count >= 1)
                .map(|_| s.clone())
        },
    );
    let caps = &st.inventory.as_ref().expect("inventory").capabilities;
    assert!(!caps.iter().any(|c| c == "systemd"), "{caps:?}");
    let err = app(&st)
        .and_then(|a| a.last_error.clone())
        .unwrap_or_default();
    assert!(
        err.contains("runtime systemd is not available") && err.contains("PID 1"),
        "{err}"
    );
    assert!(
        support::pids_with_env(&format!("FLEET_DEVICE_ID={dev}")).is_empty(),
        "a systemd app never runs as a bare process"
    );
}
