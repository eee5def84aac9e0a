//! Authentication and authorization of every API route, in one table ([`access`]): which
//! routes are public (health, signed download URLs, enrollment), which need a token of which
//! scope, and which a device may call with its own credential. Routes not in the table need
//! `admin` (fail closed). The established caller is put in the request's extensions as a
//! [`Principal`] for handlers that check more (application limits, secrets).

use super::{ApiFailure, AppState};
use crate::trust::Principal;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_schema::trust::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, signed (expiring, HMAC) download URLs, and enrollment (authenticated by
    /// its enrollment token or held for an operator, with proof of key possession).
    Public,
    /// An API token with at least this scope.
    Token(Scope),
    /// A device for its own desired artifacts, or a token with at least this scope.
    DeviceOr(Scope),
}

/// The access rule of a route, by method and route pattern.
pub fn access(method: &Method, path: &str) -> Access {
    let admin_area = [
        "/api/v1/tokens",
        "/api/v1/enrollment-tokens",
        "/api/v1/enrollments",
        "/api/v1/broker",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    let deploy_area = [
        "/api/v1/artifacts",
        "/api/v1/deployments",
        "/api/v1/applications",
        "/api/v1/groups",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    match (method.as_str(), path) {
        ("GET", "/api/v1/health") => Access::Public,
        ("GET", "/api/v1/artifacts/{name}/{version}/download") => Access::Public,
        ("POST", "/api/v1/enroll") => Access::Public,
        ("GET", "/api/v1/artifacts/{name}/{version}/url") => Access::DeviceOr(Scope::Deploy),
        (_, _) if admin_area => Access::Token(Scope::Admin),
        ("GET", _) => Access::Token(Scope::Read),
        ("POST", _) if deploy_area => Access::Token(Scope::Deploy),
        ("DELETE", "/api/v1/groups/{name}") => Access::Token(Scope::Deploy),
        _ => Access::Token(Scope::Admin),
    }
}

fn failure(status: StatusCode, message: String) -> Response {
    let mut resp = ApiFailure::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The middleware: applies [`access`] to the matched route.
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let rule = access(req.method(), &path);
    if rule == Access::Public {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match st.trust.authenticate(header) {
        Ok(p) => p,
        Err(e) => return failure(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let allowed = match (rule, &principal) {
        (Access::DeviceOr(_), Principal::Device(_)) => Ok(()),
        (Access::DeviceOr(scope) | Access::Token(scope), p) => p.require(scope),
        (Access::Public, _) => Ok(()),
    };
    if let Err(e) = allowed {
        return failure(StatusCode::FORBIDDEN, e.0);
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

impl From<crate::trust::Forbidden> for ApiFailure {
    fn from(e: crate::trust::Forbidden) -> Self {
        ApiFailure::new(StatusCode::FORBIDDEN, e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_fails_closed() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(access(&get, "/api/v1/health"), Access::Public);
        assert_eq!(access(&get, "/metrics"), Access::Token(Scope::Read));
        assert_eq!(access(&get, "/api/v1/devices"), Access::Token(Scope::Read));
        assert_eq!(
            access(&post, "/api/v1/deployments"),
            Access::Token(Scope::Deploy)
        );
        assert_eq!(
            access(&post, "/api/v1/artifacts/{name}/{version}/signatures"),
            Access::Token(Scope::Deploy)
        );
        assert_eq!(access(&get, "/api/v1/tokens"), Access::Token(Scope::Admin));
        assert_eq!(
            access(&post, "/api/v1/devices/{id}/{action}"),
            Access::Token(Scope::Admin)
        );
        assert_eq!(
            access(&Method::DELETE, "/api/v1/tokens/{id}"),
            Access::Token(Scope::Admin)
        );
        assert_eq!(
            access(&Method::DELETE, "/api/v1/groups/{name}"),
            Access::Token(Scope::Deploy)
        );
        assert_eq!(
            access(&Method::PUT, "/api/v1/deployments"),
            Access::Token(Scope::Admin)
        );
        assert_eq!(
            access(&get, "/api/v1/artifacts/{name}/{version}/url"),
            Access::DeviceOr(Scope::Deploy)
        );
    }
}
