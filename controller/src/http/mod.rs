//! The HTTP API (axum). Every error answer is JSON `{"error": "..."}` naming what was wrong.
//! Every route passes [`auth::guard`], whose one table says who may call it. Routes are grouped
//! by resource: [`artifacts`] (with [`upload`]), [`deployments`], [`applications`],
//! [`devices`] (with [`logs`]), [`trust`] (enrollment, tokens, broker files) and [`ops`]
//! (health, metrics).

pub mod applications;
pub mod artifacts;
pub mod auth;
pub mod body;
pub mod deployments;
pub mod devices;
mod error;
pub mod logs;
pub mod ops;
pub mod trust;
pub mod upload;
pub mod upload_gate;

pub use error::ApiFailure;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::mqtt::PublishQueue;
use crate::store::ArtifactStore;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use fleet_schema::LogBatch;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Database.
    pub db: Db,
    /// Artifact store.
    pub store: Arc<dyn ArtifactStore>,
    /// Publishing requests.
    pub queue: Arc<PublishQueue>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// True while connected to the broker.
    pub mqtt_connected: watch::Receiver<bool>,
    /// Base URL devices download from.
    pub public_url: Arc<str>,
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// Largest file part staged before its metadata arrived (the seed's `curl -F file=@.. -F
    /// metadata=..` order).
    pub max_upload_before_metadata_bytes: u64,
    /// Uploads in flight and the bytes they stage.
    pub uploads: Arc<upload_gate::UploadGate>,
    /// Largest body of any other request ([`body::LimitedBody`]).
    pub max_request_body_bytes: usize,
    /// Largest manifest, aliases expanded and validated.
    pub max_manifest_bytes: usize,
    /// Vulnerability-scan hook run on uploads, if configured.
    pub scan: Option<Arc<crate::store::scan::ScanHook>>,
    /// Keys, identities and tokens.
    pub trust: Arc<crate::trust::Trust>,
    /// Verified log batches from devices, for followers.
    pub logs: tokio::sync::broadcast::Sender<Arc<LogBatch>>,
    /// Bound on enrollment requests waiting for an operator.
    pub max_pending_enrollments: usize,
    /// The central store of the devices' log lines.
    pub log_store: Arc<crate::logstore::LogStore>,
}

/// Builds the API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route(
            "/api/v1/artifacts",
            get(artifacts::list)
                .post(upload::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/artifacts/{name}/versions",
            get(artifacts::versions),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}",
            get(artifacts::get_one),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}/download",
            get(artifacts::download),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}/url",
            get(artifacts::fresh_url),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}/signatures",
            axum::routing::post(artifacts::add_signature),
        )
        .route(
            "/api/v1/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route("/api/v1/deployments/{id}", get(deployments::get_one))
        .route(
            "/api/v1/deployments/{id}/{action}",
            axum::routing::post(deployments::action),
        )
        .route(
            "/api/v1/applications",
            get(applications::list).post(applications::register),
        )
        .route(
            "/api/v1/applications/{name}/{version}",
            get(applications::get_one),
        )
        .route(
            "/api/v1/groups",
            get(applications::list_groups).post(applications::put_group),
        )
        .route(
            "/api/v1/groups/{name}",
            get(applications::get_group).delete(applications::delete_group),
        )
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{id}", get(devices::get_one))
        .route("/api/v1/devices/{id}/logs", get(logs::device_logs))
        .route("/api/v1/devices/{id}/{action}", post(trust::device_action))
        .route("/api/v1/enroll", post(trust::enroll))
        .route("/api/v1/whoami", get(trust::whoami))
        .route("/api/v1/enrollments", get(trust::enrollments))
        .route(
            "/api/v1/tokens",
            get(trust::list_tokens).post(trust::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(trust::revoke_token))
        .route(
            "/api/v1/enrollment-tokens",
            get(trust::list_enroll_tokens).post(trust::create_enroll_token),
        )
        .route(
            "/api/v1/enrollment-tokens/{id}",
            delete(trust::revoke_enroll_token),
        )
        .route("/api/v1/broker/mosquitto", get(trust::mosquitto_config))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::latency::track,
        ))
        .fallback(error::no_route)
        .with_state(state)
}
