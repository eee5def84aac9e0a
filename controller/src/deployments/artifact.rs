//! Finding the stored artifact a deployment names and building the reference devices download
//! it by.

use super::error::{DeployError, DeployErrorKind};
use crate::store::ArtifactStore;
use fleet_schema::{ArtifactRef, ArtifactType};

/// Finds the artifact implementing `application@version` and builds the device-side reference.
/// `public_url` is the base URL devices download from.
pub(crate) async fn find_artifact(
    store: &dyn ArtifactStore,
    public_url: &str,
    name: &str,
    version: &str,
) -> Result<ArtifactRef, DeployError> {
    let versions = store
        .list_versions(name)
        .await
        .map_err(DeployError::internal)?;
    if versions.is_empty() {
        return Err(DeployError::new(
            DeployErrorKind::NotFound,
            format!("artifact {name:?} not found (upload it before deploying)"),
        ));
    }
    let Some(meta) = versions.iter().find(|m| m.version == version) else {
        let known: Vec<&str> = versions
            .iter()
            .rev()
            .take(10)
            .map(|m| m.version.as_str())
            .collect();
        return Err(DeployError::new(
            DeployErrorKind::NotFound,
            format!(
                "artifact {name:?} has no version {version:?} (newest known: {})",
                known.join(", ")
            ),
        ));
    };
    if !meta.kind.is_known() {
        return Err(DeployError::new(
            DeployErrorKind::Unprocessable,
            format!(
                "artifact {} is of type {:?}, which this fleetd cannot deploy (known: {})",
                meta.id,
                meta.kind.as_str(),
                ArtifactType::KNOWN.join(", ")
            ),
        ));
    }
    let sha256 = meta
        .sha256()
        .ok_or_else(|| DeployError::internal(format!("artifact {} has no sha256", meta.id)))?
        .to_string();
    Ok(ArtifactRef {
        name: meta.name.clone(),
        version: meta.version.clone(),
        kind: meta.kind.clone(),
        size: meta.size,
        sha256,
        url: store
            .download_url(meta, public_url)
            .await
            .map_err(DeployError::internal)?,
        sha512: meta.sha512().map(str::to_string),
        signatures: meta.signatures.clone(),
        platforms: meta.platforms.clone(),
        requirements: meta.requirements.clone(),
        refresh_url: Some(format!(
            "{}/api/v1/artifacts/{}/{}/url",
            public_url.trim_end_matches('/'),
            meta.name,
            meta.version
        )),
    })
}
