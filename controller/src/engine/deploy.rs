//! Creating a deployment: parse and validate the request, find the artifact, resolve the
//! target, commit deployment and desired states in one transaction, then queue the publishes.

use super::target::{self, TargetError};
use crate::db::{Db, NewDeployment};
use crate::metrics::Metrics;
use crate::mqtt::PublishQueue;
use crate::store::ArtifactStore;
use fleet_schema::api::{CreateDeployment, DeploymentCreated};
use fleet_schema::artifact::{validate_name, validate_version};
use fleet_schema::{ArtifactRef, ArtifactType};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// The only strategy implemented today.
pub const ALL_AT_ONCE: &str = "all-at-once";

/// What kind of failure, which the HTTP layer maps to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployErrorKind {
    /// Malformed or invalid request (400).
    BadRequest,
    /// Unknown artifact or version (404).
    NotFound,
    /// Well-formed but unusable: empty or unknown target, undeployable type (422).
    Unprocessable,
    /// Database or store failure (500).
    Internal,
}

/// A deployment request that cannot be carried out, with a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeployError {
    /// Category.
    pub kind: DeployErrorKind,
    /// What was wrong.
    pub message: String,
}

impl DeployError {
    fn new(kind: DeployErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(DeployErrorKind::BadRequest, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(DeployErrorKind::Internal, e.to_string())
    }
}

impl From<TargetError> for DeployError {
    fn from(e: TargetError) -> Self {
        Self::new(DeployErrorKind::Unprocessable, e.to_string())
    }
}

/// What creating a deployment needs.
pub struct DeployContext<'a> {
    /// Database.
    pub db: &'a Db,
    /// Artifact store.
    pub store: &'a dyn ArtifactStore,
    /// Publishing requests.
    pub queue: &'a PublishQueue,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Base URL devices download from.
    pub public_url: &'a str,
}

/// Parses a JSON request body. Strategies other than all-at-once get a specific message even
/// when they carry parameters this build does not know.
pub fn parse_request(body: &[u8]) -> Result<CreateDeployment, DeployError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| DeployError::bad(format!("malformed JSON in deployment request: {e}")))?;
    if let Some(kind) = value
        .get("strategy")
        .and_then(|s| s.get("type"))
        .and_then(|t| t.as_str())
    {
        if kind != ALL_AT_ONCE {
            return Err(DeployError::bad(format!(
                "strategy {kind:?} is not supported yet (supported: {ALL_AT_ONCE})"
            )));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| DeployError::bad(format!("invalid deployment request: {e}")))
}

/// Creates a deployment from a request body.
pub async fn create(
    ctx: &DeployContext<'_>,
    body: &[u8],
) -> Result<DeploymentCreated, DeployError> {
    let req = parse_request(body)?;
    validate_name(&req.application).map_err(|e| DeployError::bad(format!("application: {e}")))?;
    validate_version(&req.version).map_err(DeployError::bad)?;
    let strategy = req
        .strategy
        .as_ref()
        .map_or(ALL_AT_ONCE.to_string(), |s| s.kind.clone());

    let artifact = find_artifact(ctx, &req.application, &req.version).await?;

    let known: BTreeMap<String, BTreeMap<String, String>> = ctx
        .db
        .call(|db| db.devices())
        .await
        .map_err(DeployError::internal)?
        .into_iter()
        .map(|(id, rec)| {
            let labels = rec.labels();
            (id, labels)
        })
        .collect();
    let devices = target::resolve(&req.target, &known)?;

    let new = NewDeployment {
        application: req.application,
        version: req.version,
        strategy,
        artifact,
        devices,
        now: crate::clock::now_ms(),
    };
    let (record, published) = ctx
        .db
        .call(move |db| db.create_deployment(new))
        .await
        .map_err(DeployError::internal)?;
    ctx.metrics
        .deployments_created
        .fetch_add(1, Ordering::Relaxed);
    ctx.queue
        .mark_devices(published.into_iter().map(|(id, _)| id));
    tracing::info!(
        id = %record.id,
        application = %record.application,
        version = %record.version,
        devices = record.devices.len(),
        "deployment created"
    );
    Ok(DeploymentCreated {
        id: record.id,
        devices: record.devices.into_keys().collect(),
    })
}

/// Finds the artifact implementing `application@version` and builds the device-side reference.
async fn find_artifact(
    ctx: &DeployContext<'_>,
    name: &str,
    version: &str,
) -> Result<ArtifactRef, DeployError> {
    let versions = ctx
        .store
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
    if meta.kind != ArtifactType::Binary {
        return Err(DeployError::new(
            DeployErrorKind::Unprocessable,
            format!(
                "artifact {} is of type {:?}, which cannot be deployed yet (only \"binary\")",
                meta.id,
                meta.kind.as_str()
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
        url: ctx.store.download_url(meta, ctx.public_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parsing_names_the_problem() {
        let err = parse_request(b"{not json").expect_err("malformed");
        assert!(err.message.starts_with("malformed JSON"), "{}", err.message);
        let err = parse_request(
            br#"{"application":"a","version":"1.0.0","strategy":{"type":"rolling","max_unavailable":1},"target":{}}"#,
        )
        .expect_err("unsupported");
        assert_eq!(
            err.message,
            "strategy \"rolling\" is not supported yet (supported: all-at-once)"
        );
        let err = parse_request(br#"{"application":"a","version":"1.0.0","target":{},"typo":1}"#)
            .expect_err("unknown field");
        assert!(err.message.contains("typo"), "{}", err.message);
        assert_eq!(err.kind, DeployErrorKind::BadRequest);
        let ok =
            parse_request(br#"{"application":"a","version":"1.0.0","target":{"devices":["d"]}}"#)
                .expect("valid");
        assert!(ok.strategy.is_none());
    }
}
