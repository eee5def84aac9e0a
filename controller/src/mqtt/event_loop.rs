//! The poll task: drives the rumqttc connection, reconnects with jittered backoff, and routes
//! incoming messages to the status writer and the guard. It never publishes.

use super::inbound::{classify, Inbound, SeenStamps};
use super::{wire, PublishQueue};
use crate::db::StatusUpdate;
use crate::metrics::Metrics;
use crate::trust::Trust;
use fleet_schema::backoff::{jitter, Backoff};
use fleet_schema::topic::DeviceTopicKind;
use fleet_schema::LogBatch;
use fleet_schema::Subscription;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, StateError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A `cmd` message for the guard.
#[derive(Debug)]
pub struct CmdMessage {
    /// The device whose topic it came on.
    pub device: String,
    /// Its payload.
    pub payload: axum::body::Bytes,
}

/// Everything the poll task hands work to.
pub struct LoopContext {
    /// The client (subscriptions are sent from a separate task).
    pub client: AsyncClient,
    /// Publishing requests.
    pub queue: Arc<PublishQueue>,
    /// To the status writer.
    pub status_tx: mpsc::Sender<StatusUpdate>,
    /// To the guard.
    pub guard_tx: mpsc::Sender<CmdMessage>,
    /// Error-rate windows fed from metrics batches.
    pub errors: Arc<crate::engine::error_window::ErrorWindows>,
    /// Keys and identities every message is verified against.
    pub trust: Arc<Trust>,
    /// Verified log batches, for live followers.
    pub logs: tokio::sync::broadcast::Sender<Arc<LogBatch>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connection state for the ready line and the health endpoint.
    pub connected: watch::Sender<bool>,
    /// Cancelled at shutdown: the loop then ends at the next error or disconnect.
    pub shutdown: CancellationToken,
    /// To the CI worker: payloads from `fleet/_ci/requests` (see [`crate::ci`]).
    pub ci: Option<mpsc::Sender<crate::ci::CiMessage>>,
    /// Largest sealed status taken from a device.
    pub max_status_bytes: usize,
}

/// First delay before reconnecting (each one drawn from its upper half, so clients that lost
/// the same broker do not reconnect in step); rumqttc itself would retry at once.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// A connection that lasted this long resets the reconnect backoff; one that breaks sooner
/// (a broker that drops us right after CONNACK) keeps backing off, so it never becomes a loop.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Limit label of an incoming packet above [`fleet_schema::MAX_PACKET_SIZE`].
pub const INCOMING_PACKET_LIMIT: &str = "mqtt_incoming_packet_bytes";

/// True when the broker sent a packet above our packet limit (rumqttc refuses to read it and
/// drops the connection; the broker would send it again from the session or the retained
/// store on every reconnect).
pub fn oversized_incoming(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

/// Polls until a disconnect requested at shutdown (or until an error after shutdown began).
pub async fn run(mut eventloop: EventLoop, ctx: LoopContext) {
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut seen = SeenStamps::default();
    let mut failures: u64 = 0;
    let mut connected_at: Option<Instant> = None;
    let mut recovering = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    recovering,
                    "connected to the MQTT broker"
                );
                connected_at = Some(Instant::now());
                failures = 0;
                ctx.metrics.mqtt_connects.fetch_add(1, Ordering::Relaxed);
                ctx.connected.send_replace(true);
                tokio::spawn(on_connect(
                    ctx.client.clone(),
                    ctx.queue.clone(),
                    ctx.ci.is_some(),
                    recovering,
                ));
                // Only the connection right after an oversized packet starts clean.
                eventloop.mqtt_options.set_clean_session(false);
                recovering = false;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                route(&ctx, &mut seen, &p.topic, p.payload).await
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if ctx.shutdown.is_cancelled() => break,
            Ok(_) => {}
            Err(e) => {
                ctx.connected.send_replace(false);
                if ctx.shutdown.is_cancelled() {
                    break;
                }
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
                {
                    backoff.reset();
                }
                if let Some(size) = oversized_incoming(&e) {
                    // A poisoned session: start the next one clean, and republish every
                    // desired state before subscribing to `cmd` again (see `on_connect`).
                    ctx.metrics.limits.hit(INCOMING_PACKET_LIMIT, || {
                        format!("the broker sent a packet of {size} bytes, above fleetd's limit of {}; reconnecting with a clean session and republishing every desired state", fleet_schema::MAX_PACKET_SIZE)
                    });
                    eventloop.mqtt_options.set_clean_session(true);
                    recovering = true;
                }
                failures += 1;
                let delay = jitter(backoff.next_delay(), rand::random::<f64>());
                if failures <= 3 || failures.is_multiple_of(50) {
                    tracing::warn!(error = %e, attempt = failures, retry_in = ?delay, "MQTT connection failed");
                } else {
                    tracing::debug!(error = %e, attempt = failures, retry_in = ?delay, "MQTT connection failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.shutdown.cancelled() => break,
                }
                // A new connection gets a new epoch and a last will stamped for it, so agents
                // can tell this connection's presence from a replay of an older one.
                if let Some(will) =
                    super::options::last_will(&ctx.trust, ctx.trust.new_connection())
                {
                    eventloop.mqtt_options.set_last_will(will);
                }
            }
        }
    }
    ctx.connected.send_replace(false);
}

/// Longest wait, when recovering from a poisoned session, for the republish of every desired
/// state to be queued before `cmd` is subscribed to anyway.
const REPUBLISH_WAIT: Duration = Duration::from_secs(60);

/// On every ConnAck: subscribe again (also when the broker kept the session), announce the
/// controller, and republish every desired state (heals a broker that lost retained messages).
/// When `recovering` from an oversized packet, `cmd` is subscribed to only after every desired
/// state was queued: the broker handles one connection's packets in order, so the retained
/// messages (an oversized one included) are replaced before it sends them to us.
async fn on_connect(client: AsyncClient, queue: Arc<PublishQueue>, ci: bool, recovering: bool) {
    let kinds: &[DeviceTopicKind] = if recovering {
        &[
            DeviceTopicKind::Status,
            DeviceTopicKind::Metrics,
            DeviceTopicKind::Logs,
        ]
    } else {
        &[
            DeviceTopicKind::Status,
            DeviceTopicKind::Cmd,
            DeviceTopicKind::Metrics,
            DeviceTopicKind::Logs,
        ]
    };
    let subs: Vec<Subscription> = kinds
        .iter()
        .map(|k| Subscription::all_devices(*k))
        .collect();
    if let Err(e) = wire::subscribe_many(&client, &subs).await {
        tracing::error!(error = %e, "cannot subscribe to device topics");
    }
    if ci {
        // Plain requests, and requests signed with a token (`fleet/_ci/requests/<id>/<hmac>`).
        let subs = [
            Subscription::topic(&fleet_schema::Topic::CiRequests),
            Subscription::signed_ci_requests(),
        ];
        if let Err(e) = wire::subscribe_many(&client, &subs).await {
            tracing::error!(error = %e, "cannot subscribe to CI requests");
        }
    }
    queue.announce_controller(crate::clock::now_ms());
    let mut rounds = queue.full_rounds();
    let before = *rounds.borrow_and_update();
    queue.mark_all_devices();
    if recovering {
        if tokio::time::timeout(REPUBLISH_WAIT, rounds.wait_for(|n| *n > before))
            .await
            .is_err()
        {
            tracing::warn!(
                "republishing every desired state takes long; subscribing to cmd anyway"
            );
        }
        let cmd = [Subscription::all_devices(DeviceTopicKind::Cmd)];
        if let Err(e) = wire::subscribe_many(&client, &cmd).await {
            tracing::error!(error = %e, "cannot subscribe to cmd topics");
        }
    }
}

/// Routes one incoming message; rejections are logged and counted, never fatal.
async fn route(ctx: &LoopContext, seen: &mut SeenStamps, topic: &str, payload: axum::body::Bytes) {
    if let (
        Some(ci),
        Ok(t @ (fleet_schema::Topic::CiRequests | fleet_schema::Topic::CiSignedRequest { .. })),
    ) = (&ctx.ci, fleet_schema::Topic::parse(topic))
    {
        // Never wait on CI work here: a full queue drops the request (the job times out).
        if ci.try_send((t, payload)).is_err() {
            ctx.metrics.reject("ci-requests", "queue-full");
        }
        return;
    }
    match classify(&ctx.trust, seen, topic, payload, ctx.max_status_bytes) {
        Inbound::Status(v) => {
            let update = StatusUpdate {
                status: v.status,
                received_at: crate::clock::now_ms(),
                signed: (v.key_id, v.stamp),
            };
            if ctx.status_tx.send(update).await.is_err() {
                tracing::warn!(topic, "status writer stopped; status dropped");
            }
        }
        Inbound::Cmd { device, payload } => {
            let msg = CmdMessage {
                device: device.to_string(),
                payload,
            };
            if ctx.guard_tx.send(msg).await.is_err() {
                tracing::warn!(topic, "cmd guard stopped; message ignored");
            }
        }
        Inbound::Metrics(batch) => {
            let now = crate::clock::now_ms();
            ctx.errors.record(&batch, now);
            ctx.metrics.telemetry.record(batch, now);
        }
        Inbound::Logs(batch) => {
            // No follower is fine: the batch is dropped.
            let _ = ctx.logs.send(Arc::new(batch));
        }
        Inbound::Ignored => {}
        Inbound::Rejected(r) => {
            if let Some(limit) = r.limit {
                ctx.metrics
                    .limits
                    .hit(limit, || format!("{topic}: {}", r.detail));
            }
            let n = ctx.metrics.reject(r.topic, r.reason);
            // Bounded logging: the first few of each kind, then every thousandth.
            if n <= 5 || n.is_multiple_of(1000) {
                tracing::warn!(topic, reason = r.reason, detail = %r.detail, count = n, "rejected MQTT payload");
            }
        }
    }
}
