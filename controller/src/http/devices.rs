//! Device endpoints: what the controller knows about every device it has heard from.

use super::{ApiFailure, AppState};
use crate::engine::view::device_view;
use axum::extract::{Path, State};
use axum::Json;
use fleet_schema::api::DeviceView;

/// `GET /api/v1/devices`: every device ever seen, sorted by id.
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<DeviceView>>, ApiFailure> {
    let (devices, desired, identities) = st
        .db
        .call(|db| Ok((db.devices()?, db.desired_all()?, db.identities()?)))
        .await?;
    let states: std::collections::HashMap<String, _> = identities
        .into_iter()
        .map(|r| (r.device_id, r.state))
        .collect();
    let views = devices
        .values()
        .map(|rec| {
            let mut v = device_view(rec, desired.get(&rec.id).map_or(0, |d| d.generation));
            v.enrollment = states.get(&rec.id).copied();
            v
        })
        .collect();
    Ok(Json(views))
}

/// `GET /api/v1/devices/{id}`.
pub async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiFailure> {
    let key = id.clone();
    let (rec, desired, identity) = st
        .db
        .call(move |db| Ok((db.device(&key)?, db.desired(&key)?, db.identity(&key)?)))
        .await?;
    let rec = rec.ok_or_else(|| ApiFailure::not_found(format!("device {id:?} was never seen")))?;
    let mut view = device_view(&rec, desired.map_or(0, |d| d.generation));
    view.enrollment = identity.map(|r| r.state);
    Ok(Json(view))
}
