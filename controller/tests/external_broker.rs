//! fleetd against a broker it did not start (`--mqtt-url`): nothing may assume the embedded
//! broker. The broker here outlives fleetd, which makes the controller's presence (last will,
//! graceful offline, reconnect announcements) observable.

mod support;

use fleet_broker::EmbeddedBroker;
use fleet_schema::ControllerStatus;
use std::time::Duration;
use support::*;

const SECS: Duration = Duration::from_secs(10);

/// Opens a presence message; it must be signed by the controller's key.
fn presence(f: &Fleetd, payload: &[u8]) -> ControllerStatus {
    f.open_presence(payload)
}

#[test]
fn works_with_an_external_broker_and_reports_presence() {
    let mut broker = EmbeddedBroker::start(fleet_broker::BrokerOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        check: None,
        tls: None,
        limits: fleet_broker::FrontLimits::default(),
        hook: fleet_broker::limits::log_only(),
    })
    .expect("broker");
    broker.serve_front_on_thread().expect("front runs");
    let port = broker.local_addr().port();
    let mut watcher = MqttClient::connect(port, "presence-watcher");
    watcher.subscribe("fleet/_controller/status");

    let mut f = Fleetd::start_external(&external::BrokerRef::plain(port));
    let first = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            presence(&f, &p.payload).online
        })
        .expect("online presence");
    announce(&f, &device_status("ext-1", &[]));

    // SIGKILL: the broker publishes the last will.
    f.kill9();
    watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            !presence(&f, &p.payload).online
        })
        .expect("last will says offline");

    // Restart: online again with a new connection time; state survived.
    f.restart();
    let again = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            presence(&f, &p.payload).online
        })
        .expect("online again");
    assert!(presence(&f, &again.payload).at >= presence(&f, &first.payload).at);
    assert_eq!(get(&f.url("/api/v1/devices/ext-1")).0, 200);

    // SIGTERM: a graceful stop publishes offline itself (a clean disconnect fires no will).
    assert!(f.terminate(), "clean exit; stderr:\n{}", f.stderr());
    let bye = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            !presence(&f, &p.payload).online
        })
        .expect("graceful offline presence");
    assert!(!presence(&f, &bye.payload).online);
    // The offline presence is retained: a tool that looks later learns that fleetd is down.
    let mut late = MqttClient::connect(port, "presence-late");
    late.subscribe("fleet/_controller/status");
    let kept = late
        .wait_for("fleet/_controller/status", SECS, |p| p.retain)
        .expect("a retained presence");
    assert!(
        !presence(&f, &kept.payload).online,
        "the retained presence says offline"
    );
}

#[test]
fn a_taken_mqtt_port_is_a_startup_error_not_a_silent_success() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = taken.local_addr().expect("local addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-listen", "127.0.0.1:0"])
        .arg("--mqtt-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run fleetd");
    assert!(
        !out.status.success(),
        "fleetd must fail when the port is taken"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "error names the address: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fleetd ready"),
        "no ready line"
    );
}
