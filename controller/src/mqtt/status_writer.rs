//! The single writer of device statuses: drains whatever is queued and commits it in one
//! transaction, so thousands of devices reporting at once cost a few fsyncs, not thousands.

use super::catch_up::CatchUpLimiter;
use super::PublishQueue;
use crate::db::{Db, StatusUpdate};
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Most statuses committed in one transaction.
const MAX_BATCH: usize = 2000;

/// Runs until every sender is gone (the poll task ended). Devices whose status shows they are
/// behind their desired generation get it republished (see [`super::catch_up`]).
pub async fn run(
    mut rx: mpsc::Receiver<StatusUpdate>,
    db: Db,
    queue: Arc<PublishQueue>,
    metrics: Arc<Metrics>,
) {
    let mut catch_up = CatchUpLimiter::default();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(update) => batch.push(update),
                Err(_) => break,
            }
        }
        let n = batch.len();
        match db.call(move |db| db.apply_statuses(batch)).await {
            Ok(outcome) => {
                metrics
                    .status_processed
                    .fetch_add(outcome.applied, Ordering::Relaxed);
                metrics
                    .devices_online
                    .fetch_add(outcome.online_delta, Ordering::Relaxed);
                for _ in 0..outcome.stale {
                    metrics.reject("status", "stale");
                }
                tracing::debug!(statuses = n, "device statuses committed");
                let due = catch_up.admit(outcome.behind, Instant::now());
                if !due.is_empty() {
                    tracing::debug!(
                        devices = due.len(),
                        "republishing to devices that are behind"
                    );
                    queue.mark_devices(due);
                }
            }
            Err(e) => tracing::error!(error = %e, statuses = n, "cannot store device statuses"),
        }
    }
}
