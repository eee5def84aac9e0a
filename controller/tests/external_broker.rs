//! fleetd against a broker it did not start (`--mqtt-url`): nothing may assume the embedded
//! broker. The broker here outlives fleetd, which makes the controller's presence (last will,
//! graceful offline, reconnect announcements) observable.

mod support;

use fleet_broker::EmbeddedBroker;
use fleet_schema::{ControllerStatus, DEFAULT_MAX_PAYLOAD};
use std::time::Duration;
use support::*;

const SECS: Duration = Duration::from_secs(10);

fn presence(payload: &[u8]) -> ControllerStatus {
    fleet_schema::decode(payload, DEFAULT_MAX_PAYLOAD).expect("controller status decodes")
}

#[test]
fn works_with_an_external_broker_and_reports_presence() {
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).expect("broker");
    let port = broker.local_addr().port();
    let mut watcher = MqttClient::connect(port, "presence-watcher");
    watcher.subscribe("fleet/_controller/status");

    let mut f = Fleetd::start_external(&format!("mqtt://127.0.0.1:{port}"));
    let first = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            presence(&p.payload).online
        })
        .expect("online presence");
    announce(&f, &device_status("ext-1", &[]));

    // SIGKILL: the broker publishes the last will.
    f.kill9();
    watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            !presence(&p.payload).online
        })
        .expect("last will says offline");

    // Restart: online again with a new connection time; state survived.
    f.restart();
    let again = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            presence(&p.payload).online
        })
        .expect("online again");
    assert!(presence(&again.payload).at >= presence(&first.payload).at);
    assert_eq!(get(&f.url("/api/v1/devices/ext-1")).0, 200);

    // SIGTERM: a graceful stop publishes offline itself (a clean disconnect fires no will).
    assert!(f.terminate(), "clean exit; stderr:\n{}", f.stderr());
    let bye = watcher
        .wait_for("fleet/_controller/status", SECS, |p| {
            !presence(&p.payload).online
        })
        .expect("graceful offline presence");
    assert!(bye.retain || !bye.payload.is_empty());
}
