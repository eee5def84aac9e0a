//! The MQTT session: connection options (the device's credentials, TLS, persistent session,
//! a signed last will, 2 MiB packets), the poll loop (reconnects with jittered exponential
//! backoff, which rumqttc does not do itself, with a new signing epoch and last will for every
//! connection) and the publisher task, which seals everything it sends with the device key.
//! Publishing runs in its own task because `AsyncClient::publish` waits for room in the request
//! channel, which only the poll loop drains: awaiting it inside the poll loop could deadlock.

use crate::identity::signer::Signer;
use crate::telemetry::spool::Spool;
use crate::wire;
use fleet_schema::backoff::{jitter, Backoff};
use fleet_schema::trust::tokens::agent_client_id;
use fleet_schema::{DeviceId, DeviceStatus, MqttUrl, Subscription, Topic, MAX_PACKET_SIZE};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, TlsConfiguration, Transport,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

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

/// A connection that lasted this long resets the reconnect backoff; one that breaks sooner
/// keeps backing off (a broker that drops us right after CONNACK must not become a loop).
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Consecutive refused connections after which the agent asks to enroll again (its
/// credentials may have been rotated, or the device reset by an operator).
pub const REFUSALS_BEFORE_REENROLL: u32 = 3;

/// What the poll loop reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A ConnAck arrived (new or resumed session).
    Connected,
    /// The connection broke; reconnecting.
    Disconnected,
    /// The broker refused this device's credentials several times in a row.
    CredentialsRefused,
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
    /// Publish a metrics or log batch (as its topic's contract says: QoS 0, not retained), or
    /// keep it in the offline backlog.
    Telemetry {
        /// Topic.
        topic: Topic,
        /// Encoded payload.
        payload: Vec<u8>,
    },
}

/// Sends a telemetry message now if connected and nothing older waits; otherwise queues it
/// (oldest dropped beyond the bounds). Without a backlog, offline messages are lost.
fn send_or_spool(
    client: &AsyncClient,
    signer: &Signer,
    spool: Option<&mut Spool>,
    connected: bool,
    topic: Topic,
    payload: Vec<u8>,
) {
    let name = topic.to_string();
    let backlog = spool.as_ref().is_some_and(|s| !s.index().is_empty());
    if connected && !backlog {
        match signer.seal(&name, &payload) {
            Ok(sealed) => match wire::try_publish(client, &topic, sealed) {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "request queue full; keeping telemetry"),
            },
            Err(e) => tracing::error!(error = %e, "cannot seal telemetry"),
        }
    }
    if let Some(s) = spool {
        if let Err(e) = s.push(&name, &payload) {
            tracing::warn!(error = %e, "cannot write the offline backlog");
        }
    }
}

/// Sends up to [`DRAIN_BATCH`] backlog messages, oldest first, sealed now (with the current
/// connection's stamps, so fleetd accepts them after the reconnect).
fn drain_some(client: &AsyncClient, signer: &Signer, spool: &mut Spool) {
    for _ in 0..DRAIN_BATCH {
        let Some((name, payload)) = spool.peek() else {
            return;
        };
        let topic = match Topic::parse(&name) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "backlog message on a foreign topic; dropping it");
                spool.pop();
                continue;
            }
        };
        let sealed = match signer.seal(&name, &payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot seal backlog message; dropping it");
                spool.pop();
                continue;
            }
        };
        if wire::try_publish(client, &topic, sealed).is_err() {
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
        refused: None,
    }
}

/// The device's MQTT credentials (the password is a secret: never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (the device id).
    pub username: String,
    /// Password from enrollment.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.username)
    }
}

/// Where and how this device connects.
#[derive(Clone)]
pub struct Session {
    /// This device.
    pub device: DeviceId,
    /// The broker.
    pub url: MqttUrl,
    /// TLS client configuration, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Seals everything published.
    pub signer: Arc<Signer>,
}

/// The signed offline status for connection `epoch`.
fn last_will(device: &DeviceId, signer: &Signer, epoch: u64) -> Option<LastWill> {
    let topic = Topic::Status(device.clone());
    let sealed = fleet_schema::encode(&offline_status(device))
        .map_err(|e| e.to_string())
        .and_then(|b| {
            signer
                .seal_will(&topic.to_string(), epoch, &b)
                .map_err(|e| e.to_string())
        });
    match sealed {
        Ok(will) => Some(wire::last_will(&topic, will)),
        Err(e) => {
            tracing::error!(error = %e, "cannot seal the last will");
            None
        }
    }
}

/// Client options for this device's first connection.
pub fn options(session: &Session, creds: &Credentials) -> MqttOptions {
    let mut opts = MqttOptions::new(
        agent_client_id(session.device.as_str()),
        session.url.host.clone(),
        session.url.port,
    );
    opts.set_clean_session(false)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
        .set_request_channel_capacity(64)
        .set_credentials(creds.username.clone(), creds.password.clone());
    if let Some(tls) = &session.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let epoch = session.signer.new_connection(now_millis());
    if let Some(will) = last_will(&session.device, &session.signer, epoch) {
        opts.set_last_will(will);
    }
    opts
}

/// True for errors that mean "the broker refused these credentials": a ConnAck refusal, or a
/// broker that closes the connection instead of answering the CONNECT (rumqttd).
fn refused_credentials(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::ConnectionRefused(code) => matches!(
            code,
            ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::BadClientId
        ),
        ConnectionError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        ),
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => true,
        ConnectionError::MqttState(rumqttc::StateError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

/// The size of a packet the broker sent above [`MAX_PACKET_SIZE`]: rumqttc refuses to read it and
/// drops the connection, and the broker would send it again from the session on every
/// reconnect (a poisoned session).
pub fn oversized_incoming(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

/// Drives the connection until a graceful disconnect went out, reporting to `events`. Before
/// every reconnect it starts a new signing epoch (with its last will) and takes the newest
/// credentials from `creds` (a re-enrollment may have changed them).
pub async fn poll_loop(
    mut eventloop: EventLoop,
    session: Session,
    mut creds: watch::Receiver<Credentials>,
    events: mpsc::UnboundedSender<BusEvent>,
) {
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut connected = false;
    let mut connected_at: Option<Instant> = None;
    let mut refusals = 0u32;
    let mut oversized = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                refusals = 0;
                connected = true;
                connected_at = Some(Instant::now());
                tracing::info!(session_present = ack.session_present, "connected to broker");
                // Only the connection right after an oversized packet starts clean.
                eventloop.mqtt_options.set_clean_session(false);
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
                let was_connected = connected;
                if connected {
                    connected = false;
                    let _ = events.send(BusEvent::Disconnected);
                }
                if !was_connected && refused_credentials(&e) {
                    refusals += 1;
                    // Every refusal from the third on: the daemon spaces the attempts.
                    if refusals >= REFUSALS_BEFORE_REENROLL {
                        let _ = events.send(BusEvent::CredentialsRefused);
                    }
                } else {
                    refusals = 0;
                }
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
                {
                    backoff.reset();
                }
                if let Some(size) = oversized_incoming(&e) {
                    // Drop the session that holds it; the retained copy is fleetd's to repair.
                    oversized += 1;
                    eventloop.mqtt_options.set_clean_session(true);
                    if oversized <= 3 || oversized.is_multiple_of(100) {
                        tracing::warn!(size, limit = MAX_PACKET_SIZE, count = oversized, "the broker sent a packet above the limit; reconnecting with a clean session");
                    }
                }
                let delay = jitter(backoff.next_delay(), rand::random::<f64>());
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
                tokio::time::sleep(delay).await;
                if creds.has_changed().unwrap_or(false) {
                    let c = creds.borrow_and_update().clone();
                    eventloop
                        .mqtt_options
                        .set_credentials(c.username, c.password);
                    refusals = 0;
                }
                let epoch = session.signer.new_connection(now_millis());
                if let Some(will) = last_will(&session.device, &session.signer, epoch) {
                    eventloop.mqtt_options.set_last_will(will);
                }
            }
        }
    }
}

async fn publish_status(
    client: &AsyncClient,
    signer: &Signer,
    topic: &Topic,
    status: &DeviceStatus,
) {
    let mut status = status.clone();
    status.reported_at = now_millis();
    let sealed = fleet_schema::encode(&status)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            signer
                .seal(&topic.to_string(), &b)
                .map_err(|e| e.to_string())
        });
    match sealed {
        Ok(bytes) => {
            if let Err(e) = wire::publish(client, topic, bytes).await {
                tracing::warn!(error = %e, "cannot queue status publish");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot seal status"),
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
    signer: Arc<Signer>,
    mut status: watch::Receiver<DeviceStatus>,
    mut cmds: mpsc::UnboundedReceiver<PubCmd>,
    mut spool: Option<Spool>,
) {
    let status_topic = Topic::Status(device.clone());
    let subscriptions = [
        Subscription::topic(&Topic::Cmd(device.clone())),
        Subscription::topic(&Topic::ControllerStatus),
        Subscription::topic(&Topic::Req(device.clone())),
    ];
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = false;
    let mut republish_at: Option<Instant> = None;
    loop {
        let wake = republish_at;
        let backlog = connected && spool.as_ref().is_some_and(|s| !s.index().is_empty());
        tokio::select! {
            _ = drain.tick(), if backlog => {
                if let Some(s) = spool.as_mut() {
                    drain_some(&client, &signer, s);
                }
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                if connected {
                    tokio::time::sleep(COALESCE).await;
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &signer, &status_topic, &current).await;
                } else {
                    // Seen: the full status goes out on the next connect.
                    status.borrow_and_update();
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                republish_at = None;
                if connected {
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &signer, &status_topic, &current).await;
                }
            }
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(PubCmd::Connected) => {
                    connected = true;
                    for sub in &subscriptions {
                        if let Err(e) = wire::subscribe(&client, sub).await {
                            tracing::warn!(topic = sub.filter(), error = %e, "cannot queue subscribe");
                        }
                    }
                    let current = status.borrow_and_update().clone();
                    publish_status(&client, &signer, &status_topic, &current).await;
                }
                Some(PubCmd::Disconnected) => connected = false,
                Some(PubCmd::RepublishAfter(delay)) => {
                    let at = Instant::now() + delay;
                    republish_at = Some(republish_at.map_or(at, |t| t.min(at)));
                }
                Some(PubCmd::Shutdown(offline, done)) => {
                    publish_status(&client, &signer, &status_topic, &offline).await;
                    if let Err(e) = client.disconnect().await {
                        tracing::warn!(error = %e, "cannot queue disconnect");
                    }
                    let _ = done.send(());
                    return;
                }
                Some(PubCmd::Telemetry { topic, payload }) => {
                    send_or_spool(&client, &signer, spool.as_mut(), connected, topic, payload);
                }
            }
        }
    }
}
