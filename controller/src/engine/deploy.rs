//! Creating a deployment: parse and validate the request, find the artifact, resolve the
//! target, commit deployment and desired states in one transaction, then queue the publishes.

use super::rollout;
use super::target::{self, TargetError};
use crate::db::{Db, NewDeployment};
use crate::metrics::Metrics;
use crate::mqtt::PublishQueue;
use crate::store::ArtifactStore;
use fleet_schema::api::{CreateDeployment, DeploymentCreated};
use fleet_schema::artifact::{validate_name, validate_version};
use fleet_schema::{compat, components, ArtifactRef, ArtifactType, DesiredComponent, Inventory};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

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
    /// The same error, saying which application's artifact it is about.
    fn in_application(self, name: &str, version: &str) -> Self {
        Self::new(
            self.kind,
            format!("application {name}@{version}: {}", self.message),
        )
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
    /// Which devices are enrolled (only they can be targeted).
    pub trust: &'a crate::trust::Trust,
}

/// Parses a JSON request body; unknown fields (also inside the strategy and the target) are
/// errors naming the field.
pub fn parse_request(body: &[u8]) -> Result<CreateDeployment, DeployError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| DeployError::bad(format!("malformed JSON in deployment request: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| DeployError::bad(format!("invalid deployment request: {e}")))
}

/// Creates a deployment from a request body. When `application@version` is a registered
/// application, every runnable artifact of it runs (several as components of the one app, see
/// `fleet_schema::components`) with its spec, on devices its placement allows; otherwise the
/// artifact of the same name and version is deployed with default settings.
pub async fn create(
    ctx: &DeployContext<'_>,
    body: &[u8],
) -> Result<DeploymentCreated, DeployError> {
    let req = parse_request(body)?;
    validate_name(&req.application).map_err(|e| DeployError::bad(format!("application: {e}")))?;
    validate_version(&req.version).map_err(DeployError::bad)?;
    let params = rollout::params::parse(req.strategy.as_ref()).map_err(DeployError::bad)?;
    let strategy = params.kind.as_str().to_string();

    let (name, version) = (req.application.clone(), req.version.clone());
    let registered = ctx
        .db
        .call(move |db| db.application(&name, &version))
        .await
        .map_err(DeployError::internal)?;
    let (artifact, spec, placement, components) = match registered {
        Some(rec) => {
            let app = rec.application;
            let parts = app.components();
            if parts.is_empty() {
                return Err(DeployError::new(
                    DeployErrorKind::Unprocessable,
                    format!(
                        "application {}@{} has no artifact of a type agents run",
                        app.name, app.version
                    ),
                ));
            }
            let mut components = Vec::with_capacity(parts.len());
            for part in parts {
                let artifact = find_artifact(ctx, &part.artifact.name, &part.artifact.version)
                    .await
                    .map_err(|e| e.in_application(&app.name, &app.version))?;
                components.push(DesiredComponent {
                    name: part.artifact.name,
                    artifact,
                    spec: part.spec,
                });
            }
            let primary = components.remove(0);
            // One runnable artifact: the app is that artifact, exactly as before components.
            let components = if components.is_empty() {
                Vec::new()
            } else {
                std::iter::once(primary.clone()).chain(components).collect()
            };
            (
                primary.artifact,
                primary.spec,
                Some(app.placement),
                components,
            )
        }
        None => {
            let artifact = find_artifact(ctx, &req.application, &req.version).await?;
            (artifact, Default::default(), None, Vec::new())
        }
    };

    let group = match &req.target.group {
        None => None,
        Some(g) => {
            let key = g.clone();
            let found = ctx
                .db
                .call(move |db| db.group(&key))
                .await
                .map_err(DeployError::internal)?;
            Some(found.ok_or_else(|| {
                DeployError::new(
                    DeployErrorKind::NotFound,
                    format!("target.group {g:?} not found (create it with POST /api/v1/groups)"),
                )
            })?)
        }
    };
    let records = ctx
        .db
        .call(|db| db.devices())
        .await
        .map_err(DeployError::internal)?;
    // A device whose enrollment was revoked (or reset) keeps its last record but can no longer
    // be targeted: it would never receive its desired state.
    let known: BTreeMap<String, BTreeMap<String, String>> = records
        .iter()
        .filter(|(id, _)| ctx.trust.device(id).is_some())
        .map(|(id, rec)| (id.clone(), rec.labels()))
        .collect();
    let mut devices = target::resolve_with_group(&req.target, group.as_ref(), &known)?;
    if let Some(p) = &placement {
        let mut rejected = Vec::new();
        devices.retain(|d| {
            let inv = records
                .get(d)
                .and_then(|r| r.status.as_ref())
                .and_then(|s| s.inventory.clone())
                .unwrap_or_default();
            match p.reject_reason(&inv) {
                Some(why) => {
                    rejected.push(format!("{d}: {why}"));
                    false
                }
                None => true,
            }
        });
        if devices.is_empty() {
            return Err(DeployError::new(
                DeployErrorKind::Unprocessable,
                format!(
                    "no target device satisfies the application's placement ({})",
                    rejected.join("; ")
                ),
            ));
        }
    }

    // Every artifact's platforms, type and requirements must fit every target that reported
    // an inventory (the agent re-checks before installing).
    let inventories: BTreeMap<&str, &Inventory> = devices
        .iter()
        .filter_map(|d| {
            Some((
                d.as_str(),
                records.get(d)?.status.as_ref()?.inventory.as_ref()?,
            ))
        })
        .collect();
    let app = format!("{}@{}", req.application, req.version);
    let unfit = unfit_targets(&app, &inventories, &artifact, &components);
    if !unfit.is_empty() {
        return Err(DeployError::new(
            DeployErrorKind::Unprocessable,
            unfit.join("; "),
        ));
    }

    let new = NewDeployment {
        application: req.application,
        version: req.version,
        strategy,
        artifact,
        devices,
        now: crate::clock::now_ms(),
        spec,
        params,
        target: Some(req.target),
        placement,
        components,
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
    let targets = record
        .rollout
        .as_ref()
        .map(|r| r.targets.clone())
        .unwrap_or_default();
    tracing::info!(
        id = %record.id,
        application = %record.application,
        version = %record.version,
        strategy = %record.strategy,
        devices = targets.len(),
        "deployment created"
    );
    Ok(DeploymentCreated {
        id: record.id,
        devices: targets,
    })
}

/// Why the targets that reported an inventory cannot run what is deployed (empty: they can):
/// each artifact (every component's, or the one) must fit their platform, type and
/// requirements, and an app of several artifacts needs agents that run components.
fn unfit_targets(
    app: &str,
    inventories: &BTreeMap<&str, &Inventory>,
    artifact: &ArtifactRef,
    components: &[DesiredComponent],
) -> Vec<String> {
    let mut out = Vec::new();
    if !components.is_empty() {
        let old: Vec<&str> = inventories
            .iter()
            .filter(|(_, inv)| !inv.capabilities.iter().any(|c| c == components::CAPABILITY))
            .map(|(d, _)| *d)
            .collect();
        if !old.is_empty() {
            out.push(format!(
                "application {app} runs {} artifacts as components, which the agent of {} does not do (it lacks capability {:?}; upgrade it)",
                components.len(),
                old.join(", "),
                components::CAPABILITY
            ));
        }
    }
    let artifacts: Vec<&ArtifactRef> = if components.is_empty() {
        vec![artifact]
    } else {
        components.iter().map(|c| &c.artifact).collect()
    };
    for a in artifacts {
        let bad: Vec<String> = inventories
            .iter()
            .filter_map(|(d, inv)| {
                let unmet = compat::unmet(&a.kind, &a.platforms, &a.requirements, inv);
                (!unmet.is_empty()).then(|| format!("{d}: {}", unmet.join(", ")))
            })
            .collect();
        if !bad.is_empty() {
            out.push(format!(
                "artifact {}@{} cannot run on {} target device(s): {}",
                a.name,
                a.version,
                bad.len(),
                bad.join("; ")
            ));
        }
    }
    out
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
        url: ctx
            .store
            .download_url(meta, ctx.public_url)
            .await
            .map_err(DeployError::internal)?,
        sha512: meta.sha512().map(str::to_string),
        signatures: meta.signatures.clone(),
        platforms: meta.platforms.clone(),
        requirements: meta.requirements.clone(),
        refresh_url: Some(format!(
            "{}/api/v1/artifacts/{}/{}/url",
            ctx.public_url.trim_end_matches('/'),
            meta.name,
            meta.version
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_must_fit_and_agents_must_run_components() {
        let inv = |caps: &[&str]| Inventory {
            arch: "amd64".into(),
            os: "linux".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        let artifact = |name: &str, kind: ArtifactType| ArtifactRef {
            name: name.into(),
            version: "1.0.0".into(),
            kind,
            ..Default::default()
        };
        let component = |name: &str, kind: ArtifactType| DesiredComponent {
            name: name.into(),
            artifact: artifact(name, kind),
            spec: Default::default(),
        };
        let parts = [
            component("engine", ArtifactType::Binary),
            component("model", ArtifactType::OciImage),
        ];
        let (new, old, bare) = (
            inv(&["binary", "components", "docker", "oci"]),
            inv(&["binary", "docker", "oci"]),
            inv(&["binary", "components"]),
        );
        let targets = BTreeMap::from([("new", &new)]);
        let engine = artifact("engine", ArtifactType::Binary);
        assert!(unfit_targets("edge@1.0.0", &targets, &engine, &parts).is_empty());
        let targets = BTreeMap::from([("new", &new), ("old", &old), ("bare", &bare)]);
        let why = unfit_targets("edge@1.0.0", &targets, &engine, &parts).join("; ");
        assert!(
            why.contains("agent of old does not") && why.contains("\"components\""),
            "{why}"
        );
        assert!(
            why.contains("artifact model@1.0.0 cannot run on 1 target device(s): bare"),
            "{why}"
        );
        assert!(!why.contains("artifact engine"), "{why}");
        // One artifact: only it is checked, and old agents run it as before.
        let targets = BTreeMap::from([("old", &old)]);
        assert!(unfit_targets("edge@1.0.0", &targets, &engine, &[]).is_empty());
    }

    #[test]
    fn request_parsing_names_the_problem() {
        let err = parse_request(b"{not json").expect_err("malformed");
        assert!(err.message.starts_with("malformed JSON"), "{}", err.message);
        let err = parse_request(
            br#"{"application":"a","version":"1.0.0","strategy":{"type":"rolling","max_unavailble":1},"target":{}}"#,
        )
        .expect_err("typo in a strategy parameter");
        assert!(err.message.contains("max_unavailble"), "{}", err.message);
        let ok = parse_request(
            br#"{"application":"myapp","version":"2.0.0","strategy":{"type":"rolling","max_unavailable":1,"health_check_grace":"30s"},"target":{"group":"edge-stores","selector":{"location":"us-west"}}}"#,
        )
        .expect("the seed's request parses");
        let p = rollout::params::parse(ok.strategy.as_ref()).expect("valid strategy");
        assert_eq!((p.max_unavailable, p.min_healthy_ms), (1, 30_000));
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
