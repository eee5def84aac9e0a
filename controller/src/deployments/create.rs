//! Creating a deployment: parse and validate the request, find the artifact, resolve the
//! target, commit deployment and desired states in one transaction, then queue the publishes.

use super::artifact::find_artifact;
use super::commit;
use super::error::{DeployError, DeployErrorKind};
use crate::db::Db;
use crate::engine::start::NewDeployment;
use crate::engine::targeting::{self, Release, Unfit};
use crate::metrics::Metrics;
use crate::model::strategy;
use crate::mqtt::PublishQueue;
use crate::store::ArtifactStore;
use fleet_schema::api::{CreateDeployment, DeploymentCreated};
use fleet_schema::artifact::{validate_name, validate_version};
use fleet_schema::DesiredComponent;
use std::sync::atomic::Ordering;

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
    let params = strategy::parse(req.strategy.as_ref()).map_err(DeployError::bad)?;
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
                let artifact = find_artifact(
                    ctx.store,
                    ctx.public_url,
                    &part.artifact.name,
                    &part.artifact.version,
                )
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
            let artifact =
                find_artifact(ctx.store, ctx.public_url, &req.application, &req.version).await?;
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
    let mut fleet = ctx
        .db
        .call(|db| db.devices())
        .await
        .map_err(DeployError::internal)?;
    // A device whose enrollment was revoked (or reset) keeps its last record but can no longer
    // be targeted: it would never receive its desired state.
    fleet.retain(|id, _| ctx.trust.device(id).is_some());
    let release = Release {
        artifact: &artifact,
        components: &components,
    };
    let app = format!("{}@{}", req.application, req.version);
    let selection = targeting::select(
        &req.target,
        group.as_ref(),
        &fleet,
        placement.as_ref(),
        release,
    )?;
    let devices = fit_or_refuse(&app, selection)?;

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
        .call(move |db| commit::create_deployment(db, new))
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

/// The devices a deployment goes to: those the target picked that can receive it. Devices the
/// application's placement excludes are left out (an error when that leaves none); a picked
/// device that cannot run what is deployed refuses the whole request, naming each such device
/// and why, since the operator asked for it.
fn fit_or_refuse(app: &str, selection: targeting::Selection) -> Result<Vec<String>, DeployError> {
    let (mut placement, mut release) = (Vec::new(), Vec::new());
    for (d, why) in &selection.unfit {
        match why {
            Unfit::Placement(w) => placement.push(format!("{d}: {w}")),
            Unfit::Release(w) => release.push(format!("{d}: {w}")),
        }
    }
    if !release.is_empty() {
        return Err(DeployError::new(
            DeployErrorKind::Unprocessable,
            format!(
                "application {app} cannot run on {} target device(s): {}",
                release.len(),
                release.join("; ")
            ),
        ));
    }
    if selection.fit.is_empty() {
        return Err(DeployError::new(
            DeployErrorKind::Unprocessable,
            format!(
                "no target device satisfies the application's placement ({})",
                placement.join("; ")
            ),
        ));
    }
    Ok(selection.fit)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = strategy::parse(ok.strategy.as_ref()).expect("valid strategy");
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

    #[test]
    fn placement_leaves_devices_out_and_an_unfit_release_refuses_the_request() {
        let sel = |fit: &[&str], unfit: &[(&str, Unfit)]| targeting::Selection {
            fit: fit.iter().map(|d| d.to_string()).collect(),
            unfit: unfit
                .iter()
                .map(|(d, u)| (d.to_string(), u.clone()))
                .collect(),
        };
        let elsewhere = || Unfit::Placement("device type is not \"pi\"".into());
        let ok = fit_or_refuse("a@1", sel(&["pi"], &[("nuc", elsewhere())])).expect("fits");
        assert_eq!(ok, vec!["pi"]);
        let err = fit_or_refuse("a@1", sel(&[], &[("nuc", elsewhere())])).expect_err("none");
        assert_eq!(err.kind, DeployErrorKind::Unprocessable);
        assert!(
            err.message
                .contains("placement (nuc: device type is not \"pi\")"),
            "{}",
            err.message
        );
        let arm =
            Unfit::Release("platform linux/amd64 is not among the artifact's platforms".into());
        let err = fit_or_refuse("a@1", sel(&["pi"], &[("nuc", elsewhere()), ("x86", arm)]))
            .expect_err("refused");
        assert!(
            err.message
                .contains("a@1 cannot run on 1 target device(s): x86: platform linux/amd64"),
            "{}",
            err.message
        );
    }
}
