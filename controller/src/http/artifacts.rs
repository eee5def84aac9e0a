//! Artifact read endpoints: listing, metadata, and the resumable blob download agents use.

use super::{ApiFailure, AppState};
use crate::store::parse_range;
use crate::trust::Principal;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleet_schema::api::{ApiError, ArtifactSummary, DownloadUrl};
use fleet_schema::ArtifactMeta;
use tokio_util::io::ReaderStream;

/// `GET /api/v1/artifacts`: every artifact name with its newest version.
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<ArtifactSummary>>, ApiFailure> {
    let mut out = Vec::new();
    for name in st.store.list_names().await? {
        let versions = st.store.list_versions(&name).await?;
        if let Some(latest) = versions.last() {
            out.push(ArtifactSummary {
                name: name.clone(),
                latest_version: latest.version.clone(),
                version_count: versions.len(),
            });
        }
    }
    Ok(Json(out))
}

/// `GET /api/v1/artifacts/{name}/versions`: ascending semantic-version order.
pub async fn versions(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ArtifactMeta>>, ApiFailure> {
    let versions = st.store.list_versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiFailure::not_found(format!(
            "artifact {name:?} not found"
        )));
    }
    Ok(Json(versions))
}

/// Metadata of one version, or a 404 naming it.
async fn meta_of(st: &AppState, name: &str, version: &str) -> Result<ArtifactMeta, ApiFailure> {
    st.store.get(name, version).await?.ok_or_else(|| {
        ApiFailure::not_found(format!(
            "artifact {} not found",
            ArtifactMeta::make_id(name, version)
        ))
    })
}

/// `GET /api/v1/artifacts/{name}/{version}`.
pub async fn get_one(
    State(st): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ArtifactMeta>, ApiFailure> {
    Ok(Json(meta_of(&st, &name, &version).await?))
}

/// `GET /api/v1/artifacts/{name}/{version}/url`: a fresh download URL. Agents ask for one
/// when the URL in their (possibly long retained) desired state has expired.
pub async fn fresh_url(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<DownloadUrl>, ApiFailure> {
    if let Principal::Device(device) = &caller {
        // A device may only ask for the artifacts its desired state names.
        let id = device.clone();
        let desired = st.db.call(move |db| db.desired(&id)).await?;
        let wanted = desired.is_some_and(|d| {
            d.apps
                .iter()
                .flat_map(|a| a.artifacts())
                .any(|a| a.name == name && a.version == version)
        });
        if !wanted {
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                format!(
                    "device {device} may only ask for the artifacts of its desired state; {} is not one of them",
                    ArtifactMeta::make_id(&name, &version)
                ),
            ));
        }
    }
    let meta = meta_of(&st, &name, &version).await?;
    let link = st.store.download_link(&meta, &st.public_url).await?;
    Ok(Json(DownloadUrl {
        url: link.url,
        expires_at: link.expires_at,
    }))
}

/// The signature part of a download URL.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DownloadQuery {
    /// Expiry, Unix seconds.
    pub expires: Option<u64>,
    /// Hex HMAC over name, version and expiry.
    pub sig: Option<String>,
}

/// `GET /api/v1/artifacts/{name}/{version}/download?expires=..&sig=..`: streams the blob when
/// the URL's HMAC is valid and unexpired (403 naming why otherwise); one `Range` request
/// (`bytes=N-`, `bytes=N-M`, `bytes=-N`) is answered with 206 so downloads can resume.
pub async fn download(
    State(st): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let meta = meta_of(&st, &name, &version).await?;
    st.store
        .authorize_download(&name, &version, query.expires, query.sig.as_deref())?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, meta.size) {
        Ok(r) => r,
        Err(e) => {
            let body = Json(ApiError {
                error: e.to_string(),
            });
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{}", meta.size))],
                body,
            )
                .into_response());
        }
    };
    let blob = st.store.open(&name, &version, range).await?;
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, blob.len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::ETAG,
            format!("\"{}\"", meta.sha256().unwrap_or_default()),
        );
    builder = match range {
        Some(r) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", r.start, r.end, meta.size),
        ),
        None => builder.status(StatusCode::OK),
    };
    let body = Body::from_stream(ReaderStream::with_capacity(blob.reader, 64 * 1024));
    builder.body(body).map_err(ApiFailure::internal)
}

/// `POST /api/v1/artifacts/{name}/{version}/signatures`: adds a signature (JSON
/// `Signature`) to a stored version, replacing one by the same key; 200 with the metadata.
pub async fn add_signature(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
    body: super::body::LimitedBody,
) -> Result<Json<ArtifactMeta>, ApiFailure> {
    caller.require_app(&name)?;
    let sig: fleet_schema::artifact::Signature = serde_json::from_slice(&body).map_err(|e| {
        ApiFailure::bad_request(format!(
            "body must be JSON {{key_id, algorithm, signature}}: {e}"
        ))
    })?;
    super::upload::check_signature_form(&sig).map_err(ApiFailure::bad_request)?;
    meta_of(&st, &name, &version).await?;
    let meta = st.store.add_signature(&name, &version, sig).await?;
    tracing::info!(id = %meta.id, signatures = meta.signatures.len(), "artifact signature added");
    Ok(Json(meta))
}
