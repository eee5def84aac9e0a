//! Deployment endpoints.

use super::{ApiFailure, AppState};
use crate::deployments::commit::{self, RolloutOpError};
use crate::deployments::{self, DeployContext};
use crate::engine::rollout::ops::{self, Op};
use crate::engine::view::deployment_view;
use crate::trust::Principal;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use fleet_schema::api::{CreateDeployment, DeploymentCreated, DeploymentView};

/// `POST /api/v1/deployments`: the body is JSON `CreateDeployment`, whatever the content type
/// says (`curl -d` sends form encoding by default).
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<DeploymentCreated>), ApiFailure> {
    // The full validation comes in `deployments::create`; the application is needed first to check
    // the caller may deploy it.
    if let Ok(req) = serde_json::from_slice::<CreateDeployment>(&body) {
        caller.require_app(&req.application)?;
    }
    let ctx = DeployContext {
        db: &st.db,
        store: st.store.as_ref(),
        queue: &st.queue,
        metrics: &st.metrics,
        public_url: &st.public_url,
        trust: &st.trust,
    };
    let created = deployments::create(&ctx, &body).await?;
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

/// One deployment's view, reading only its own devices (so a poller costs in proportion to
/// the deployment, not to the whole fleet); `None` when it does not exist.
pub async fn load_view(
    db: &crate::db::Db,
    id: &str,
) -> Result<Option<DeploymentView>, crate::db::DbError> {
    let key = id.to_string();
    let found = db
        .call(move |db| {
            let Some(rec) = db.deployment(&key)? else {
                return Ok(None);
            };
            let targets: Vec<String> = match &rec.rollout {
                Some(r) => r.targets.clone(),
                None => rec.devices.keys().cloned().collect(),
            };
            let desired = db.desired_by_ids(&targets)?;
            let devices = db.devices_by_ids(&targets)?;
            Ok(Some((rec, desired, devices)))
        })
        .await?;
    Ok(found.map(|(rec, desired, devices)| deployment_view(&rec, &desired, &devices)))
}

/// `GET /api/v1/deployments/{id}`.
pub async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiFailure> {
    load_view(&st.db, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiFailure::not_found(format!("deployment {id:?} not found")))
}

/// Query of the action endpoint.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    /// Rollback only: "immediate" (default) or "gradual".
    #[serde(default)]
    pub mode: Option<String>,
}

/// `POST /api/v1/deployments/{id}/{action}`: pause, resume, abort, rollback (`?mode=gradual`),
/// promote. 409 when the deployment's phase does not allow it.
pub async fn action(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((id, action)): Path<(String, String)>,
    Query(q): Query<ActionQuery>,
) -> Result<Json<DeploymentView>, ApiFailure> {
    let key = id.clone();
    let rec = st.db.call(move |db| db.deployment(&key)).await?;
    if let Some(rec) = rec {
        caller.require_app(&rec.application)?;
    }
    let gradual = match q.mode.as_deref() {
        None | Some("immediate") => false,
        Some("gradual") => true,
        Some(other) => {
            return Err(ApiFailure::bad_request(format!(
                "mode {other:?} is not immediate or gradual"
            )))
        }
    };
    let op = Op::parse(&action, gradual).ok_or_else(|| {
        ApiFailure::not_found(format!(
            "no deployment action {action:?} (pause, resume, abort, rollback, promote)"
        ))
    })?;
    let now = crate::clock::now_ms();
    let key = id.clone();
    let result = st
        .db
        .call(move |db| {
            Ok(commit::update_rollout(db, &key, now, |r, _| {
                ops::apply(r, op, now)
            }))
        })
        .await?;
    let (_, published) = result.map_err(|e| match e {
        RolloutOpError::NotFound(_) => ApiFailure::not_found(e.to_string()),
        RolloutOpError::Conflict(_) => ApiFailure::new(StatusCode::CONFLICT, e.to_string()),
        RolloutOpError::Db(e) => ApiFailure::internal(e),
    })?;
    st.queue.mark_devices(published.into_iter().map(|(d, _)| d));
    tracing::info!(deployment = %id, action = %action, "operator action");
    get_one(State(st), Path(id)).await
}
