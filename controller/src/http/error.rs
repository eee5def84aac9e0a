//! The API's error answer: a status code and `fleet_schema::api::ApiError` JSON.

use crate::db::DbError;
use crate::deployments::{DeployError, DeployErrorKind};
use crate::store::StoreError;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_schema::api::ApiError;

/// A failed request: status code plus a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the `error` field.
    pub message: String,
}

impl ApiFailure {
    /// A failure with an explicit status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: the named resource does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: our fault. The details (which may name server paths) go to fleetd's log under an
    /// incident number; the answer says only that, so a caller learns nothing about the host.
    ///
    /// A full disk is named, though (507), since the caller can act on it: the error text
    /// carries the operating system's message for ENOSPC or EDQUOT, whatever wrapped it.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        static INCIDENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = INCIDENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = e.to_string();
        tracing::error!(incident = n, error = %text, "request failed");
        if ["No space left on device", "Disk quota exceeded"]
            .iter()
            .any(|m| text.contains(m))
        {
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "fleetd's storage is full: no space left on device (incident {n} in fleetd's \
                     log); nothing was stored, retry once space is freed"
                ),
            );
        }
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error (incident {n} in fleetd's log)"),
        )
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Invalid(_) | StoreError::Upload(_) => StatusCode::BAD_REQUEST,
            StoreError::NotFound(_) | StoreError::NotServed(_) => StatusCode::NOT_FOUND,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Io { .. } | StoreError::Corrupt { .. } => return Self::internal(e),
        };
        Self::new(status, e.to_string())
    }
}

impl From<DbError> for ApiFailure {
    fn from(e: DbError) -> Self {
        Self::internal(e)
    }
}

impl From<DeployError> for ApiFailure {
    fn from(e: DeployError) -> Self {
        let status = match e.kind {
            DeployErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            DeployErrorKind::NotFound => StatusCode::NOT_FOUND,
            DeployErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            DeployErrorKind::Internal => return Self::internal(e),
        };
        Self::new(status, e.message)
    }
}

/// Answer for paths the API does not have.
pub async fn no_route(method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::not_found(format!("no such endpoint: {method} {}", uri.path()))
}
