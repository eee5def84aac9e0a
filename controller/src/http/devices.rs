//! Device endpoints: what the controller knows about every device it has heard from.

use super::{ApiFailure, AppState};
use crate::engine::view::device_view;
use axum::extract::{Path, State};
use axum::Json;
use fleet_schema::api::DeviceView;

/// `GET /api/v1/devices`: every device ever seen, sorted by id.
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<DeviceView>>, ApiFailure> {
    let (devices, desired) = st
        .db
        .call(|db| Ok((db.devices()?, db.desired_all()?)))
        .await?;
    let views = devices
        .values()
        .map(|rec| device_view(rec, desired.get(&rec.id).map_or(0, |d| d.generation)))
        .collect();
    Ok(Json(views))
}

/// `GET /api/v1/devices/{id}`.
pub async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiFailure> {
    let key = id.clone();
    let (rec, desired) = st
        .db
        .call(move |db| Ok((db.device(&key)?, db.desired(&key)?)))
        .await?;
    let rec = rec.ok_or_else(|| ApiFailure::not_found(format!("device {id:?} was never seen")))?;
    Ok(Json(device_view(&rec, desired.map_or(0, |d| d.generation))))
}
