//! Publishing, in one task separate from the poll loop. Callers only mark what must be
//! published ([`PublishQueue`]); the task reads the current bytes from the database when it
//! publishes, so repeated requests coalesce, a full republish of a large fleet needs no memory
//! beyond the set of device ids, and what goes out is always the committed copy.

use crate::db::Db;
use crate::metrics::Metrics;
use fleet_schema::{ControllerStatus, DeviceId, Topic};
use rumqttc::{AsyncClient, QoS};
use std::collections::BTreeSet;
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
}

/// Requests for the publisher task; cheap to call from anywhere, never blocks on the network.
#[derive(Debug, Default)]
pub struct PublishQueue {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl PublishQueue {
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
            match fleet_schema::encode(&controller_status(true, &http_url, at)) {
                Ok(bytes) => {
                    let topic = Topic::ControllerStatus.to_string();
                    if !publish(&client, &shutdown, topic, bytes).await {
                        return;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode controller status"),
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
                if !publish(&client, &shutdown, Topic::Cmd(device).to_string(), bytes).await {
                    return;
                }
                metrics.desired_published.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(devices = total, "desired states queued for publishing");
    }
}

/// Publishes retained at QoS 1; false when the task must stop (shutdown or client gone).
async fn publish(
    client: &AsyncClient,
    shutdown: &CancellationToken,
    topic: String,
    payload: Vec<u8>,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = client.publish(topic, QoS::AtLeastOnce, true, payload) => match r {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "MQTT client stopped; publisher ends");
                false
            }
        },
    }
}
