//! The command line is a contract with operators and the end-to-end tests: check that bad
//! settings are refused up front with a message naming the problem.

use std::process::Command;

fn agent(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("agent binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_device_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (ok, err) = agent(&[
        "--device-id",
        "_controller",
        "--mqtt-url",
        "mqtt://127.0.0.1:1",
        "--server",
        "http://127.0.0.1:1",
        "--data-dir",
        data,
    ]);
    assert!(!ok);
    assert!(err.contains("invalid device id"), "{err}");
}

#[test]
fn missing_server_url_is_named() {
    let (ok, err) = agent(&[
        "--device-id",
        "dev-1",
        "--mqtt-url",
        "mqtt://127.0.0.1:1",
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!ok);
    assert!(err.contains("server"), "{err}");
}

#[test]
fn missing_broker_url_is_named() {
    let (ok, err) = agent(&["--device-id", "dev-1", "--data-dir", "/nonexistent"]);
    assert!(!ok);
    assert!(err.contains("mqtt-url"), "{err}");
}

#[test]
fn help_lists_the_documented_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .arg("--help")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--device-id",
        "--mqtt-url",
        "--data-dir",
        "--label",
        "--config",
        "--server",
        "--enroll-token-file",
        "--ca",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}
