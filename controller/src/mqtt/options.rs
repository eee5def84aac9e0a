//! The controller's MQTT client options: who it connects as, over which transport, and its
//! signed last will.

use crate::trust::Trust;
use fleet_schema::trust::tokens::CONTROLLER_USERNAME;
use fleet_schema::trust::Stamp;
use fleet_schema::MAX_PACKET_SIZE;
use fleet_schema::{ControllerStatus, MqttUrl, Topic};
use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;

pub use fleet_schema::trust::tokens::CONTROLLER_CLIENT_ID as CLIENT_ID;

/// QoS 1 messages in flight at once (a full republish is thousands of messages).
const INFLIGHT: u16 = 1000;

/// Where and as whom the controller connects.
#[derive(Clone)]
pub struct Connection {
    /// The broker (for the embedded broker: its plain loopback listener).
    pub url: MqttUrl,
    /// User name (`_fleetd` unless the operator set one).
    pub username: String,
    /// Password.
    pub password: String,
    /// TLS client configuration, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({} as {})", self.url, self.username)
    }
}

impl Connection {
    /// The controller's own connection to `url` with its trust state's password.
    pub fn controller(url: MqttUrl, trust: &Trust, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Connection {
            url,
            username: CONTROLLER_USERNAME.to_string(),
            password: trust.mqtt_password().to_string(),
            tls,
        }
    }

    /// Options for `client_id`: credentials, transport, large packets.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, self.url.host.clone(), self.url.port);
        opts.set_credentials(self.username.clone(), self.password.clone())
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        if let Some(tls) = &self.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        opts
    }
}

/// The controller's signed "offline" presence for a connection of `epoch`.
pub fn last_will(trust: &Trust, epoch: u64) -> Option<LastWill> {
    let will = ControllerStatus {
        online: false,
        version: env!("CARGO_PKG_VERSION").to_string(),
        http_url: None,
        at: 0,
    };
    let topic = Topic::ControllerStatus;
    let sealed = fleet_schema::encode(&will)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            fleet_schema::trust::seal(
                fleet_schema::trust::SealParams {
                    topic: &topic.to_string(),
                    signer: trust.key(),
                    to: None,
                    stamp: Stamp::will(epoch),
                    encrypt: None,
                },
                &b,
            )
            .map_err(|e| e.to_string())
        });
    match sealed {
        Ok(payload) => Some(super::wire::last_will(&topic, payload)),
        Err(e) => {
            tracing::error!(error = %e, "cannot seal the controller's last will");
            None
        }
    }
}

/// Options of the controller's bus connection: persistent session, high inflight, and a signed,
/// retained QoS 1 last will saying the controller is offline.
pub fn mqtt_options(conn: &Connection, trust: &Trust) -> MqttOptions {
    let mut opts = conn.options(CLIENT_ID);
    opts.set_clean_session(false).set_inflight(INFLIGHT);
    if let Some(will) = last_will(trust, trust.new_connection()) {
        opts.set_last_will(will);
    }
    opts
}
