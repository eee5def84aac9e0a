//! Operational endpoints: health for load balancers and tests, metrics for Prometheus.

use super::AppState;
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

/// `GET /metrics`, Prometheus text format.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let text = st.metrics.render(*st.mqtt_connected.borrow());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
