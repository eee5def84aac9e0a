//! Publishing, in one task separate from the poll loop. Callers only mark what must be
//! published ([`PublishQueue`]); the task reads the current bytes from the database when it
//! publishes, so repeated requests coalesce, a full republish of a large fleet needs no memory
//! beyond the set of device ids, and what goes out is always the committed copy.
//!
//! Everything is sealed on the way out (`fleet_schema::trust::seal`): a desired state is signed
//! by the controller's key, addressed to the device's key and encrypted under its bus key; the
//! presence message and requests are signed. A device that is not enrolled (or was revoked) gets
//! nothing.

use crate::db::Db;
use crate::metrics::Metrics;
use crate::trust::Trust;
use fleet_schema::{AgentRequest, ControllerStatus, DeviceId, Topic};
use rumqttc::AsyncClient;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Desired states read from the database per round trip.
const CHUNK: usize = 500;

/// What is waiting to be published.
#[derive(Debug, Default)]
struct Pending {
    devices: BTreeSet<String>,
    all: bool,
    controller_at: Option<u64>,
    requests: Vec<(DeviceId, AgentRequest)>,
}

/// Requests for the publisher task; cheap to call from anywhere, never blocks on the network.
#[derive(Debug, Default)]
pub struct PublishQueue {
    pending: Mutex<Pending>,
    notify: Notify,
    /// sha256 of the last sealed desired state published per device (the guard's echo check).
    published: Mutex<HashMap<String, [u8; 32]>>,
    /// Counts the rounds that queued every desired state (after [`PublishQueue::mark_all_devices`]).
    full_rounds: tokio::sync::watch::Sender<u64>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl PublishQueue {
    /// Send a one-off request to a device (signed and encrypted like its desired state).
    pub fn request(&self, device: DeviceId, req: AgentRequest) {
        self.pending
            .lock()
            .expect("publish queue lock is never poisoned")
            .requests
            .push((device, req));
        self.notify.notify_one();
    }

    /// True when `payload` is exactly the last desired state we published for `device`.
    pub fn is_last_published(&self, device: &str, payload: &[u8]) -> bool {
        self.published
            .lock()
            .expect("published map lock is never poisoned")
            .get(device)
            .is_some_and(|h| *h == digest(payload))
    }

    fn record_published(&self, device: &str, payload: &[u8]) {
        self.published
            .lock()
            .expect("published map lock is never poisoned")
            .insert(device.to_string(), digest(payload));
    }

    /// Publish these devices' desired states.
    pub fn mark_devices(&self, ids: impl IntoIterator<Item = String>) {
        self.pending
            .lock()
            .expect("publish queue lock is never poisoned")
            .devices
            .extend(ids);
        self.notify.notify_one();
    }

    /// Publish every device's desired state (after a (re)connect).
    pub fn mark_all_devices(&self) {
        self.pending
            .lock()
            .expect("publish queue lock is never poisoned")
            .all = true;
        self.notify.notify_one();
    }

    /// Watches the count of finished full republishes: once it grows past the value read before
    /// [`PublishQueue::mark_all_devices`], every desired state is queued on the client.
    pub fn full_rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.full_rounds.subscribe()
    }

    /// Publish the controller's online presence for a connection made at `at`.
    pub fn announce_controller(&self, at: u64) {
        self.pending
            .lock()
            .expect("publish queue lock is never poisoned")
            .controller_at = Some(at);
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .expect("publish queue lock is never poisoned"),
        )
    }
}

/// The controller's presence message.
pub fn controller_status(online: bool, http_url: &str, at: u64) -> ControllerStatus {
    ControllerStatus {
        online,
        version: env!("CARGO_PKG_VERSION").to_string(),
        http_url: Some(http_url.to_string()),
        at,
    }
}

/// Runs until shutdown or until the client's channel closes.
pub async fn run(
    queue: Arc<PublishQueue>,
    client: AsyncClient,
    db: Db,
    trust: Arc<Trust>,
    metrics: Arc<Metrics>,
    http_url: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = queue.notify.notified() => {}
        }
        let pending = queue.take();
        if let Some(at) = pending.controller_at {
            let topic = Topic::ControllerStatus;
            let sealed = fleet_schema::encode(&controller_status(true, &http_url, at))
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    trust
                        .seal_public(&topic.to_string(), &b)
                        .map_err(|e| e.to_string())
                });
            match sealed {
                Ok(bytes) => {
                    if !publish(&client, &shutdown, &topic, bytes).await {
                        return;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot seal the controller's presence"),
            }
        }
        for (device, req) in pending.requests {
            let topic = Topic::Req(device.clone());
            let sealed = fleet_schema::encode(&req)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    trust
                        .seal_for_device(
                            &topic.to_string(),
                            device.as_str(),
                            trust.next_stamp(),
                            &b,
                        )
                        .ok_or_else(|| format!("device {device} is not enrolled"))?
                        .map_err(|e| e.to_string())
                });
            match sealed {
                Ok(bytes) => {
                    if !publish(&client, &shutdown, &topic, bytes).await {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "request not sent"),
            }
        }
        let mut ids = pending.devices;
        if pending.all {
            match db.call(|db| db.desired_ids()).await {
                Ok(all) => ids.extend(all),
                Err(e) => tracing::error!(error = %e, "cannot list desired states to republish"),
            }
        }
        if ids.is_empty() {
            if pending.all {
                queue.full_rounds.send_modify(|n| *n += 1);
            }
            continue;
        }
        let total = ids.len();
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            let states = match db.call(move |db| db.desired_bytes_many(&chunk)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read desired states to publish");
                    continue;
                }
            };
            for (id, bytes) in states {
                let device = match DeviceId::parse(&id) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "stored desired state has an invalid device id");
                        continue;
                    }
                };
                let topic = Topic::Cmd(device);
                let sealed = match trust.seal_for_device(
                    &topic.to_string(),
                    &id,
                    trust.next_stamp(),
                    &bytes,
                ) {
                    None => {
                        tracing::debug!(device = %id, "not enrolled: desired state not published");
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, device = %id, "cannot seal desired state");
                        continue;
                    }
                    Some(Ok(sealed)) => sealed,
                };
                queue.record_published(&id, &sealed);
                if !publish(&client, &shutdown, &topic, sealed).await {
                    return;
                }
                metrics.desired_published.fetch_add(1, Ordering::Relaxed);
            }
        }
        if pending.all {
            queue.full_rounds.send_modify(|n| *n += 1);
        }
        tracing::debug!(devices = total, "desired states queued for publishing");
    }
}

/// Publishes as the topic's contract says; false when the task must stop (shutdown or client
/// gone).
async fn publish(
    client: &AsyncClient,
    shutdown: &CancellationToken,
    topic: &Topic,
    payload: Vec<u8>,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = super::wire::publish(client, topic, payload) => match r {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "MQTT client stopped; publisher ends");
                false
            }
        },
    }
}
