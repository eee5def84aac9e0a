//! `POST /api/v1/artifacts`: multipart upload with a `metadata` part (JSON `UploadMetadata`)
//! and then a `file` part. The metadata comes first and is validated (name, version, type,
//! declared size, the caller's application scope) before any byte of the file is staged; the
//! file is then streamed to the store while hashed, never held in memory, within the upload
//! size limit, the staging quota and the limit on uploads in flight ([`super::upload_gate`]).
//! Whatever ends an upload early (an error, a refusal, the client going away), its staged
//! bytes are removed.

use super::upload_gate::Reservation;
use super::{ApiFailure, AppState};
use crate::server::watch::BodyStall;
use crate::store::scan::{ScanHook, ScanOutcome};
use crate::store::{NewArtifact, StagedBlob, StoreError, StoreOutcome};
use crate::trust::Principal;
use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use fleet_schema::api::UploadMetadata;
use fleet_schema::artifact::{validate_name, validate_version, Platform, Signature};
use fleet_schema::image_ref::{ImageSource, PULL_CAPABILITY};
use fleet_schema::signing::ED25519_ALGORITHM;
use fleet_schema::{ArtifactMeta, ArtifactType};
use std::sync::Arc;

/// Largest accepted `metadata` part.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Handles an upload: 201 with the new metadata, 200 with the existing metadata for an
/// identical re-upload, 409 when the version exists with different bytes; 429 when too many
/// uploads are in flight, 413 over the size limit, 507 over the staging quota.
pub async fn upload(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    stall: Option<Extension<BodyStall>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<ArtifactMeta>), ApiFailure> {
    let stall = stall.map(|Extension(s)| s).unwrap_or_default();
    receive(st, caller, multipart)
        .await
        .map_err(|e| stalled_or(&stall, e))
}

/// The answer for a body that stalled past the body timeout, whatever the parser made of it.
pub fn stalled_or(stall: &BodyStall, e: ApiFailure) -> ApiFailure {
    if stall.stalled() {
        return ApiFailure::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled: no data within the body timeout (--http-body-timeout-secs); nothing was stored",
        );
    }
    e
}

async fn receive(
    st: AppState,
    caller: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<ArtifactMeta>), ApiFailure> {
    let _slot = st.uploads.slot(&st.metrics)?;
    let mut multipart = multipart.map_err(|e| {
        ApiFailure::bad_request(format!(
            "upload must be multipart/form-data with parts `metadata` then `file`: {e}"
        ))
    })?;
    let first = next_field(&mut multipart).await?.ok_or_else(|| {
        ApiFailure::bad_request("empty upload: expected parts `metadata` then `file`")
    })?;
    let mut staged = None;
    let mut _reservation = None;
    let metadata = match first.name().unwrap_or_default() {
        "metadata" => read_metadata(&st, &caller, first).await?,
        "file" => {
            // The file came first (the seed's curl call): staged within its own bound and the
            // staging quota, checked once the metadata arrives, removed on any error.
            let limit = st.max_upload_before_metadata_bytes.min(st.max_upload_bytes);
            let (blob, reservation) = stage_file(&st, first, None, limit).await?;
            let field = next_field(&mut multipart).await?.ok_or_else(|| {
                ApiFailure::bad_request(
                    "missing part `metadata` (it may come before or after `file`)",
                )
            })?;
            match field.name().unwrap_or_default() {
                "metadata" => {}
                other => return Err(unexpected_part(other)),
            }
            let metadata = read_metadata(&st, &caller, field).await?;
            check_declared(metadata.size, &blob)?;
            staged = Some(blob);
            _reservation = Some(reservation);
            metadata
        }
        other => return Err(unexpected_part(other)),
    };
    while let Some(field) = next_field(&mut multipart).await? {
        match field.name().unwrap_or_default() {
            "file" => {
                if staged.is_some() {
                    return Err(ApiFailure::bad_request("part `file` was given twice"));
                }
                let (blob, reservation) =
                    stage_file(&st, field, metadata.size, st.max_upload_bytes).await?;
                staged = Some(blob);
                _reservation = Some(reservation);
            }
            "metadata" => {
                return Err(ApiFailure::bad_request("part `metadata` was given twice"));
            }
            other => return Err(unexpected_part(other)),
        }
    }
    let Declared { new: metadata, .. } = metadata;
    let staged = match (&metadata.image, staged) {
        (Some(image), staged) => reference_blob(&st, image, staged).await?,
        (None, Some(staged)) => staged,
        (None, None) => {
            return Err(ApiFailure::bad_request(
                "missing part `file` (or, for an oci-image, `image` in the metadata)",
            ))
        }
    };
    if let Some(hook) = &st.scan {
        let id = ArtifactMeta::make_id(&metadata.name, &metadata.version);
        scan_upload(hook, &id, std::path::Path::new(staged.key())).await?;
    }
    match st.store.commit(staged, metadata).await? {
        StoreOutcome::Created(meta) => {
            tracing::info!(id = %meta.id, size = meta.size, "artifact stored");
            Ok((StatusCode::CREATED, Json(meta)))
        }
        StoreOutcome::Existing(meta) => Ok((StatusCode::OK, Json(meta))),
    }
}

/// Validated metadata with the file size it declares, if any.
struct Declared {
    new: NewArtifact,
    size: Option<u64>,
}

async fn next_field<'a>(
    multipart: &'a mut axum::extract::Multipart,
) -> Result<Option<Field<'a>>, ApiFailure> {
    multipart
        .next_field()
        .await
        .map_err(|e| ApiFailure::bad_request(format!("malformed multipart body: {e}")))
}

fn unexpected_part(name: &str) -> ApiFailure {
    if name.is_empty() {
        return ApiFailure::bad_request("multipart part without a name");
    }
    ApiFailure::bad_request(format!(
        "unexpected part `{name}` (expected `metadata` then `file`)"
    ))
}

/// Reads and validates the `metadata` part: fields, the caller's application scope and the
/// declared size against `--max-upload-bytes`.
async fn read_metadata(
    st: &AppState,
    caller: &Principal,
    field: Field<'_>,
) -> Result<Declared, ApiFailure> {
    let text = read_small(field).await?;
    let parsed: UploadMetadata = serde_json::from_slice(&text)
        .map_err(|e| ApiFailure::bad_request(format!("invalid `metadata` JSON: {e}")))?;
    let size = parsed.size;
    if let Some(size) = size {
        if size > st.max_upload_bytes {
            return Err(too_large(st, Some(size)));
        }
    }
    let valid = validate(parsed).map_err(ApiFailure::bad_request)?;
    caller.require_app(&valid.name)?;
    Ok(Declared { new: valid, size })
}

/// 413 naming `--max-upload-bytes` (counted).
fn too_large(st: &AppState, declared: Option<u64>) -> ApiFailure {
    let max = st.max_upload_bytes;
    st.metrics.limits.hit("upload_bytes", || {
        format!("an upload was larger than {max} bytes (--max-upload-bytes); refused")
    });
    let what = match declared {
        Some(size) => format!("the declared size of {size} bytes is"),
        None => "the file is".to_string(),
    };
    ApiFailure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "artifact too large: {what} more than the limit of {max} bytes (--max-upload-bytes)"
        ),
    )
}

/// Stages the `file` part within `limit` and the staging quota; its size must match the
/// declared one, if any.
async fn stage_file(
    st: &AppState,
    field: Field<'_>,
    declared: Option<u64>,
    limit: u64,
) -> Result<(StagedBlob, Arc<Reservation>), ApiFailure> {
    let reservation = st.uploads.reserve(declared.unwrap_or(0), &st.metrics)?;
    // With a declared size the quota was reserved at once; otherwise it grows with each chunk.
    let stream: crate::store::ByteStream<'_> = if declared.is_some() {
        Box::pin(futures_util::TryStreamExt::map_err(field, |e| {
            std::io::Error::other(e.to_string())
        }))
    } else {
        Box::pin(reservation.count(field))
    };
    let limit = declared.unwrap_or(limit);
    let staged = match st.store.stage(stream, limit).await {
        Ok(s) => s,
        Err(_) if reservation.was_refused() => return Err(reservation.refusal(&st.metrics)),
        Err(StoreError::TooLarge { .. }) if declared.is_some() => {
            return Err(ApiFailure::bad_request(format!(
                "part `file` is larger than the size declared in the metadata ({} bytes)",
                declared.unwrap_or_default()
            )))
        }
        Err(StoreError::TooLarge { .. }) if limit < st.max_upload_bytes => {
            st.metrics.limits.hit("upload_before_metadata_bytes", || {
                format!("a file part sent before its metadata passed {limit} bytes (--max-upload-before-metadata-bytes); refused")
            });
            return Err(ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("part `file` came before `metadata` and passed {limit} bytes (--max-upload-before-metadata-bytes): send `metadata` first to upload a larger file"),
            ));
        }
        Err(StoreError::TooLarge { .. }) => return Err(too_large(st, None)),
        Err(e) => return Err(e.into()),
    };
    check_declared(declared, &staged)?;
    Ok((staged, reservation))
}

/// The staged file has the size its metadata declared, if it declared one.
fn check_declared(declared: Option<u64>, staged: &StagedBlob) -> Result<(), ApiFailure> {
    match declared {
        Some(size) if staged.size != size => Err(ApiFailure::bad_request(format!(
            "part `file` has {} bytes, the metadata declared {size}",
            staged.size
        ))),
        _ => Ok(()),
    }
}

/// The blob of a registry-reference `oci-image`: its reference document, staged by fleetd, or
/// an uploaded `file` part that must be exactly that document (what `fleetctl --sign` signs).
async fn reference_blob(
    st: &AppState,
    image: &ImageSource,
    uploaded: Option<StagedBlob>,
) -> Result<StagedBlob, ApiFailure> {
    let doc = image.document();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &doc));
    if let Some(staged) = uploaded {
        if staged.sha256 != sha256 {
            return Err(ApiFailure::bad_request(format!(
                "part `file` is not the reference document of image {:?}; omit `file` when the metadata names an `image`",
                image.image
            )));
        }
        return Ok(staged);
    }
    let body = futures_util::stream::once(async move { Ok(Bytes::from(doc)) });
    Ok(st.store.stage(Box::pin(body), st.max_upload_bytes).await?)
}

/// Runs the vulnerability-scan hook on a staged upload; with the reject policy, findings (or a
/// scan that cannot run) refuse the upload with a 422 carrying the findings.
async fn scan_upload(hook: &ScanHook, id: &str, file: &std::path::Path) -> Result<(), ApiFailure> {
    let refuse = |why: String| {
        Err(ApiFailure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("artifact {id} rejected: the vulnerability scan {why}"),
        ))
    };
    // The scanner is given the staged file's path, which its output may repeat: the answer
    // names the artifact instead, so it carries no server path.
    let staged = file.to_string_lossy();
    let findings = |f: String| f.replace(staged.as_ref(), id);
    match (hook.scan(file).await, hook.reject) {
        (Ok(ScanOutcome::Clean), _) => {
            tracing::info!(%id, "vulnerability scan clean");
            Ok(())
        }
        (Ok(ScanOutcome::Findings(f)), true) => {
            refuse(format!("reported findings: {}", findings(f)))
        }
        (Err(e), true) => {
            // Why it could not run names the scan command's path: that goes to the log only.
            let logged = ApiFailure::internal(format!("vulnerability scan of {id}: {e}"));
            refuse(format!("could not run ({})", logged.message))
        }
        (Ok(ScanOutcome::Findings(f)), false) => {
            tracing::warn!(%id, findings = %f, "vulnerability scan reported findings (allowed)");
            Ok(())
        }
        (Err(e), false) => {
            tracing::warn!(%id, error = %e, "vulnerability scan could not run");
            Ok(())
        }
    }
}

/// Reads a small part whole, refusing more than [`MAX_METADATA_BYTES`].
async fn read_small(mut field: Field<'_>) -> Result<Vec<u8>, ApiFailure> {
    let mut out = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiFailure::bad_request(format!("malformed multipart body: {e}")))?
    {
        if out.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err(ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("part `metadata` is larger than {MAX_METADATA_BYTES} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Validates upload metadata (pure): name, semantic version, a known type, platforms.
pub fn validate(meta: UploadMetadata) -> Result<NewArtifact, String> {
    validate_name(&meta.name)?;
    validate_version(&meta.version)?;
    let kind = ArtifactType::from(meta.kind.as_str());
    if !kind.is_known() {
        return Err(format!(
            "unknown artifact type {:?} (known: {})",
            meta.kind,
            ArtifactType::KNOWN.join(", ")
        ));
    }
    let mut platforms = Vec::new();
    for p in meta.platform.iter().chain(meta.platforms.iter()) {
        let parsed = Platform::parse(p).map_err(|e| e.to_string())?;
        if !platforms.contains(&parsed) {
            platforms.push(parsed);
        }
    }
    for sig in &meta.signatures {
        check_signature_form(sig)?;
    }
    let mut requirements = meta.requirements;
    let image = match (&meta.image, &meta.image_digest) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err("`image_digest` needs `image` (the registry reference it pins)".into())
        }
        (Some(_), _) if kind != ArtifactType::OciImage => {
            return Err(format!(
                "`image` (a registry reference) is for type oci-image only, not {kind}"
            ))
        }
        (Some(image), digest) => {
            let source = ImageSource::new(image, digest.as_deref()).map_err(|e| e.to_string())?;
            // Agents that cannot pull would try to load the document as a tarball.
            if !requirements
                .capabilities
                .iter()
                .any(|c| c == PULL_CAPABILITY)
            {
                requirements.capabilities.push(PULL_CAPABILITY.to_string());
            }
            Some(source)
        }
    };
    Ok(NewArtifact {
        name: meta.name,
        version: meta.version,
        kind,
        platforms,
        labels: meta.labels,
        requirements,
        build_info: meta.build_info,
        signatures: meta.signatures,
        image,
    })
}

/// Checks that a signature is well-formed (ed25519, 64 hex-encoded bytes, a key id); whether
/// the key is trusted is for each device to decide.
pub fn check_signature_form(sig: &Signature) -> Result<(), String> {
    if sig.algorithm != ED25519_ALGORITHM {
        return Err(format!(
            "signature by key {:?} uses algorithm {:?}; only {ED25519_ALGORITHM:?} is supported",
            sig.key_id, sig.algorithm
        ));
    }
    if sig.key_id.is_empty() || sig.key_id.len() > 128 {
        return Err("signature has an empty or overlong key_id".into());
    }
    if hex::decode(&sig.signature).map(|b| b.len()) != Ok(64) {
        return Err(format!(
            "signature by key {:?} is not 128 hex characters (64 bytes)",
            sig.key_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, version: &str, kind: &str, platform: Option<&str>) -> UploadMetadata {
        UploadMetadata {
            name: name.into(),
            version: version.into(),
            kind: kind.into(),
            platform: platform.map(Into::into),
            platforms: vec!["linux/amd64".into()],
            labels: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        let ok = validate(meta("app", "2.0.0", "oci-image", Some("linux/amd64"))).expect("valid");
        assert_eq!(ok.platforms.len(), 1, "duplicates merged");
        assert!(validate(meta("../app", "2.0.0", "binary", None))
            .expect_err("name")
            .contains("../app"));
        assert!(validate(meta("app", "v2", "binary", None))
            .expect_err("version")
            .contains("v2"));
        assert!(validate(meta("app", "2.0.0", "wasm", None))
            .expect_err("type")
            .contains("wasm"));
        assert!(validate(meta("app", "2.0.0", "binary", Some("linux")))
            .expect_err("platform")
            .contains("linux"));
    }

    #[test]
    fn registry_references_are_validated_and_require_pulling() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let with = |kind: &str, image: Option<&str>, d: Option<&str>| UploadMetadata {
            image: image.map(Into::into),
            image_digest: d.map(Into::into),
            ..meta("app", "1.0.0", kind, None)
        };
        let ok = validate(with(
            "oci-image",
            Some("127.0.0.1:5000/app:1"),
            Some(&digest),
        ))
        .expect("valid");
        let image = ok.image.expect("image kept");
        assert_eq!(image.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(ok.requirements.capabilities, [PULL_CAPABILITY]);
        let err = validate(with("binary", Some("reg.example/app:1"), None)).expect_err("type");
        assert!(err.contains("oci-image only"), "{err}");
        let err = validate(with("oci-image", None, Some(&digest))).expect_err("digest alone");
        assert!(err.contains("needs `image`"), "{err}");
        let err = validate(with("oci-image", Some(" "), None)).expect_err("whitespace");
        assert!(err.contains("whitespace"), "{err}");
        let err = validate(with("oci-image", Some(""), None)).expect_err("empty");
        assert!(err.contains("empty"), "{err}");
        let err = validate(with(
            "oci-image",
            Some("reg.example/app"),
            Some("sha256:12"),
        ))
        .expect_err("bad digest");
        assert!(err.contains("sha256:12"), "{err}");
    }
}
