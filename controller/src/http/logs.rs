//! `GET /api/v1/devices/{id}/logs?app=&since=&limit=&follow=`: a device's app output as
//! newline-delimited JSON `LogBatch`es. By default the lines come from fleetd's central store
//! ([`crate::logstore`]), so they are there for an offline device: one batch (`history: true`)
//! with the newest `limit` lines at or after `since`; with `follow=true` the response stays open
//! and every new verified batch of the device follows (chunked transfer).
//!
//! `lines=N` is the older spelling of `limit`. `source=agent` asks the online agent for its
//! in-memory history instead, with a request fleetd signs (agents ignore unsigned requests, so
//! tools cannot ask devices directly); only batches verified against the device's key are
//! relayed.

use super::{ApiFailure, AppState};
use crate::logstore::query::{self, LogQuery};
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
    /// Only lines stamped at or after this: Unix ms, or a duration back from now (`15m`).
    #[serde(default)]
    pub since: Option<String>,
    /// How many of the newest lines (default 100, at most 10000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Older name of `limit` (with `source=agent`: lines asked of the agent, at most 1000).
    #[serde(default)]
    pub lines: Option<u32>,
    /// Keep the response open and stream new lines.
    #[serde(default)]
    pub follow: bool,
    /// `store` (default): fleetd's central store; `agent`: the online agent's memory.
    #[serde(default)]
    pub source: Option<String>,
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
    match q.source.as_deref() {
        None | Some("store") => from_store(st, device, q).await,
        Some("agent") => from_agent(st, device, q).await,
        Some(other) => Err(ApiFailure::bad_request(format!(
            "source {other:?} is neither \"store\" nor \"agent\""
        ))),
    }
}

/// The validated store query of `q`.
fn store_query(q: &LogsQuery) -> Result<LogQuery, ApiFailure> {
    let limit = q
        .limit
        .or(q.lines.map(|n| n as usize))
        .unwrap_or(query::DEFAULT_LIMIT);
    if limit > query::MAX_LIMIT {
        return Err(ApiFailure::bad_request(format!(
            "limit {limit} is over the maximum of {}",
            query::MAX_LIMIT
        )));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| query::parse_since(s, crate::clock::now_ms()))
        .transpose()
        .map_err(|e| ApiFailure::bad_request(e.to_string()))?;
    Ok(LogQuery {
        app: q.app.clone(),
        since,
        limit,
    })
}

/// Lines from the central store, then (follow) live batches.
async fn from_store(st: AppState, device: DeviceId, q: LogsQuery) -> Result<Response, ApiFailure> {
    let lq = store_query(&q)?;
    // Subscribed before reading, so no line falls between the stored ones and the live ones
    // (one stored meanwhile may show twice).
    let rx = q.follow.then(|| st.logs.subscribe());
    let (store, dev) = (st.log_store.clone(), device.to_string());
    let entries = tokio::task::spawn_blocking(move || store.read(&dev, &lq))
        .await
        .map_err(ApiFailure::internal)?
        .map_err(|e| {
            ApiFailure::internal(format!("cannot read the stored log of {device}: {e}"))
        })?;
    let first = ndjson(&LogBatch {
        device_id: device.to_string(),
        entries,
        dropped: 0,
        history: true,
    });
    let Some(rx) = rx else {
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], first).into_response());
    };
    let head =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(first) });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(futures_util::StreamExt::chain(
            head,
            live(rx, device.to_string(), q.app, false),
        )),
    )
        .into_response())
}

/// Asks the online agent for its in-memory history (the behaviour before the central store).
async fn from_agent(st: AppState, device: DeviceId, q: LogsQuery) -> Result<Response, ApiFailure> {
    let id = device.to_string();
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
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(live(rx, id, app, true)),
    )
        .into_response())
}

/// The live batches of device `id` (restricted to `app`) as NDJSON chunks, with the agent's
/// history answers when `history` (else those are copies of stored lines); a reader that fell
/// behind gets a batch saying how many batches it missed.
fn live(
    rx: broadcast::Receiver<Arc<LogBatch>>,
    id: String,
    app: Option<String>,
    history: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::unfold((rx, id, app), move |(mut rx, id, app)| async move {
        loop {
            match rx.recv().await {
                Ok(b) if b.history && !history => {}
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
    })
}

/// Capacity of the broadcast of verified log batches to followers.
pub const LOG_BROADCAST: usize = 1024;

/// A new broadcast for verified log batches.
pub fn log_channel() -> broadcast::Sender<Arc<LogBatch>> {
    broadcast::channel(LOG_BROADCAST).0
}
