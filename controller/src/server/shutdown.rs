//! Graceful shutdown: say goodbye on the bus (a retained offline presence, since a clean
//! disconnect does not fire the last will), disconnect, and let HTTP requests in flight finish,
//! each step bounded in time.

use super::ServeError;
use crate::mqtt::publisher::controller_status;
use crate::mqtt::Bridge;
use fleet_schema::Topic;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for each shutdown step.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Completes on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops fleetd");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Stops everything started by `run`.
pub(super) async fn graceful(
    bridge: Bridge,
    trust: &crate::trust::Trust,
    token: CancellationToken,
    http_task: JoinHandle<std::io::Result<()>>,
) -> Result<(), ServeError> {
    token.cancel();
    let offline = controller_status(false, "", crate::clock::now_ms());
    let offline = fleet_schema::ControllerStatus {
        http_url: None,
        ..offline
    };
    let topic = Topic::ControllerStatus;
    let sealed = fleet_schema::encode(&offline)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            trust
                .seal_public(&topic.to_string(), &b)
                .map_err(|e| e.to_string())
        });
    if let Ok(payload) = sealed {
        let publish = crate::mqtt::wire::publish(&bridge.client, &topic, payload);
        if !matches!(
            tokio::time::timeout(STEP_TIMEOUT, publish).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("could not queue the offline presence");
        }
    }
    let _ = tokio::time::timeout(STEP_TIMEOUT, bridge.client.disconnect()).await;
    if tokio::time::timeout(STEP_TIMEOUT, bridge.poll_task)
        .await
        .is_err()
    {
        tracing::warn!("MQTT connection did not close in time");
    }
    for task in bridge.tasks {
        let _ = tokio::time::timeout(STEP_TIMEOUT, task).await;
    }
    match tokio::time::timeout(STEP_TIMEOUT, http_task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(ServeError::Http(e)),
        Ok(Err(e)) => Err(ServeError::Task(e.to_string())),
        Err(_) => {
            tracing::warn!("HTTP requests still running at shutdown were cut off");
            Ok(())
        }
    }
}
