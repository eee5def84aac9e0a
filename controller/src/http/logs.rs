//! `GET /api/v1/devices/{id}/logs?app=&lines=&follow=`: a device's recent app output and,
//! with `follow=true`, new lines as they come, as newline-delimited JSON `LogBatch`es. fleetd
//! asks the agent for its history with a request it signs (agents ignore unsigned requests, so
//! tools cannot ask devices directly), and relays only batches verified against the device's
//! key.

use super::{ApiFailure, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fleet_schema::{AgentRequest, DeviceId, LogBatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Without follow: how long to wait for the agent's history answer.
const HISTORY_WAIT: Duration = Duration::from_secs(5);
/// Without follow: the answer is complete once nothing came for this long.
const QUIET: Duration = Duration::from_millis(500);
/// Most history lines one request asks for.
const MAX_LINES: u32 = 1000;

/// Query of the logs endpoint.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only this app's lines.
    #[serde(default)]
    pub app: Option<String>,
    /// How many recent lines to ask for (default 100, at most 1000).
    #[serde(default)]
    pub lines: Option<u32>,
    /// Keep the response open and stream new lines.
    #[serde(default)]
    pub follow: bool,
}

/// The batch restricted to `app` (`None` when nothing of it is left; a history answer is
/// kept even when empty: it says the device answered).
fn only(batch: &LogBatch, device: &str, app: Option<&str>) -> Option<LogBatch> {
    if batch.device_id != device {
        return None;
    }
    let entries: Vec<_> = batch
        .entries
        .iter()
        .filter(|e| app.is_none_or(|a| e.app == a))
        .cloned()
        .collect();
    (!entries.is_empty() || batch.dropped > 0 || batch.history).then(|| LogBatch {
        device_id: batch.device_id.clone(),
        entries,
        dropped: batch.dropped,
        history: batch.history,
    })
}

fn ndjson(batch: &LogBatch) -> Bytes {
    let mut line = serde_json::to_vec(batch).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The handler.
pub async fn device_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiFailure> {
    let device =
        DeviceId::parse(&id).map_err(|e| ApiFailure::bad_request(format!("device id: {e}")))?;
    if st.trust.device(device.as_str()).is_none() {
        return Err(ApiFailure::not_found(format!(
            "device {id:?} is not an enrolled device"
        )));
    }
    let mut rx = st.logs.subscribe();
    st.queue.request(
        device.clone(),
        AgentRequest::LogHistory {
            app: q.app.clone(),
            lines: q.lines.unwrap_or(100).min(MAX_LINES),
        },
    );
    let app = q.app.clone();
    if !q.follow {
        let mut out = Vec::new();
        let started = tokio::time::Instant::now();
        loop {
            let budget = if out.is_empty() {
                HISTORY_WAIT.saturating_sub(started.elapsed())
            } else {
                QUIET
            };
            match tokio::time::timeout(budget, rx.recv()).await {
                // Without follow, only the history answer (live lines may arrive meanwhile).
                Ok(Ok(b)) if b.history => {
                    if let Some(b) = only(&b, &id, app.as_deref()) {
                        out.extend_from_slice(&ndjson(&b));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => break,
                Err(_) => break,
            }
        }
        if out.is_empty() {
            return Err(ApiFailure::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer from device {id} within {HISTORY_WAIT:?} (is its agent online?)"
                ),
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response());
    }
    let stream = futures_util::stream::unfold((rx, id, app), |(mut rx, id, app)| async move {
        loop {
            match rx.recv().await {
                Ok(b) => {
                    if let Some(b) = only(&b, &id, app.as_deref()) {
                        return Some((
                            Ok::<Bytes, std::convert::Infallible>(ndjson(&b)),
                            (rx, id, app),
                        ));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // This reader fell behind: say how much it missed and go on.
                    let note = LogBatch {
                        device_id: id.clone(),
                        entries: vec![],
                        dropped: n,
                        history: false,
                    };
                    return Some((Ok(ndjson(&note)), (rx, id, app)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Capacity of the broadcast of verified log batches to followers.
pub const LOG_BROADCAST: usize = 1024;

/// A new broadcast for verified log batches.
pub fn log_channel() -> broadcast::Sender<Arc<LogBatch>> {
    broadcast::channel(LOG_BROADCAST).0
}
