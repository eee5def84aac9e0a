//! Operational endpoints: health for load balancers and tests, metrics for Prometheus.

use super::{ApiFailure, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use fleet_schema::api::Health;

/// `GET /api/v1/health`.
pub async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        mqtt_connected: *st.mqtt_connected.borrow(),
    })
}

/// `GET /metrics`: fleetd's counters and the fleet's telemetry, OpenMetrics text format
/// (see [`crate::telemetry`]). The database is read and the text encoded on the blocking pool.
pub async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiFailure> {
    let connected = *st.mqtt_connected.borrow();
    let (metrics, trust) = (st.metrics.clone(), st.trust.clone());
    let text = st
        .db
        .call(move |db| {
            let devices = db.devices()?;
            let enrolled = devices
                .keys()
                .filter(|id| trust.device(id).is_some())
                .cloned()
                .collect();
            let facts = crate::telemetry::DbFacts {
                deployments: db.deployments()?,
                desired: db.desired_all()?,
                devices,
                enrolled,
            };
            Ok(crate::telemetry::render(
                metrics,
                connected,
                facts,
                crate::clock::now_ms(),
            ))
        })
        .await?
        .map_err(|e| ApiFailure::internal(format!("cannot encode the metrics: {e}")))?;
    Ok((
        [(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)],
        text,
    ))
}
