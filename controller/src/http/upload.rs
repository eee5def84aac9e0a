//! `POST /api/v1/artifacts`: multipart upload with a `file` part and a `metadata` part (JSON
//! `UploadMetadata`), in either order. The file is streamed to the store while hashed, never
//! held in memory.

use super::{ApiFailure, AppState};
use crate::store::scan::{ScanHook, ScanOutcome};
use crate::store::{NewArtifact, StagedBlob, StoreOutcome};
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
use futures_util::TryStreamExt;

/// Largest accepted `metadata` part.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Handles an upload: 201 with the new metadata, 200 with the existing metadata for an
/// identical re-upload, 409 when the version exists with different bytes.
pub async fn upload(
    State(st): State<AppState>,
    Extension(caller): Extension<Principal>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<ArtifactMeta>), ApiFailure> {
    let mut multipart = multipart.map_err(|e| {
        ApiFailure::bad_request(format!(
            "upload must be multipart/form-data with parts `file` and `metadata`: {e}"
        ))
    })?;
    let mut staged = None;
    let mut metadata: Option<NewArtifact> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiFailure::bad_request(format!("malformed multipart body: {e}")))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                if staged.is_some() {
                    return Err(ApiFailure::bad_request("part `file` was given twice"));
                }
                let stream = field.map_err(std::io::Error::other);
                staged = Some(
                    st.store
                        .stage(Box::pin(stream), st.max_upload_bytes)
                        .await?,
                );
            }
            "metadata" => {
                if metadata.is_some() {
                    return Err(ApiFailure::bad_request("part `metadata` was given twice"));
                }
                let text = read_small(field).await?;
                let parsed: UploadMetadata = serde_json::from_slice(&text).map_err(|e| {
                    ApiFailure::bad_request(format!("invalid `metadata` JSON: {e}"))
                })?;
                let valid = validate(parsed).map_err(ApiFailure::bad_request)?;
                caller.require_app(&valid.name)?;
                metadata = Some(valid);
            }
            "" => return Err(ApiFailure::bad_request("multipart part without a name")),
            other => {
                return Err(ApiFailure::bad_request(format!(
                    "unexpected part `{other}` (expected `file` and `metadata`)"
                )))
            }
        }
    }
    let metadata = metadata.ok_or_else(|| {
        ApiFailure::bad_request(
            "missing part `metadata` (JSON with name, version, type and platform)",
        )
    })?;
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
    match (hook.scan(file).await, hook.reject) {
        (Ok(ScanOutcome::Clean), _) => {
            tracing::info!(%id, "vulnerability scan clean");
            Ok(())
        }
        (Ok(ScanOutcome::Findings(f)), true) => refuse(format!("reported findings: {f}")),
        (Err(e), true) => refuse(format!("could not run: {e}")),
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
