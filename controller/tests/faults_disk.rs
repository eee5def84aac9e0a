//! Fault suite, full disks: the agent's data directory and fleetd's data directory each live
//! on a small tmpfs the test fills. The device's disk fills during a download and during an
//! install; fleetd's during an upload and while a deployment is created. Every failure names
//! the missing space, nothing half-done is left behind or runs, the running version keeps
//! running, and once space is freed everything completes. Each recovery time is printed
//! (`FAULT-RECOVERY ...`) for docs/faults.md.

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{deployment, wait_deployment, wait_online};
use support::recovery::Recovery;
use support::tmpfs::Tmpfs;
use support::{get, multipart, parse_json, post, post_json, upload, wait_until, Fleetd};

const APP: &str = "diskapp";

/// A script app of about `pad` bytes: it sleeps, and carries padding it never reads.
fn script_app(version: &str, pad: usize) -> Vec<u8> {
    let mut bytes = format!("#!/bin/sh\necho {version}\nexec sleep 600\n").into_bytes();
    bytes.extend(std::iter::repeat_n(b'#', pad));
    bytes
}

fn push_binary(fleetd: &Fleetd, version: &str, pad: usize) {
    let (status, body) = upload(fleetd, APP, version, &script_app(version, pad));
    assert_eq!(status, 201, "upload {version}: {body}");
}

/// An archive that unpacks to `unpacked` bytes (zeros, so it downloads small), registered with
/// its entry point.
fn push_archive(fleetd: &Fleetd, version: &str, unpacked: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::write(root.join("bin/run.sh"), "#!/bin/sh\nexec sleep 600\n").expect("run.sh");
    std::fs::write(root.join("data.bin"), vec![0u8; unpacked]).expect("data");
    let tgz = dir.path().join("a.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok);
    let bytes = std::fs::read(&tgz).expect("archive");
    let meta =
        json!({"name": APP, "version": version, "platform": "linux/amd64", "type": "archive"});
    let (ct, body) = multipart(&[
        ("file", Some("a.tar.gz"), &bytes),
        ("metadata", None, meta.to_string().as_bytes()),
    ]);
    let (status, text) = post(&fleetd.url("/api/v1/artifacts"), &ct, &body);
    assert_eq!(status, 201, "upload {version}: {text}");
    support::fleet::register_app(
        fleetd,
        &json!({
            "apiVersion": "fleet.v1", "kind": "Application",
            "metadata": {"name": APP, "version": version},
            "spec": {"artifacts": [{"name": APP, "version": version, "type": "archive"}],
                     "runtime": {"entrypoint": "bin/run.sh"}}
        }),
    );
}

fn create_deployment(fleetd: &Fleetd, version: &str, device: &str) -> (u16, Value) {
    post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({"application": APP, "version": version,
                "strategy": {"type": "all-at-once"}, "target": {"devices": [device]}}),
    )
}

fn deploy(fleetd: &Fleetd, version: &str, device: &str) -> String {
    let (status, body) = create_deployment(fleetd, version, device);
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_string()
}

fn app(fleetd: &Fleetd, device: &str) -> Value {
    let (_, body) = get(&fleetd.url(&format!("/api/v1/devices/{device}")));
    parse_json(&body)["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == APP).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the device reports an error for the app naming the missing space; returns it.
fn wait_no_space(fleetd: &Fleetd, agent: &Agent) -> String {
    let mut last = Value::Null;
    let named = wait_until(Duration::from_secs(60), || {
        last = app(fleetd, &agent.device_id);
        last["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("no space"))
    });
    assert!(
        named,
        "the device names the full disk: {last:#}\n{}",
        agent.log()
    );
    last["last_error"].as_str().unwrap_or_default().to_string()
}

/// Waits until the device runs `version` and the deployment counts it as succeeded. (The
/// deployment itself failed when the device reported the full disk: the agent treats local
/// disk trouble as its verdict, then retries, so the device converges once space is back.)
fn wait_converged(fleetd: &Fleetd, agent: &Agent, id: &str, version: &str) {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(60), || {
        last = app(fleetd, &agent.device_id);
        last["version"] == version
            && last["phase"] == "running"
            && deployment(fleetd, id)["devices"][&agent.device_id]["state"] == "succeeded"
    });
    assert!(
        ok,
        "the device converged on {version}: {last:#}\n{}",
        agent.log()
    );
}

#[test]
fn the_agents_disk_full_during_a_download_and_an_install_fails_clearly_and_recovers() {
    let fleetd = Fleetd::start();
    // Declared before the agent so that it is unmounted only after the agent and its apps
    // stopped (drops run in reverse order).
    let mut mount = None;
    let mut agent = Agent::start_prepared("disk-1", &fleetd.access(), &[], |dir| {
        mount = Tmpfs::mount(dir, 24);
    });
    let Some(disk) = mount.as_ref() else {
        agent.stop();
        return;
    };
    wait_online(&fleetd, &[&agent]);
    push_binary(&fleetd, "1.0.0", 1024);
    let d1 = deploy(&fleetd, "1.0.0", "disk-1");
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);

    // Download: 6 MiB to fetch, 1 MiB free.
    push_binary(&fleetd, "2.0.0", 6 << 20);
    disk.fill_leaving(1 << 20);
    let d2 = deploy(&fleetd, "2.0.0", "disk-1");
    let error = wait_no_space(&fleetd, &agent);
    let now = app(&fleetd, "disk-1");
    assert_eq!(
        now["running_version"], "1.0.0",
        "v1 keeps running ({error}): {now:#}"
    );
    assert!(
        agent.is_running(),
        "the agent survives a full disk:\n{}",
        agent.log()
    );
    // A full disk is trouble the agent retries, not its verdict on the version.
    let state = deployment(&fleetd, &d2)["devices"]["disk-1"]["state"].clone();
    assert_ne!(state, "failed", "no space is not a final failure: {error}");
    disk.free();
    let clock = Recovery::start("agent disk full during a download");
    wait_converged(&fleetd, &agent, &d2, "2.0.0");
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    clock.done("the device runs the new version");

    // Install: the archive downloads small and unpacks to 6 MiB, 2 MiB free.
    push_archive(&fleetd, "3.0.0", 6 << 20);
    disk.fill_leaving(2 << 20);
    let d3 = deploy(&fleetd, "3.0.0", "disk-1");
    let error = wait_no_space(&fleetd, &agent);
    let now = app(&fleetd, "disk-1");
    assert_eq!(
        now["running_version"], "2.0.0",
        "v2 keeps running ({error}): {now:#}"
    );
    assert!(
        !agent
            .data_dir()
            .join("apps")
            .join(APP)
            .join("3.0.0")
            .exists(),
        "no half-installed 3.0.0"
    );
    assert!(
        agent.is_running(),
        "the agent survives a full disk:\n{}",
        agent.log()
    );
    let state = deployment(&fleetd, &d3)["devices"]["disk-1"]["state"].clone();
    assert_ne!(state, "failed", "no space is not a final failure: {error}");
    disk.free();
    let clock = Recovery::start("agent disk full during an install");
    wait_converged(&fleetd, &agent, &d3, "3.0.0");
    wait_deployment(&fleetd, &d3, "succeeded", &[&agent]);
    clock.done("the device runs the new version");
    assert_eq!(app(&fleetd, "disk-1")["phase"], "running");
    agent.stop();
}

/// Uploads `APP@version` over a raw connection that sends the whole body while reading the
/// answer, so an answer fleetd gives before it has read everything (a full disk) is seen even
/// though fleetd then closes the connection; returns the status (None: no answer) and body.
fn upload_raw(fleetd: &Fleetd, version: &str, file: &[u8]) -> (Option<u16>, String) {
    let meta =
        json!({"name": APP, "version": version, "platform": "linux/amd64", "type": "binary"});
    let (ct, body) = multipart(&[
        ("metadata", None, meta.to_string().as_bytes()),
        ("file", Some(APP), file),
    ]);
    let addr = fleetd.http.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect to fleetd");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut request = format!(
        "POST /api/v1/artifacts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        support::admin_token(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut writer = conn.try_clone().expect("clone the connection");
    // fleetd may stop reading and close early: write errors are expected then.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// Staged uploads left in fleetd's store.
fn staged(fleetd: &Fleetd) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(fleetd.data_dir().join("artifacts").join(".tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn fleetds_disk_full_during_an_upload_and_a_deployment_fails_clearly_and_recovers() {
    let mut mount = None;
    let fleetd = Fleetd::start_prepared(&[], |dir| mount = Tmpfs::mount(dir, 48));
    let Some(disk) = mount.as_ref() else {
        return;
    };
    let mut device = support::announce(&fleetd, &support::device_status("fdisk-1", &[]));
    device.subscribe_cmd();
    push_binary(&fleetd, "1.0.0", 1024);
    let listing = get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/versions")));

    // Upload: 8 MiB into 1 MiB of space.
    disk.fill_leaving(1 << 20);
    let (status, body) = upload_raw(&fleetd, "2.0.0", &script_app("2.0.0", 8 << 20));
    assert!(
        status.is_some_and(|s| s >= 400),
        "a full store refuses the upload with an answer: {status:?} {body}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || fleetd
            .stderr()
            .contains("No space left on device")),
        "fleetd's log names the full disk ({body}):\n{}",
        fleetd.stderr()
    );
    assert!(
        staged(&fleetd).is_empty(),
        "no orphan staged upload: {:?}",
        staged(&fleetd)
    );
    assert_eq!(
        get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/versions"))),
        listing,
        "the artifact list is unchanged"
    );
    disk.free();
    let clock = Recovery::start("fleetd disk full during an upload");
    let (status, body) = upload(&fleetd, APP, "2.0.0", &script_app("2.0.0", 8 << 20));
    assert_eq!(
        status, 201,
        "the upload succeeds once space is back: {body}"
    );
    clock.done("the same upload succeeded");

    // Commit: room for the staged blob and its version directory, none for its metadata
    // (the directory already holds the blob when meta.json is written).
    let file = script_app("3.0.0", 1 << 20);
    disk.fill_inodes_leaving(2);
    let (status, body) = upload_raw(&fleetd, "3.0.0", &file);
    assert!(
        status.is_some_and(|s| s >= 400),
        "no room for the metadata refuses the upload: {status:?} {body}"
    );
    let version_dir = fleetd.data_dir().join("artifacts").join(APP).join("3.0.0");
    assert!(
        !version_dir.join("blob").exists(),
        "no orphan blob without metadata in {}",
        version_dir.display()
    );
    disk.free();
    let clock = Recovery::start("fleetd disk full while an upload is committed");
    let (status, body) = upload(&fleetd, APP, "3.0.0", &file);
    assert_eq!(
        status, 201,
        "the upload succeeds once space is back: {body}"
    );
    clock.done("the same upload succeeded");

    // Deployment: no space at all while it is created.
    disk.fill_leaving(0);
    let (status, body) = create_deployment(&fleetd, "1.0.0", "fdisk-1");
    assert_eq!(
        status, 507,
        "a full database refuses the deployment: {body}"
    );
    assert!(
        fleetd
            .stderr()
            .contains("database error: I/O error: No space left on device"),
        "fleetd's log names the full disk:\n{}",
        fleetd.stderr()
    );
    disk.free();
    let clock = Recovery::start("fleetd disk full while a deployment is created");
    // redb refuses every operation after an I/O error until the file is opened again: fleetd
    // used to answer 500 ("Previous I/O error occurred") to every write until restarted.
    let (status, body) = create_deployment(&fleetd, "1.0.0", "fdisk-1");
    assert_eq!(
        status,
        201,
        "once space is back the deployment is created: {body}\n{}",
        fleetd.stderr()
    );
    let id = body["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut got = false;
    while !got && std::time::Instant::now() < deadline {
        got = device
            .next_desired(Duration::from_secs(1))
            .is_some_and(|d| d.apps.iter().any(|a| a.name == APP && a.version == "1.0.0"));
    }
    assert!(
        got,
        "the device got the deployment; stderr:\n{}",
        fleetd.stderr()
    );
    assert_eq!(deployment(&fleetd, &id)["state"], "in-progress");
    clock.done("the device received the desired state");
}

#[test]
fn a_full_store_answers_an_upload_naming_the_missing_space() {
    let mut mount = None;
    let fleetd = Fleetd::start_prepared(&[], |dir| mount = Tmpfs::mount(dir, 48));
    let Some(disk) = mount.as_ref() else {
        return;
    };
    disk.fill_leaving(1 << 20);
    let (status, body) = upload_raw(&fleetd, "2.0.0", &script_app("2.0.0", 8 << 20));
    assert_eq!(status, Some(507), "{body}");
    assert!(body.to_lowercase().contains("no space"), "{body}");
}
