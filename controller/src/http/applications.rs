//! Application and group endpoints: `POST /api/v1/applications` registers an application
//! version from its `app.yaml` manifest (YAML, or JSON of the same shape), `GET` lists them;
//! `POST /api/v1/groups` names a set of devices that deployments can target.

use super::{ApiFailure, AppState};
use crate::db::Registered;
use crate::trust::Principal;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use fleet_schema::api::{ApplicationView, GroupSpec};
use fleet_schema::manifest::{self, ManifestError};

/// The API view; secret configuration values are shown to admin tokens only.
fn view(rec: crate::db::ApplicationRecord, caller: &Principal) -> ApplicationView {
    let mut application = rec.application;
    if !caller.sees_secrets() {
        application.spec = application.spec.redacted();
    }
    ApplicationView {
        application,
        registered_at: rec.registered_at,
    }
}

/// `POST /api/v1/applications`: 201 for a new version, 200 when the same manifest is already
/// registered, 409 when the version exists with another manifest, 400 naming the field.
pub async fn register(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<ApplicationView>), ApiFailure> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiFailure::bad_request("manifest is not UTF-8 text"))?;
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || text.trim_start().starts_with('{');
    let max = st.max_manifest_bytes;
    let parsed = if json {
        manifest::parse_json_within(text, max)
    } else {
        manifest::parse_yaml_within(text, max)
    };
    let app = parsed.map_err(|e: ManifestError| {
        if matches!(
            e,
            ManifestError::Expands { .. } | ManifestError::TooLarge { .. }
        ) {
            st.metrics.limits.hit("manifest_bytes", || {
                format!("a manifest was refused: {e} (--max-manifest-bytes)")
            });
            return ApiFailure::bad_request(format!("{e} (--max-manifest-bytes)"));
        }
        ApiFailure::bad_request(e.to_string())
    })?;
    caller.require_app(&app.name)?;
    let now = crate::clock::now_ms();
    let out = st
        .db
        .call(move |db| db.register_application(app, now))
        .await?;
    match out {
        Registered::Created(rec) => Ok((StatusCode::CREATED, Json(view(rec, &caller)))),
        Registered::Unchanged(rec) => Ok((StatusCode::OK, Json(view(rec, &caller)))),
        Registered::Conflict(rec) => Err(ApiFailure::new(
            StatusCode::CONFLICT,
            format!(
                "application {}@{} is already registered with a different manifest (versions are immutable: bump metadata.version)",
                rec.application.name, rec.application.version
            ),
        )),
    }
}

/// `GET /api/v1/applications`: every registered application version.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<Vec<ApplicationView>>, ApiFailure> {
    let all = st.db.call(|db| db.applications()).await?;
    Ok(Json(all.into_iter().map(|r| view(r, &caller)).collect()))
}

/// `GET /api/v1/applications/{name}/{version}`.
pub async fn get_one(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ApplicationView>, ApiFailure> {
    let (n, v) = (name.clone(), version.clone());
    let rec = st.db.call(move |db| db.application(&n, &v)).await?;
    rec.map(|r| Json(view(r, &caller))).ok_or_else(|| {
        ApiFailure::not_found(format!("application {name}@{version} is not registered"))
    })
}

/// `POST /api/v1/groups`: creates or replaces a device group (unknown fields are refused).
pub async fn put_group(
    State(st): State<AppState>,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<GroupSpec>), ApiFailure> {
    let g: GroupSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiFailure::bad_request(format!("invalid group: {e}")))?;
    fleet_schema::artifact::validate_name(&g.name)
        .map_err(|e| ApiFailure::bad_request(format!("name: {e}")))?;
    if g.devices.is_empty() && g.selector.is_empty() && g.match_expressions.is_empty() {
        return Err(ApiFailure::bad_request(
            "group is empty: give devices, selector and/or match_expressions",
        ));
    }
    for r in &g.match_expressions {
        r.check()
            .map_err(|e| ApiFailure::bad_request(format!("match_expressions: {e}")))?;
    }
    let stored = g.clone();
    st.db.call(move |db| db.put_group(&stored)).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

/// `GET /api/v1/groups`.
pub async fn list_groups(State(st): State<AppState>) -> Result<Json<Vec<GroupSpec>>, ApiFailure> {
    Ok(Json(st.db.call(|db| db.groups()).await?))
}

/// `GET /api/v1/groups/{name}`: one group.
pub async fn get_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<GroupSpec>, ApiFailure> {
    let key = name.clone();
    st.db
        .call(move |db| db.group(&key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiFailure::not_found(format!("group {name:?} does not exist")))
}

/// `DELETE /api/v1/groups/{name}`: removes a group and answers with it (404 when there is
/// none).
pub async fn delete_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<GroupSpec>, ApiFailure> {
    let key = name.clone();
    st.db
        .call(move |db| db.delete_group(&key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiFailure::not_found(format!("group {name:?} does not exist")))
}
