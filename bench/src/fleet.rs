//! The simulated fleet: one real MQTT connection (rumqttc `AsyncClient`) per device, all in
//! this process, speaking the agent's side of the protocol and reporting timing events to the
//! benchmark.

use crate::conn_errors::ErrorTally;
use crate::device::{wants, SimDevice};
use crate::publish::{AckWatch, StatusPublisher};
use fleet_schema::trust::device::DeviceEnd;
use fleet_schema::{decode, encode, ControllerStatus, DesiredState, DEFAULT_MAX_PAYLOAD};
use fleet_schema::{DeviceId, Subscription, Topic, MAX_PACKET_SIZE};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

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
    /// The version the benchmark deploys now (a second round deploys another).
    version: std::sync::RwLock<String>,
    /// Where devices report timing events.
    pub events: mpsc::UnboundedSender<SimEvent>,
    /// MQTT keep-alive of every device.
    pub keep_alive: Duration,
    /// How long a device waits for TCP connect plus ConnAck (and for a write to flush) before
    /// it gives up and reconnects. rumqttc's default, 5 s, is far too short for a broker
    /// accepting thousands of connections on a loaded machine: the abandoned CONNECT is still
    /// processed later, takes over the client id, and the broker drops the device's live
    /// connection (with any acknowledgement in flight on it).
    pub connect_timeout: Duration,
    /// Connection errors seen by all devices (each is followed by a reconnect), by kind.
    pub errors: ErrorTally,
    /// Payloads on `cmd` that did not decode.
    pub bad_payloads: AtomicU64,
    /// Metrics reports (`fleet-sim --scrape`).
    pub metrics: crate::scrape::MetricsFlow,
    /// Disconnections and log traffic of the soak mode (`fleet-sim --soak`).
    pub churn: crate::soak::Churn,
}

impl FleetShared {
    /// Shared settings for a fleet deploying `app` at `version` through the broker at
    /// `host:port`, with rumqttc's keep-alive and connection timeout set as given.
    pub fn new(
        (host, port): (String, u16),
        (app, version): (&str, &str),
        events: mpsc::UnboundedSender<SimEvent>,
        keep_alive: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            host,
            port,
            app: app.into(),
            version: std::sync::RwLock::new(version.into()),
            events,
            keep_alive,
            connect_timeout,
            errors: ErrorTally::default(),
            bad_payloads: AtomicU64::new(0),
            metrics: crate::scrape::MetricsFlow::default(),
            churn: crate::soak::Churn::default(),
        }
    }
}

impl FleetShared {
    /// The version under measurement.
    pub fn version(&self) -> String {
        self.version
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Measures the deployment of `version` from now on.
    pub fn set_version(&self, version: &str) {
        let mut v = self.version.write().unwrap_or_else(|p| p.into_inner());
        *v = version.to_string();
    }
}

/// The id of simulated device `index` in a fleet of `n`: `sim-00042`.
pub fn device_id(index: usize, n: usize) -> String {
    let width = n.saturating_sub(1).max(1).to_string().len().max(5);
    format!("sim-{index:0width$}")
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A small per-device spread (0-2 s) for re-announcing status, without a random generator.
fn spread(index: usize) -> Duration {
    Duration::from_millis((index as u64).wrapping_mul(7919) % 2000)
}

/// The sealed last will of `device` for the current connection of `end`.
fn last_will(device: &SimDevice, end: &DeviceEnd, topic: &Topic) -> Option<LastWill> {
    let sealed = encode(&device.offline_will())
        .map_err(|e| e.to_string())
        .and_then(|b| {
            end.seal_will(&topic.to_string(), &b)
                .map_err(|e| e.to_string())
        });
    match sealed {
        Ok(will) => Some(crate::wire::last_will(topic, will)),
        Err(e) => {
            tracing::error!("cannot seal the last will of {}: {e}", device.id());
            None
        }
    }
}

/// Runs device `index` (enrolled as `end`) until the task is aborted. `permit` bounds
/// concurrent handshakes and is released on the first ConnAck (or the first failure).
pub async fn run_device(
    index: usize,
    id: String,
    mut end: DeviceEnd,
    shared: Arc<FleetShared>,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let device_id = match DeviceId::parse(&id) {
        Ok(d) => d,
        Err(e) => return tracing::error!("simulated device {id:?}: {e}"),
    };
    let device_state = SimDevice::new(id);
    let status_topic = Topic::Status(device_id.clone());
    let subscriptions = [
        Subscription::topic(&Topic::Cmd(device_id.clone())),
        Subscription::topic(&Topic::ControllerStatus),
    ];
    let cmd_topic = Topic::Cmd(device_id).to_string();
    let controller_topic = Topic::ControllerStatus.to_string();

    let mut opts = MqttOptions::new(
        format!("fleet-agent-{}", device_state.id()),
        shared.host.clone(),
        shared.port,
    );
    opts.set_clean_session(false);
    opts.set_keep_alive(shared.keep_alive);
    opts.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    opts.set_credentials(
        end.enrolled().mqtt_username.clone(),
        end.enrolled().mqtt_password.clone(),
    );
    end.new_connection(now_ms());
    if let Some(will) = last_will(&device_state, &end, &status_topic) {
        opts.set_last_will(will);
    }
    let mut device = device_state;
    let (client, mut eventloop) = AsyncClient::new(opts, 32);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(shared.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(network);

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
    let publisher = Arc::new(StatusPublisher::new(
        client.clone(),
        status_topic.clone(),
        end,
    ));

    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                permit.take();
                connected_at_ms = now_ms();
                for sub in &subscriptions {
                    if let Err(e) = crate::wire::try_subscribe(&client, sub) {
                        tracing::warn!("{}: subscribe refused by the client: {e}", sub.filter());
                    }
                }
                publisher.publish(&device.status(connected_at_ms));
                shared.churn.register(index, &client);
                if !connected_once {
                    connected_once = true;
                    emit(SimEventKind::Connected);
                    if shared.metrics.enabled() {
                        tokio::spawn(crate::scrape::report(
                            index,
                            device.id().to_string(),
                            client.clone(),
                            Arc::clone(&publisher),
                            Arc::clone(&shared),
                        ));
                    }
                    if shared.churn.enabled() {
                        tokio::spawn(crate::soak::report_logs(
                            index,
                            device.id().to_string(),
                            client.clone(),
                            Arc::clone(&publisher),
                        ));
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                if p.payload.is_empty() {
                    continue;
                }
                let opened = publisher.with_end(|end| end.open(&cmd_topic, &p.payload, true));
                let desired: Result<DesiredState, String> = opened
                    .map_err(|e| e.to_string())
                    .and_then(|o| decode(&o.body, DEFAULT_MAX_PAYLOAD).map_err(|e| e.to_string()));
                let desired = match desired {
                    Ok(d) => d,
                    Err(e) => {
                        shared.bad_payloads.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("{cmd_topic}: refused desired state: {e}");
                        continue;
                    }
                };
                let measured = wants(&desired, &shared.app, &shared.version());
                if let Some(status) = device.on_desired(&desired, now_ms()) {
                    if measured {
                        emit(SimEventKind::DesiredReceived);
                    }
                    if let Some(seq) = publisher.publish(&status).filter(|_| measured) {
                        ack.measure(seq);
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == controller_topic => {
                // A controller that connected after our last full status missed it: re-announce,
                // spread over 2 s so a fleet does not answer in one burst.
                let fresh = publisher
                    .with_end(|end| end.open(&controller_topic, &p.payload, false))
                    .ok()
                    .and_then(|o| decode::<ControllerStatus>(&o.body, DEFAULT_MAX_PAYLOAD).ok())
                    .is_some_and(|c| c.online && c.at > connected_at_ms);
                if fresh {
                    let publisher = Arc::clone(&publisher);
                    let status = device.status(now_ms());
                    tokio::spawn(async move {
                        tokio::time::sleep(spread(index)).await;
                        publisher.publish(&status);
                    });
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ack.on_sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if ack.on_ack(a.pkid) {
                    emit(SimEventKind::NewVersionAcked);
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.errors.record(connected_once, &e);
                tracing::debug!("{}: connection error: {e}", device.id());
                permit.take();
                ack.on_disconnect();
                if let Some(until) = shared.churn.offline_until(index) {
                    tokio::time::sleep_until(until.into()).await;
                }
                tokio::time::sleep(Duration::from_millis(200) + spread(index) / 4).await;
                // The next connection gets a new epoch and its own last will.
                let will = publisher.with_end(|end| {
                    end.new_connection(now_ms());
                    last_will(&device, end, &status_topic)
                });
                if let Some(will) = will {
                    eventloop.mqtt_options.set_last_will(will);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

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
        let Some(broker) = fleet_testkit::Mosquitto::start(fleet_testkit::MosquittoAuth::Open)
        else {
            return;
        };
        let port = broker.port;
        let (tx, mut events) = mpsc::unbounded_channel();
        let shared: Arc<FleetShared> = Arc::new(FleetShared::new(
            ("127.0.0.1".into(), port),
            ("sim-app", "1.0.0"),
            tx,
            Duration::from_secs(60),
            Duration::from_secs(30),
        ));
        // Enrollment done in-process: a controller key, the device's request, the answer.
        use fleet_schema::trust::enroll::{accept, complete, EnrollRequest};
        use fleet_schema::trust::{seal, SealParams, SigningKey, Stamp};
        let ctl = SigningKey::generate().expect("keygen").0;
        let dev_key = SigningKey::generate().expect("keygen").0;
        let dev_id = fleet_schema::DeviceId::parse("sim-00000").expect("valid id");
        let (req, exchange) =
            EnrollRequest::new_signed(&dev_id, &dev_key, Default::default(), "t", 1)
                .expect("request");
        let issued = accept(&req, &ctl, "sim-00000", "pw").expect("answer");
        let enrolled = complete(&req, exchange, &issued.response, None).expect("completes");
        let dev_key_id = dev_key.id().to_string();
        let dev_trusted = dev_key.trusted();
        let end = DeviceEnd::new(dev_key, enrolled, 1);
        let probe = Arc::clone(&shared);
        let device = tokio::spawn(run_device(0, "sim-00000".into(), end, shared, None));
        async fn next(events: &mut mpsc::UnboundedReceiver<SimEvent>) -> SimEventKind {
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("event within 10 s")
                .expect("channel open")
                .kind
        }
        assert_eq!(next(&mut events).await, SimEventKind::Connected);

        let (ctl_client, mut ctl_loop) =
            AsyncClient::new(MqttOptions::new("test-controller", "127.0.0.1", port), 16);
        ctl_client
            .subscribe("fleet/sim-00000/status", QoS::AtLeastOnce)
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
                components: Vec::new(),
            }],
            issued_at: 0,
        };
        let sealed = seal(
            SealParams {
                topic: "fleet/sim-00000/cmd",
                signer: &ctl,
                to: Some(&dev_key_id),
                stamp: Stamp::default(),
                encrypt: Some(&issued.bus_key),
            },
            &encode(&desired).expect("encodes"),
        )
        .expect("seals");
        let watcher = tokio::spawn(async move {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = ctl_loop.poll().await {
                    let opened = fleet_schema::trust::open(
                        fleet_schema::trust::OpenParams {
                            topic: "fleet/sim-00000/status",
                            signer: &dev_trusted,
                            me: None,
                            decrypt: None,
                        },
                        &p.payload,
                        DEFAULT_MAX_PAYLOAD + 4096,
                    )
                    .expect("status sealed by the device");
                    let s: DeviceStatus =
                        decode(&opened.body, DEFAULT_MAX_PAYLOAD).expect("status");
                    if s.observed_generation == 1 {
                        return s;
                    }
                }
            }
        });
        // An unsigned copy first: the device must refuse it. It is not retained, so it is
        // sent until the device has counted it (its subscription may still be in flight).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while probe.bad_payloads.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the unsigned copy was refused within 10 s"
            );
            ctl_client
                .publish(
                    "fleet/sim-00000/cmd",
                    QoS::AtLeastOnce,
                    false,
                    encode(&desired).expect("encodes"),
                )
                .await
                .expect("publish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ctl_client
            .publish("fleet/sim-00000/cmd", QoS::AtLeastOnce, true, sealed)
            .await
            .expect("publish");
        assert_eq!(next(&mut events).await, SimEventKind::DesiredReceived);
        assert_eq!(next(&mut events).await, SimEventKind::NewVersionAcked);
        let status = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("status within 10 s")
            .expect("watcher");
        assert!(status.online);
        assert_eq!(status.apps[0].version, "1.0.0");
        assert_eq!(status.apps[0].deployment_id.as_deref(), Some("dep-1"));
        assert!(
            probe.bad_payloads.load(Ordering::Relaxed) >= 1,
            "the unsigned copy was refused"
        );
        device.abort();
    }
}
