//! The simulated fleet: one real MQTT connection (rumqttc `AsyncClient`) per device, all in
//! this process, speaking the agent's side of the protocol and reporting timing events to the
//! benchmark.

use crate::device::{wants, SimDevice};
use fleet_schema::topic::CONTROL_LEVEL;
use fleet_schema::{decode, encode, ControllerStatus, DesiredState, DEFAULT_MAX_PAYLOAD};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// Largest MQTT packet a simulated device sends or accepts.
const MAX_PACKET: usize = 2 * 1024 * 1024;

/// What happened to a device, and when.
#[derive(Debug, Clone, Copy)]
pub struct SimEvent {
    /// Index of the device in the fleet.
    pub device: usize,
    /// What happened.
    pub kind: SimEventKind,
    /// When.
    pub at: Instant,
}

/// The moments the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimEventKind {
    /// First ConnAck of this device.
    Connected,
    /// A desired state with the benchmark's app version arrived.
    DesiredReceived,
    /// The broker acknowledged the status reporting the new version.
    NewVersionAcked,
}

/// Settings and sinks shared by every simulated device.
pub struct FleetShared {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The app the benchmark deploys.
    pub app: String,
    /// The version the benchmark deploys.
    pub version: String,
    /// Where devices report timing events.
    pub events: mpsc::UnboundedSender<SimEvent>,
    /// Connection errors seen by all devices (each is followed by a reconnect).
    pub connection_errors: AtomicU64,
    /// Payloads on `cmd` that did not decode.
    pub bad_payloads: AtomicU64,
}

/// The id of simulated device `index` in a fleet of `n`: `sim-00042`.
pub fn device_id(index: usize, n: usize) -> String {
    let width = n.saturating_sub(1).max(1).to_string().len().max(5);
    format!("sim-{index:0width$}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A small per-device spread (0-2 s) for re-announcing status, without a random generator.
fn spread(index: usize) -> Duration {
    Duration::from_millis((index as u64).wrapping_mul(7919) % 2000)
}

/// Publishes a device's status and numbers each publish in the order it enters the client's
/// queue (the order rumqttc sends them), so the benchmark can find the broker's acknowledgement
/// of one particular status. The lock makes "enqueue + number" atomic for spawned publishers.
struct StatusPublisher {
    client: AsyncClient,
    topic: String,
    requested: std::sync::Mutex<u64>,
}

impl StatusPublisher {
    /// Queues `status` retained at QoS 1; returns its sequence number, or `None` on failure.
    fn publish(&self, status: &fleet_schema::DeviceStatus) -> Option<u64> {
        let bytes = match encode(status) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{}: cannot encode status: {e}", self.topic);
                return None;
            }
        };
        let mut requested = self
            .requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self
            .client
            .try_publish(self.topic.as_str(), QoS::AtLeastOnce, true, bytes)
        {
            Ok(()) => {
                *requested += 1;
                Some(*requested)
            }
            Err(e) => {
                tracing::warn!("{}: publish refused by the client: {e}", self.topic);
                None
            }
        }
    }
}

/// Where the acknowledgement of the measured status publish stands.
#[derive(Default)]
struct AckWatch {
    /// Publishes the client has sent (Outgoing events) on this connection's count.
    sent: u64,
    /// Sequence number of the measured publish, until it is acknowledged.
    target: Option<u64>,
    /// Its packet id, once sent.
    pkid: Option<u16>,
    /// The connection dropped before the ack: count the first ack after reconnecting.
    rearmed: bool,
}

/// Runs device `index` until the task is aborted. `permit` bounds concurrent handshakes and is
/// released on the first ConnAck (or the first failure).
pub async fn run_device(
    index: usize,
    id: String,
    shared: Arc<FleetShared>,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let mut device = SimDevice::new(id);
    let status_topic = format!("fleet/{}/status", device.id());
    let cmd_topic = format!("fleet/{}/cmd", device.id());
    let controller_topic = format!("fleet/{CONTROL_LEVEL}/status");

    let mut opts = MqttOptions::new(
        format!("fleet-agent-{}", device.id()),
        shared.host.clone(),
        shared.port,
    );
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    match encode(&device.offline_will()) {
        Ok(will) => {
            opts.set_last_will(LastWill::new(&status_topic, will, QoS::AtLeastOnce, true));
        }
        Err(e) => tracing::error!("cannot encode the last will of {}: {e}", device.id()),
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 32);

    let mut connected_once = false;
    let mut connected_at_ms = 0;
    let mut ack = AckWatch::default();
    let emit = |kind| {
        // The receiver only goes away when the benchmark is over.
        let _ = shared.events.send(SimEvent {
            device: index,
            kind,
            at: Instant::now(),
        });
    };
    let publisher = Arc::new(StatusPublisher {
        client: client.clone(),
        topic: status_topic,
        requested: std::sync::Mutex::new(0),
    });

    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                permit.take();
                connected_at_ms = now_ms();
                for topic in [&cmd_topic, &controller_topic] {
                    if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                        tracing::warn!("{topic}: subscribe refused by the client: {e}");
                    }
                }
                publisher.publish(&device.status(connected_at_ms));
                if !connected_once {
                    connected_once = true;
                    emit(SimEventKind::Connected);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                if p.payload.is_empty() {
                    continue;
                }
                let desired: DesiredState = match decode(&p.payload, DEFAULT_MAX_PAYLOAD) {
                    Ok(d) => d,
                    Err(e) => {
                        shared.bad_payloads.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("{cmd_topic}: undecodable desired state: {e}");
                        continue;
                    }
                };
                let measured = wants(&desired, &shared.app, &shared.version);
                if let Some(status) = device.on_desired(&desired, now_ms()) {
                    if measured {
                        emit(SimEventKind::DesiredReceived);
                    }
                    if let Some(seq) = publisher.publish(&status).filter(|_| measured) {
                        ack.target = Some(seq);
                        ack.pkid = None;
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == controller_topic => {
                // A controller that connected after our last full status missed it: re-announce,
                // spread over 2 s so a fleet does not answer in one burst.
                let fresh = decode::<ControllerStatus>(&p.payload, DEFAULT_MAX_PAYLOAD)
                    .map(|c| c.online && c.at > connected_at_ms)
                    .unwrap_or(false);
                if fresh {
                    let publisher = Arc::clone(&publisher);
                    let status = device.status(now_ms());
                    tokio::spawn(async move {
                        tokio::time::sleep(spread(index)).await;
                        publisher.publish(&status);
                    });
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                ack.sent += 1;
                if ack.target == Some(ack.sent) {
                    ack.pkid = Some(pkid);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if ack.rearmed || (ack.target.is_some() && ack.pkid == Some(a.pkid)) {
                    ack = AckWatch {
                        sent: ack.sent,
                        ..AckWatch::default()
                    };
                    emit(SimEventKind::NewVersionAcked);
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{}: connection error: {e}", device.id());
                permit.take();
                if ack.target.is_some() {
                    // Unacked publishes are re-sent on reconnect, which breaks the count; the
                    // full status published on reconnect carries the new version anyway.
                    ack.target = None;
                    ack.rearmed = true;
                }
                tokio::time::sleep(Duration::from_millis(200) + spread(index) / 4).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_valid_and_sortable() {
        assert_eq!(device_id(7, 10), "sim-00007");
        assert_eq!(device_id(7, 1_000_000), "sim-000007");
        assert!(fleet_schema::DeviceId::parse(&device_id(0, 1)).is_ok());
        assert!(spread(12345) < Duration::from_secs(2));
    }

    /// Runs one simulated device against a real Mosquitto (skipped where it is not installed)
    /// and plays the controller: the device must report the desired version running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulated_device_speaks_the_agent_protocol() {
        use fleet_schema::{ArtifactRef, ArtifactType, DesiredApp, DeviceStatus};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut children = crate::procs::Children::default();
        let port = match crate::procs::start_mosquitto(&mut children, dir.path()) {
            Ok(port) => port,
            Err(e) if e.to_string().contains("needs the mosquitto binary") => return,
            Err(e) => panic!("mosquitto: {e:#}"),
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(FleetShared {
            host: "127.0.0.1".into(),
            port,
            app: "sim-app".into(),
            version: "1.0.0".into(),
            events: tx,
            connection_errors: AtomicU64::new(0),
            bad_payloads: AtomicU64::new(0),
        });
        let device = tokio::spawn(run_device(0, "sim-00000".into(), shared, None));
        async fn next(events: &mut mpsc::UnboundedReceiver<SimEvent>) -> SimEventKind {
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("event within 10 s")
                .expect("channel open")
                .kind
        }
        assert_eq!(next(&mut events).await, SimEventKind::Connected);

        let (ctl, mut ctl_loop) =
            AsyncClient::new(MqttOptions::new("test-controller", "127.0.0.1", port), 16);
        ctl.subscribe("fleet/sim-00000/status", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let desired = DesiredState {
            device_id: "sim-00000".into(),
            generation: 1,
            apps: vec![DesiredApp {
                name: "sim-app".into(),
                version: "1.0.0".into(),
                artifact: ArtifactRef {
                    name: "sim-app".into(),
                    version: "1.0.0".into(),
                    kind: ArtifactType::Binary,
                    size: 1,
                    sha256: "00".into(),
                    url: "http://127.0.0.1/x".into(),
                    ..Default::default()
                },
                deployment_id: Some("dep-1".into()),
                spec: Default::default(),
                rollout: None,
            }],
            issued_at: 0,
        };
        ctl.publish(
            "fleet/sim-00000/cmd",
            QoS::AtLeastOnce,
            true,
            encode(&desired).expect("encodes"),
        )
        .await
        .expect("publish");
        let watcher = tokio::spawn(async move {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = ctl_loop.poll().await {
                    let s: DeviceStatus = decode(&p.payload, DEFAULT_MAX_PAYLOAD).expect("status");
                    if s.observed_generation == 1 {
                        return s;
                    }
                }
            }
        });
        assert_eq!(next(&mut events).await, SimEventKind::DesiredReceived);
        assert_eq!(next(&mut events).await, SimEventKind::NewVersionAcked);
        let status = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("status within 10 s")
            .expect("watcher");
        assert!(status.online);
        assert_eq!(status.apps[0].version, "1.0.0");
        assert_eq!(status.apps[0].deployment_id.as_deref(), Some("dep-1"));
        device.abort();
    }
}
