//! Artifacts end to end, with a real fleetd, real agents and the real `fleetctl`: expiring
//! download URLs refreshed by a device that was offline too long, archive artifacts with
//! scripts, deb packages, placement refusals, the scan hook, and rollback from the agent's
//! cache without a download (signatures: `signatures_e2e.rs`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::cli::{fleetctl, wait_error};
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::{get, parse_json, wait_until, Fleetd, MqttClient};

#[test]
fn a_device_offline_longer_than_the_url_lifetime_still_gets_its_artifact() {
    let fleetd = Fleetd::start_with_env(&[("FLEETD_DOWNLOAD_URL_TTL_SECS", "2")]);
    let mut agent = Agent::start("dev-offline", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    agent.stop();
    upload_sample(&fleetd, "1.0.0");
    let id = deploy(&fleetd, "1.0.0", &["dev-offline"]);

    // The retained desired state carries a URL that expires while the device is away.
    let mut sub = MqttClient::connect(fleetd.mqtt_port, "test-url-sub");
    sub.subscribe("fleet/dev-offline/cmd");
    let p = sub
        .wait_for("fleet/dev-offline/cmd", Duration::from_secs(10), |_| true)
        .expect("desired state published");
    let desired = agent.open_cmd(&p.payload);
    let url = desired.apps[0].artifact.url.clone();
    let expired = wait_until(Duration::from_secs(15), || {
        support::get_bytes(&url, &[]).0 != 200
    });
    assert!(expired, "the URL never expired");
    let (status, body) = get(&url);
    assert_eq!(status, 403, "expired URL refused: {body}");
    assert!(body.contains("expired"), "{body}");

    agent.restart();
    wait_deployment(&fleetd, &id, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1);
    assert!(
        agent.log().contains("asking fleetd for a fresh one"),
        "the agent refreshed the URL:\n{}",
        agent.log()
    );
}

#[test]
fn rollback_to_the_previous_version_needs_no_download() {
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-cache", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    upload_sample(&fleetd, "1.0.0");
    upload_sample(&fleetd, "2.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["dev-cache"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    let d2 = deploy(&fleetd, "2.0.0", &["dev-cache"]);
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    // Make v1 undownloadable: only the agent's cache can bring it back.
    let blob = fleetd
        .data_dir()
        .join("artifacts")
        .join(APP)
        .join("1.0.0/blob");
    std::fs::write(&blob, b"gone").expect("overwrite the stored blob");
    let d3 = deploy(&fleetd, "1.0.0", &["dev-cache"]);
    wait_deployment(&fleetd, &d3, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1, "{}", agent.log());
    let cached: Vec<String> = std::fs::read_dir(agent.data_dir().join("apps").join(APP))
        .expect("app dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(cached.len() <= 2, "bounded cache: {cached:?}");
}

#[test]
fn archive_artifact_runs_its_entry_point() {
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-archive", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    push_archive(
        &fleetd,
        "1.0.0",
        &[
            ("lib/message.txt", "hello from the archive\n"),
            (APP, "#!/bin/sh\ncat lib/message.txt\nexec sleep 600\n"),
        ],
    );
    let d = deploy(&fleetd, "1.0.0", &["dev-archive"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    let printed = wait_until(Duration::from_secs(10), || {
        agent.app_log(APP).contains("hello from the archive")
    });
    assert!(printed, "entry point ran: {}", agent.app_log(APP));
}

#[test]
fn unfit_deployment_targets_are_refused_naming_device_and_requirement() {
    let fleetd = Fleetd::start();
    let mut arm = support::device_status("pi-arm", &[]);
    if let Some(inv) = arm.inventory.as_mut() {
        inv.arch = "arm64".into();
    }
    support::announce(&fleetd, &arm);
    let mut small = support::device_status("pi-small", &[]);
    if let Some(inv) = small.inventory.as_mut() {
        inv.total_memory = 512 << 20;
    }
    support::announce(&fleetd, &small);
    let meta = serde_json::json!({
        "name": "big", "version": "1.0.0", "type": "binary", "platform": "linux/amd64",
        "requirements": {"min_memory": 1u64 << 30, "capabilities": ["gpu"]},
        "build_info": {"commit": "abc123"},
        "labels": {"team": "vision"},
    })
    .to_string();
    let (ct, body) = support::multipart(&[
        ("metadata", None, meta.as_bytes()),
        ("file", Some("big"), b"bytes"),
    ]);
    let (status, text) = support::post(&fleetd.url("/api/v1/artifacts"), &ct, &body);
    assert_eq!(status, 201, "{text}");
    let stored = parse_json(&text);
    assert_eq!(stored["build_info"]["commit"], "abc123");
    assert_eq!(stored["requirements"]["capabilities"][0], "gpu");

    let (status, body) = support::post_json(
        &fleetd.url("/api/v1/deployments"),
        &serde_json::json!({"application": "big", "version": "1.0.0",
            "target": {"devices": ["pi-arm", "pi-small"]}}),
    );
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    for needle in [
        "pi-arm: platform linux/arm64 is not among",
        "pi-small: needs 1073741824 bytes of memory, device has 536870912",
        "needs capability \"gpu\"",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}

#[test]
fn vulnerability_scan_findings_reject_the_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("scan.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nif grep -q vulnerable \"$1\"; then echo \"$1: CVE-2099-0001 critical in libfoo 1.2\"; exit 1; fi\n",
    )
    .expect("write scanner");
    let command = format!("sh {}", script.display());
    let fleetd = Fleetd::start_with_env(&[
        ("FLEETD_SCAN_COMMAND", &command),
        ("FLEETD_SCAN_REJECT", "true"),
    ]);
    let (status, body) = support::upload(&fleetd, "scanned", "1.0.0", b"vulnerable bytes");
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("CVE-2099-0001 critical in libfoo 1.2") && err.contains("scanned@1.0.0"),
        "{err}"
    );
    // The scanner names the file it scanned: the answer names the artifact, not the server's
    // staging path.
    let data = fleetd.data_dir();
    let data = data.to_string_lossy();
    assert!(
        !err.contains(data.as_ref()) && !err.contains(".tmp/upload-"),
        "{err}"
    );
    assert_eq!(get(&fleetd.url("/api/v1/artifacts/scanned/1.0.0")).0, 404);
    let (status, body) = support::upload(&fleetd, "scanned", "1.0.0", b"clean bytes");
    assert_eq!(status, 201, "{body}");
}

/// Builds `fleet-test-debapp_<version>_all.deb` with dpkg-deb in `dir`.
fn build_deb(dir: &Path, version: &str) -> String {
    let root = dir.join(format!("pkg-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: fleet-test-debapp\nVersion: {version}\nArchitecture: all\nMaintainer: FleetD tests <tests@example.invalid>\nDescription: FleetD deb artifact test\n"),
    )
    .expect("control");
    let bin = root.join("usr/bin/fleet-test-debapp");
    std::fs::write(
        &bin,
        format!("#!/bin/sh\necho debapp {version}\nexec sleep 600\n"),
    )
    .expect("script");
    assert!(Command::new("chmod")
        .arg("0755")
        .arg(&bin)
        .status()
        .expect("chmod")
        .success());
    let out = dir.join(format!("fleet-test-debapp_{version}_all.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run dpkg-deb");
    assert!(status.success(), "dpkg-deb --build");
    out.to_string_lossy().into_owned()
}

fn installed_deb_version() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "fleet-test-debapp"])
        .output()
        .expect("dpkg-query");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test package from the system even when the test fails.
struct RemoveDeb;

impl Drop for RemoveDeb {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "fleet-test-debapp"])
            .output();
    }
}

#[test]
fn deb_packages_install_upgrade_and_roll_back_with_dpkg() {
    let has_dpkg = ["dpkg", "dpkg-deb", "dpkg-query"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let root = nix_is_root();
    if !has_dpkg || !root {
        let msg = format!("deb test needs dpkg and root (dpkg: {has_dpkg}, root: {root})");
        fleet_testkit::skip_or_fail(&msg);
        return;
    }
    let _cleanup = RemoveDeb;
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-deb", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    let dir = tempfile::tempdir().expect("tempdir");
    for v in ["1.0.0", "2.0.0"] {
        let deb = build_deb(dir.path(), v);
        let (ok, out) = fleetctl(
            &fleetd,
            &[
                "artifact",
                "push",
                &deb,
                "--name",
                "fleet-test-debapp",
                "--version",
                v,
                "--type",
                "deb",
            ],
        );
        assert!(ok, "{out}");
    }
    let deploy_deb = |version: &str| {
        let (status, body) = support::post_json(
            &fleetd.url("/api/v1/deployments"),
            &serde_json::json!({"application": "fleet-test-debapp", "version": version,
                "target": {"devices": ["dev-deb"]}}),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_string()
    };
    for v in ["1.0.0", "2.0.0"] {
        let d = deploy_deb(v);
        wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
        assert_eq!(installed_deb_version(), v);
    }
    // Rollback: the kept 1.0.0 package is reinstalled, without a download.
    let blob = fleetd
        .data_dir()
        .join("artifacts/fleet-test-debapp/1.0.0/blob");
    std::fs::write(&blob, b"gone").expect("overwrite the stored blob");
    let d = deploy_deb("1.0.0");
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    assert_eq!(installed_deb_version(), "1.0.0");
    // The app's stdout (dpkg's own output goes to its stderr).
    let log = agent.app_log("fleet-test-debapp");
    assert_eq!(
        log.lines().rfind(|l| l.starts_with("debapp ")),
        Some("debapp 1.0.0"),
        "v1 runs again: {log}"
    );
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Pushes a tar.gz of `files` (path, content) as archive `APP@version` with fleetctl.
fn push_archive(fleetd: &Fleetd, version: &str, files: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    let tgz = dir.path().join("app.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success());
    let (ok, out) = fleetctl(
        fleetd,
        &[
            "artifact",
            "push",
            &tgz.to_string_lossy(),
            "--name",
            APP,
            "--version",
            version,
            "--type",
            "archive",
        ],
    );
    assert!(ok, "{out}");
}

/// Pushes a tar.gz of `files` as archive `APP@version` and registers an application whose
/// runtime names the entry point and the install and pre-start scripts.
fn push_scripted_archive(fleetd: &Fleetd, version: &str, files: &[(&str, &str)]) {
    push_archive(fleetd, version, files);
    let manifest = serde_json::json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": APP, "version": version},
        "spec": {
            "artifacts": [{"name": APP, "version": version, "type": "archive"}],
            "configuration": {"env": {"GREETING": "hello"}},
            "runtime": {
                "entrypoint": "bin/run.sh",
                "install_script": "scripts/install.sh",
                "pre_start_script": "scripts/pre-start.sh"
            }
        }
    });
    support::fleet::register_app(fleetd, &manifest);
}

#[test]
fn archive_install_and_pre_start_scripts_run_on_the_device() {
    let fleetd = Fleetd::start();
    let agent = Agent::start("dev-scripts", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    push_scripted_archive(
        &fleetd,
        "1.0.0",
        &[
            ("bin/run.sh", "#!/bin/sh\necho \"app sees $(cat installed.txt) $(cat started.txt)\"\nexec sleep 600\n"),
            ("scripts/install.sh", "#!/bin/sh\necho \"$GREETING installed\" > installed.txt\n"),
            ("scripts/pre-start.sh", "#!/bin/sh\necho prepared > started.txt\necho pre-start ran >&2\n"),
        ],
    );
    let d = deploy(&fleetd, "1.0.0", &["dev-scripts"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    let ran = wait_until(Duration::from_secs(10), || {
        let log = agent.app_log(APP);
        log.contains("app sees hello installed prepared") && log.contains("pre-start ran")
    });
    assert!(ran, "scripts ran before the app: {}", agent.app_log(APP));

    // A failing install script fails the install with its status and last stderr line.
    push_scripted_archive(
        &fleetd,
        "2.0.0",
        &[
            ("bin/run.sh", "#!/bin/sh\nexec sleep 600\n"),
            (
                "scripts/install.sh",
                "#!/bin/sh\necho 'libfoo missing' >&2\nexit 5\n",
            ),
            ("scripts/pre-start.sh", "#!/bin/sh\n"),
        ],
    );
    deploy(&fleetd, "2.0.0", &["dev-scripts"]);
    let error = wait_error(&fleetd, &agent, "install script");
    assert!(
        error.contains("exit status 5") && error.contains("libfoo missing"),
        "{error}"
    );
}
