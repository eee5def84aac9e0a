//! Disconnecting a device whose enrollment was revoked or reset. No standard MQTT operation
//! closes another client's connection, but every broker closes a client's connection when
//! another one connects with the same client id (MQTT 3.1.1, 3.1.4-2). So the controller
//! connects once, with its own credentials, as `fleet-agent-<device>`, and disconnects; the
//! device's reconnect is then refused by the broker's CONNECT check (embedded) or password file
//! (Mosquitto), and anything it still publishes is refused by signature.

use super::options::Connection;
use crate::trust::Trust;
use fleet_schema::trust::tokens::agent_client_id;
use rumqttc::{AsyncClient, Event, Packet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest a takeover may take.
const KICK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until shutdown, disconnecting each device the trust state asks for.
pub async fn run(conn: Connection, trust: Arc<Trust>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = trust.kick_requested.notified() => {}
        }
        for device in trust.take_kicks() {
            tokio::spawn(kick(conn.clone(), device));
        }
    }
}

/// Takes over `device`'s client id and disconnects.
async fn kick(conn: Connection, device: String) {
    let mut opts = conn.options(&agent_client_id(&device));
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let done = tokio::time::timeout(KICK_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.disconnect().await;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    match done {
        Ok(Ok(())) => tracing::info!(device, "disconnected the device from the broker"),
        Ok(Err(e)) => tracing::warn!(device, error = %e, "could not disconnect the device"),
        Err(_) => tracing::warn!(device, "disconnecting the device timed out"),
    }
}
