//! `rpm` artifacts end to end with the system's real `rpm`: two versions of a noarch package
//! built here with `rpmbuild`, pushed with fleetctl, deployed by a real fleetd to a real agent
//! that installs them with `rpm -U`, runs `/usr/bin/<app>`, upgrades, and rolls back by
//! reinstalling the kept 1.0.0 package (the stored blob is spoiled, so a download would fail).
//! Needs root, `rpm` and `rpmbuild` (Debian: `apt-get install rpm`); skips loudly without them,
//! fails instead under FLEET_REQUIRE_EXTERNAL=1.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{wait_deployment, wait_online};
use support::oci::{fleetctl, skip_or_fail};
use support::{post_json, wait_until, Fleetd};

const APP: &str = "fleet-test-rpmapp";

/// Erases the test package, even when the test fails.
struct EraseRpm;

impl Drop for EraseRpm {
    fn drop(&mut self) {
        let _ = Command::new("rpm").args(["-e", APP]).output();
    }
}

fn tool_works(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Builds `<APP>-<version>-1.noarch.rpm` (a script printing "rpmapp <version>" then sleeping)
/// with rpmbuild under `dir`; no automatic dependencies, so the host's rpm database (empty on
/// Debian) need not provide `/bin/sh`.
fn build_rpm(dir: &Path, version: &str) -> String {
    let top = dir.join(format!("rpm-{version}"));
    std::fs::create_dir_all(top.join("SPECS")).expect("mkdir");
    let spec = top.join("SPECS/app.spec");
    std::fs::write(
        &spec,
        format!(
            "Name: {APP}\nVersion: {version}\nRelease: 1\nSummary: FleetD rpm test\nLicense: MIT\n\
             BuildArch: noarch\nAutoReqProv: no\n%description\nFleetD rpm artifact test\n\
             %install\nmkdir -p %{{buildroot}}/usr/bin\n\
             printf '#!/bin/sh\\necho rpmapp {version}\\nexec sleep 600\\n' > %{{buildroot}}/usr/bin/{APP}\n\
             chmod 755 %{{buildroot}}/usr/bin/{APP}\n%files\n/usr/bin/{APP}\n"
        ),
    )
    .expect("spec");
    let out = Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec)
        .output()
        .expect("run rpmbuild");
    assert!(
        out.status.success(),
        "rpmbuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    top.join(format!("RPMS/noarch/{APP}-{version}-1.noarch.rpm"))
        .to_string_lossy()
        .into_owned()
}

/// The installed version of the test package ("" when none).
fn installed_version() -> String {
    Command::new("rpm")
        .args(["-q", "--qf", "%{VERSION}", APP])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn rpm_packages_install_upgrade_and_roll_back_with_rpm() {
    if !tool_works("rpm") || !tool_works("rpmbuild") || !is_root() {
        return skip_or_fail(&format!(
            "rpm test needs rpm, rpmbuild and root (apt-get install rpm; root: {})",
            is_root()
        ));
    }
    let _erase = EraseRpm;
    let dir = tempfile::tempdir().expect("tempdir");
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-rpm", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    for v in ["1.0.0", "2.0.0"] {
        let rpm = build_rpm(dir.path(), v);
        fleetctl(
            &fleetd,
            &[
                "artifact",
                "push",
                &rpm,
                "--name",
                APP,
                "--version",
                v,
                "--type",
                "rpm",
            ],
        );
    }
    let deploy = |version: &str| {
        let (status, body) = post_json(
            &fleetd.url("/api/v1/deployments"),
            &serde_json::json!({"application": APP, "version": version,
                "target": {"devices": ["dev-rpm"]}}),
        );
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_string();
        wait_deployment(&fleetd, &id, "succeeded", &[&agent]);
    };
    let runs = |version: &str| {
        let want = format!("rpmapp {version}");
        let ok = wait_until(Duration::from_secs(15), || {
            agent
                .app_log(APP)
                .lines()
                .rfind(|l| l.starts_with("rpmapp "))
                == Some(want.as_str())
        });
        assert!(ok, "{want} runs: {}", agent.app_log(APP));
    };
    for v in ["1.0.0", "2.0.0"] {
        deploy(v);
        assert_eq!(installed_version(), v);
        runs(v);
    }
    // Rollback: the kept 1.0.0 package is reinstalled, without a download.
    std::fs::write(
        fleetd
            .data_dir()
            .join(format!("artifacts/{APP}/1.0.0/blob")),
        b"gone",
    )
    .expect("overwrite the stored blob");
    deploy("1.0.0");
    assert_eq!(installed_version(), "1.0.0");
    runs("1.0.0");
}
