//! Deployment endpoints.

use super::{ApiFailure, AppState};
use crate::engine::deploy::{self, DeployContext};
use crate::engine::view::deployment_view;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleet_schema::api::{DeploymentCreated, DeploymentView};

/// `POST /api/v1/deployments`: the body is JSON `CreateDeployment`, whatever the content type
/// says (`curl -d` sends form encoding by default).
pub async fn create(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<DeploymentCreated>), ApiFailure> {
    let ctx = DeployContext {
        db: &st.db,
        store: st.store.as_ref(),
        queue: &st.queue,
        metrics: &st.metrics,
        public_url: &st.public_url,
    };
    let created = deploy::create(&ctx, &body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/deployments`: every deployment, oldest first, with progress.
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<DeploymentView>>, ApiFailure> {
    let (deployments, desired, devices) = st
        .db
        .call(|db| Ok((db.deployments()?, db.desired_all()?, db.devices()?)))
        .await?;
    Ok(Json(
        deployments
            .iter()
            .map(|d| deployment_view(d, &desired, &devices))
            .collect(),
    ))
}

/// `GET /api/v1/deployments/{id}`.
pub async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiFailure> {
    let key = id.clone();
    let (rec, desired, devices) = st
        .db
        .call(move |db| Ok((db.deployment(&key)?, db.desired_all()?, db.devices()?)))
        .await?;
    let rec = rec.ok_or_else(|| ApiFailure::not_found(format!("deployment {id:?} not found")))?;
    Ok(Json(deployment_view(&rec, &desired, &devices)))
}
