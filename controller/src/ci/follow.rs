//! Following a CI request's deployment: a `progress` answer whenever its state or counts change
//! and, when it ends, the retained `result`, recorded in the ledger so it is sent once and a
//! repeated request gets it again.

use super::ledger::CiRecord;
use super::parse::ReplyTo;
use super::CiContext;
use fleet_schema::api::DeploymentState;
use fleet_schema::ci::{CiReply, DeviceCounts};
use std::sync::Arc;
use std::time::Duration;

/// How often a followed deployment is read.
const POLL: Duration = Duration::from_millis(500);

/// Follows `rec`'s deployment on its own task until it ends or fleetd shuts down.
pub fn spawn(ctx: Arc<CiContext>, key: String, rec: CiRecord) {
    tokio::spawn(async move {
        let shutdown = ctx.shutdown.clone();
        tokio::select! {
            _ = follow(ctx, key, rec) => {}
            _ = shutdown.cancelled() => {}
        }
    });
}

async fn follow(ctx: Arc<CiContext>, key: String, mut rec: CiRecord) {
    let (Some(deployment), Some((owner, id))) =
        (rec.deployment().map(str::to_string), key.split_once('/'))
    else {
        return;
    };
    let reply = ReplyTo {
        owner: owner.to_string(),
        id: id.to_string(),
    };
    let mut last: Option<(DeploymentState, DeviceCounts)> = None;
    loop {
        let view = match crate::http::deployments::load_view(&ctx.db, &deployment).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                tracing::warn!(%deployment, "followed CI deployment disappeared");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, %deployment, "cannot read a followed CI deployment");
                tokio::time::sleep(POLL * 4).await;
                continue;
            }
        };
        let counts = DeviceCounts::of(&view);
        let now = (view.state.clone(), counts.clone());
        if last.as_ref() != Some(&now) {
            let progress = CiReply::Progress {
                id: reply.id.clone(),
                deployment: deployment.clone(),
                state: view.state.clone(),
                succeeded: counts.succeeded,
                failed: counts.failed,
                in_progress: counts.in_progress,
                total: view.devices.len(),
            };
            super::publish(&ctx, &reply, rec.format, &progress).await;
            last = Some(now);
        }
        if let Some(outcome) = view.state.outcome() {
            let failed: Vec<String> = view
                .devices
                .iter()
                .filter_map(|(d, p)| match p {
                    fleet_schema::api::DeviceProgress::Failed { reason } => {
                        Some(format!("{d}: {reason}"))
                    }
                    _ => None,
                })
                .collect();
            let result = CiReply::Result {
                id: reply.id.clone(),
                ok: outcome == DeploymentState::Succeeded,
                outcome: outcome.to_string(),
                deployment: Some(deployment.clone()),
                error: (!failed.is_empty()).then(|| failed.join("; ")),
            };
            rec.result = Some(result.clone());
            if let Err(e) = super::handle::save(&ctx, &key, &rec).await {
                tracing::error!(error = %e, request = %key, "cannot record a CI verdict");
            }
            super::publish(&ctx, &reply, rec.format, &result).await;
            tracing::info!(request = %key, %deployment, %outcome, "CI request finished");
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
