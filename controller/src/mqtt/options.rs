//! The controller's MQTT client options.

use crate::config::MqttUrl;
use fleet_schema::{ControllerStatus, Topic};
use rumqttc::{LastWill, MqttOptions, QoS};
use std::time::Duration;

/// The controller's client id; fixed so the broker keeps its persistent session.
pub const CLIENT_ID: &str = "fleetd-controller";

/// Largest MQTT packet sent or received (rumqttc's default of 10 KiB is far too small for
/// desired states and statuses of devices with many apps).
pub const MAX_PACKET_SIZE: usize = 2 * 1024 * 1024;

/// QoS 1 messages in flight at once (a full republish is thousands of messages).
const INFLIGHT: u16 = 1000;

/// Options: persistent session, large packets, high inflight, and a retained QoS 1 last will
/// saying the controller is offline.
pub fn mqtt_options(url: &MqttUrl) -> MqttOptions {
    let mut opts = MqttOptions::new(CLIENT_ID, url.host.clone(), url.port);
    opts.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
        .set_inflight(INFLIGHT);
    let will = ControllerStatus {
        online: false,
        version: env!("CARGO_PKG_VERSION").to_string(),
        http_url: None,
        at: 0,
    };
    match fleet_schema::encode(&will) {
        Ok(payload) => {
            opts.set_last_will(LastWill::new(
                Topic::ControllerStatus.to_string(),
                payload,
                QoS::AtLeastOnce,
                true,
            ));
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the controller's last will"),
    }
    opts
}
