//! The retention task: once a minute (and at start) removes the oldest finished deployments
//! beyond `--keep-finished-deployments`, counting each pass that removed some as a hit of the
//! `finished_deployments` limit.

use crate::db::Db;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often retention runs.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Runs retention until `shutdown`.
pub async fn run(db: Db, keep: usize, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        match db.call(move |db| db.prune_finished_deployments(keep)).await {
            Ok(0) => {}
            Ok(n) => metrics.limits.hit("finished_deployments", || {
                format!("removed {n} finished deployments beyond the newest {keep} (--keep-finished-deployments)")
            }),
            Err(e) => tracing::warn!(error = %e, "deployment retention failed; retrying in a minute"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
