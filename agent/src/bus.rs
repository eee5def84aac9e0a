//! The MQTT session: connection options (persistent session, last will, 2 MiB packets), the
//! poll loop (reconnects with jittered exponential backoff, which rumqttc does not do itself) and
//! the publisher task. Publishing runs in its own task because `AsyncClient::publish` waits for
//! room in the request channel, which only the poll loop drains: awaiting it inside the poll
//! loop could deadlock.

use crate::backoff::{jitter, Backoff};
use crate::telemetry::spool::Spool;
use fleet_schema::{DeviceId, DeviceStatus, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Largest MQTT packet accepted or sent (payloads are capped at 1 MiB; headroom on top).
pub const MAX_PACKET: usize = 2 * 1024 * 1024;
/// Keep-alive interval: short, so a dead link is noticed (and the will fires) quickly.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// First reconnect delay.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Pause before publishing a changed status, so bursts of changes become one message.
pub const COALESCE: Duration = Duration::from_millis(50);

/// Pause between two slices of the offline backlog on reconnect.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Backlog messages sent per slice (so a reconnect never floods the link or the broker).
pub const DRAIN_BATCH: usize = 20;

/// Longest wait for the broker to close the connection after our DISCONNECT.
const DISCONNECT_DRAIN: Duration = Duration::from_secs(1);

/// What the poll loop reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A ConnAck arrived (new or resumed session).
    Connected,
    /// The connection broke; reconnecting.
    Disconnected,
    /// A message arrived.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// Requests to the publisher task.
#[derive(Debug)]
pub enum PubCmd {
    /// Just connected: subscribe and publish the full status.
    Connected,
    /// Connection lost: hold status publishes until the next connect.
    Disconnected,
    /// Publish the full status again after this delay (controller came online).
    RepublishAfter(Duration),
    /// Publish this offline status, disconnect, then answer.
    Shutdown(Box<DeviceStatus>, oneshot::Sender<()>),
    /// Publish a metrics or log batch (QoS 0), or keep it in the offline backlog.
    Telemetry {
        /// Topic.
        topic: String,
        /// Encoded payload.
        payload: Vec<u8>,
    },
}

/// Sends a telemetry message now if connected and nothing older waits; otherwise queues it
/// (oldest dropped beyond the bounds). Without a backlog, offline messages are lost.
fn send_or_spool(
    client: &AsyncClient,
    spool: Option<&mut Spool>,
    connected: bool,
    topic: String,
    payload: Vec<u8>,
) {
    let backlog = spool.as_ref().is_some_and(|s| !s.index().is_empty());
    if connected && !backlog {
        match client.try_publish(topic.as_str(), QoS::AtMostOnce, false, payload.clone()) {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "request queue full; keeping telemetry"),
        }
    }
    if let Some(s) = spool {
        if let Err(e) = s.push(&topic, &payload) {
            tracing::warn!(error = %e, "cannot write the offline backlog");
        }
    }
}

/// Sends up to [`DRAIN_BATCH`] backlog messages, oldest first.
fn drain_some(client: &AsyncClient, spool: &mut Spool) {
    for _ in 0..DRAIN_BATCH {
        let Some((topic, payload)) = spool.peek() else {
            return;
        };
        if client
            .try_publish(topic.as_str(), QoS::AtMostOnce, false, payload)
            .is_err()
        {
            return;
        }
        spool.pop();
    }
    tracing::debug!(
        left = spool.index().len(),
        dropped_total = spool.index().dropped(),
        "sent part of the offline backlog"
    );
}

/// The offline status used as last will and on graceful shutdown.
pub fn offline_status(device: &DeviceId) -> DeviceStatus {
    DeviceStatus {
        device_id: device.to_string(),
        online: false,
        agent_version: String::new(),
        inventory: None,
        observed_generation: 0,
        apps: Vec::new(),
        reported_at: 0,
    }
}

/// Client options for this device.
pub fn options(device: &DeviceId, host: &str, port: u16) -> MqttOptions {
    let mut opts = MqttOptions::new(format!("fleet-agent-{device}"), host, port);
    opts.set_clean_session(false)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_request_channel_capacity(64);
    match fleet_schema::encode(&offline_status(device)) {
        Ok(will) => {
            opts.set_last_will(LastWill::new(
                Topic::Status(device.clone()).to_string(),
                will,
                QoS::AtLeastOnce,
                true,
            ));
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the last will"),
    }
    opts
}

/// Drives the connection until a graceful disconnect went out, reporting to `events`.
pub async fn poll_loop(mut eventloop: EventLoop, events: mpsc::UnboundedSender<BusEvent>) {
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                connected = true;
                tracing::info!(session_present = ack.session_present, "connected to broker");
                let _ = events.send(BusEvent::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = events.send(BusEvent::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes: closing with its PUBACK unread would
                // reset the connection, and the broker could drop our last messages with it.
                let drain = async { while eventloop.poll().await.is_ok() {} };
                let _ = tokio::time::timeout(DISCONNECT_DRAIN, drain).await;
                tracing::info!("disconnected from broker");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    connected = false;
                    let _ = events.send(BusEvent::Disconnected);
                }
                let delay = jitter(backoff.next_delay(), rand::random::<f64>());
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn publish_status(client: &AsyncClient, topic: &str, status: &DeviceStatus) {
    let mut status = status.clone();
    status.reported_at = now_millis();
    match fleet_schema::encode(&status) {
        Ok(bytes) => {
            if let Err(e) = client.publish(topic, QoS::AtLeastOnce, true, bytes).await {
                tracing::warn!(error = %e, "cannot queue status publish");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode status"),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Publishes the status (retained, QoS 1) on every connect, on every change while connected
/// (coalesced) and when asked; subscribes on every connect; sends telemetry, keeping it in the
/// backlog while offline and sending the backlog in paced slices after the status on reconnect.
pub async fn publisher(
    client: AsyncClient,
    device: DeviceId,
    mut status: watch::Receiver<DeviceStatus>,
    mut cmds: mpsc::UnboundedReceiver<PubCmd>,
    mut spool: Option<Spool>,
) {
    let status_topic = Topic::Status(device.clone()).to_string();
    let cmd_topic = Topic::Cmd(device.clone()).to_string();
    let req_topic = Topic::Req(device.clone()).to_string();
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let controller_topic = Topic::ControllerStatus.to_string();
    let mut connected = false;
    let mut republish_at: Option<Instant> = None;
    loop {
        let wake = republish_at;
        let backlog = connected && spool.as_ref().is_some_and(|s| !s.index().is_empty());
        tokio::select! {
            _ = drain.tick(), if backlog => {
                if let Some(s) = spool.as_mut() {
                    drain_some(&client, s);
                }
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                if connected {
                    tokio::time::sleep(COALESCE).await;
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &status_topic, &current).await;
                } else {
                    // Seen: the full status goes out on the next connect.
                    status.borrow_and_update();
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                republish_at = None;
                if connected {
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &status_topic, &current).await;
                }
            }
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(PubCmd::Connected) => {
                    connected = true;
                    for topic in [&cmd_topic, &controller_topic, &req_topic] {
                        if let Err(e) = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await {
                            tracing::warn!(%topic, error = %e, "cannot queue subscribe");
                        }
                    }
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &status_topic, &current).await;
                }
                Some(PubCmd::Disconnected) => connected = false,
                Some(PubCmd::RepublishAfter(delay)) => {
                    let at = Instant::now() + delay;
                    republish_at = Some(republish_at.map_or(at, |t| t.min(at)));
                }
                Some(PubCmd::Shutdown(offline, done)) => {
                    publish_status(&client, &status_topic, &offline).await;
                    if let Err(e) = client.disconnect().await {
                        tracing::warn!(error = %e, "cannot queue disconnect");
                    }
                    let _ = done.send(());
                    return;
                }
                Some(PubCmd::Telemetry { topic, payload }) => {
                    send_or_spool(&client, spool.as_mut(), connected, topic, payload);
                }
            }
        }
    }
}
