//! Trust endpoints: device enrollment (`POST /api/v1/enroll`), the operator's decisions on
//! devices (`POST /api/v1/devices/{id}/{action}`), enrollments (`GET /api/v1/enrollments`), API
//! tokens (`/api/v1/tokens`), enrollment tokens (`/api/v1/enrollment-tokens`) and the Mosquitto
//! files (`GET /api/v1/broker/mosquitto`). Secrets appear only in the answer that creates them.

use super::{ApiFailure, AppState};
use crate::trust::admin::{self, Action, AdminError};
use crate::trust::tokens::{self as tok, TokenError};
use crate::trust::Principal;
use crate::trust::{broker_files, enroll, mosquitto};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use fleet_schema::trust::enroll::{EnrollRequest, EnrollResponse, EnrollState};
use fleet_schema::trust::tokens::{
    CreateEnrollToken, CreateToken, DeviceActionResult, EnrollTokenCreated, EnrollTokenView,
    EnrollmentState, EnrollmentView, MosquittoConfig, TokenCreated, TokenView, WhoAmI,
};

/// Largest enrollment request accepted.
const MAX_ENROLL_BYTES: usize = 256 * 1024;

impl From<TokenError> for ApiFailure {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(m) => ApiFailure::bad_request(m),
            TokenError::NotFound(m) => ApiFailure::not_found(m),
            TokenError::Db(e) => ApiFailure::internal(e),
        }
    }
}

impl From<AdminError> for ApiFailure {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(_) => ApiFailure::not_found(e.to_string()),
            AdminError::Conflict { .. } => ApiFailure::new(StatusCode::CONFLICT, e.to_string()),
            AdminError::Db(e) => ApiFailure::internal(e),
        }
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(body)
        .map_err(|e| ApiFailure::bad_request(format!("invalid {what}: {e}")))
}

/// `POST /api/v1/enroll`: 200 accepted (with keys and encrypted credentials), 202 pending, or
/// an error naming why (401 bad enrollment token, 403 rejected or revoked, 409 another key).
pub async fn enroll(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiFailure> {
    if body.len() > MAX_ENROLL_BYTES {
        return Err(ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "enrollment request of {} bytes exceeds {MAX_ENROLL_BYTES}",
                body.len()
            ),
        ));
    }
    let req: EnrollRequest = json("enrollment request", &body)?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match enroll::enroll(&st.db, &st.trust, bearer, req, st.max_pending_enrollments).await {
        Ok(resp) => {
            let status = match resp.state {
                EnrollState::Accepted => StatusCode::OK,
                EnrollState::Pending => StatusCode::ACCEPTED,
                EnrollState::Rejected => StatusCode::FORBIDDEN,
            };
            Ok((status, Json(resp)))
        }
        Err(r) => Err(ApiFailure::new(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            r.message,
        )),
    }
}

/// Query of `GET /api/v1/enrollments`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentQuery {
    /// Only enrollments in this state (`pending`, `accepted`, `rejected`, `revoked`).
    #[serde(default)]
    pub state: Option<EnrollmentState>,
}

/// `GET /api/v1/enrollments[?state=pending]`: every device's enrollment.
pub async fn enrollments(
    State(st): State<AppState>,
    Query(q): Query<EnrollmentQuery>,
) -> Result<Json<Vec<EnrollmentView>>, ApiFailure> {
    let all = st.db.call(|db| db.identities()).await?;
    Ok(Json(
        all.iter()
            .filter(|r| q.state.is_none_or(|s| s == r.state))
            .map(|r| r.view())
            .collect(),
    ))
}

/// `POST /api/v1/devices/{id}/{action}`: accept, reject, revoke or reset a device.
pub async fn device_action(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<DeviceActionResult>, ApiFailure> {
    let act = Action::parse(&action).ok_or_else(|| {
        ApiFailure::not_found(format!(
            "no device action {action:?} (accept, reject, revoke, reset)"
        ))
    })?;
    let trust = st.trust.clone();
    let device = id.clone();
    let applied = st
        .db
        .call(move |db| Ok(admin::apply(db, &trust, &device, act)))
        .await??;
    if applied.went_offline {
        st.metrics
            .devices_online
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Json(DeviceActionResult {
        device_id: id,
        action,
        enrollment: applied.record.map(|r| r.view()),
    }))
}

/// `POST /api/v1/tokens`: 201 with the token (shown only here).
pub async fn create_token(
    State(st): State<AppState>,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<TokenCreated>), ApiFailure> {
    let req: CreateToken = json("token request", &body)?;
    let trust = st.trust.clone();
    let created = st
        .db
        .call(move |db| Ok(tok::create(db, &trust, &req)))
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/tokens`: every token, without secrets.
pub async fn list_tokens(State(st): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiFailure> {
    let all = st.db.call(|db| db.tokens()).await?;
    Ok(Json(all.iter().map(|t| t.view()).collect()))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token.
pub async fn revoke_token(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiFailure> {
    let trust = st.trust.clone();
    let rec = st
        .db
        .call(move |db| Ok(tok::revoke(db, &trust, &id)))
        .await??;
    Ok(Json(rec.view()))
}

/// `POST /api/v1/enrollment-tokens`: 201 with the token (shown only here).
pub async fn create_enroll_token(
    State(st): State<AppState>,
    body: super::body::LimitedBody,
) -> Result<(StatusCode, Json<EnrollTokenCreated>), ApiFailure> {
    let req: CreateEnrollToken = json("enrollment token request", &body)?;
    let created = st
        .db
        .call(move |db| Ok(tok::create_enroll(db, &req)))
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/enrollment-tokens`.
pub async fn list_enroll_tokens(
    State(st): State<AppState>,
) -> Result<Json<Vec<EnrollTokenView>>, ApiFailure> {
    let all = st.db.call(|db| db.enroll_tokens()).await?;
    Ok(Json(all.iter().map(|t| t.view()).collect()))
}

/// `DELETE /api/v1/enrollment-tokens/{id}`.
pub async fn revoke_enroll_token(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EnrollTokenView>, ApiFailure> {
    let rec = st
        .db
        .call(move |db| Ok(tok::revoke_enroll(db, &id)))
        .await??;
    Ok(Json(rec.view()))
}

/// `GET /api/v1/whoami`: the caller as fleetd sees it (never a secret).
pub async fn whoami(Extension(caller): Extension<Principal>) -> Json<WhoAmI> {
    Json(match caller {
        Principal::Insecure => WhoAmI {
            kind: "insecure".into(),
            id: None,
            name: None,
            scope: None,
            apps: vec![],
        },
        Principal::Token {
            id,
            name,
            scope,
            apps,
        } => WhoAmI {
            kind: "token".into(),
            id: Some(id),
            name: Some(name),
            scope: Some(scope),
            apps,
        },
        Principal::Device(d) => WhoAmI {
            kind: "device".into(),
            id: Some(d),
            name: None,
            scope: None,
            apps: vec![],
        },
    })
}

/// Query of `GET /api/v1/broker/mosquitto`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MosquittoQuery {
    /// Where the files will be on the broker host (for the configuration lines).
    #[serde(default)]
    pub dir: Option<String>,
}

/// `GET /api/v1/broker/mosquitto[?dir=/etc/mosquitto/fleet]`: the password and ACL files for
/// the current identities and tokens, and the `mosquitto.conf` lines.
pub async fn mosquitto_config(
    State(st): State<AppState>,
    Query(q): Query<MosquittoQuery>,
) -> Result<Json<MosquittoConfig>, ApiFailure> {
    let controller =
        broker_files::controller_user(st.trust.mqtt_password()).map_err(ApiFailure::internal)?;
    let files = st
        .db
        .call(move |db| broker_files::current(db, &controller))
        .await?;
    let dir = q.dir.unwrap_or_else(|| "/etc/mosquitto/fleet".into());
    Ok(Json(MosquittoConfig {
        passwd: files.passwd,
        acl: files.acl,
        conf: mosquitto::conf_snippet(&dir),
    }))
}
