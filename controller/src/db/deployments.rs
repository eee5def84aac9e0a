//! The `deployments` table, and the one write transaction that creates a deployment together
//! with every target device's next desired state.

use super::phases::{put_deployment, PHASES};
use super::{decode, Db, DbError, DeploymentRecord, COUNTERS, DEPLOYMENTS, DESIRED};
use crate::engine::ids;
use crate::engine::rollout::{tick, Ctx, Kind, Params, Phase, Rollout, Snapshot};
use fleet_schema::api::TargetSpec;
use fleet_schema::components::{self, DesiredComponent};
use fleet_schema::manifest::Placement;
use fleet_schema::{AppSpec, ArtifactRef, BlueGreenHint, DesiredApp, UnixMillis};
use redb::{ReadableDatabase, ReadableTable, Table};
use std::collections::{BTreeMap, HashSet};

/// Device ids with the CBOR of their new desired state, in target order.
pub type DesiredBytes = Vec<(String, Vec<u8>)>;

/// Counter key of the deployment sequence.
const DEPLOYMENT_SEQ: &str = "deployment_seq";

/// Marks unfinished deployments of `app` that share a device with `devices` as superseded by
/// `by`, so two rollouts never fight over a device.
fn supersede_overlapping(
    table: &mut Table<&str, &[u8]>,
    phases: &mut Table<&str, &str>,
    app: &str,
    devices: &[String],
    by: &str,
) -> Result<(), DbError> {
    let unfinished: Vec<String> = phases
        .iter()?
        .filter_map(|e| e.ok())
        .filter(|(_, p)| Phase::parse(p.value()).is_some_and(|p| !p.is_final()))
        .map(|(k, _)| k.value().to_string())
        .collect();
    let devices: HashSet<&String> = devices.iter().collect();
    let mut changed = Vec::new();
    for id in unfinished {
        let Some(v) = table.get(id.as_str())? else {
            continue;
        };
        let Ok(mut rec) = decode::<DeploymentRecord>("deployments", &id, v.value()) else {
            continue;
        };
        drop(v);
        let Some(r) = rec.rollout.as_mut() else {
            continue;
        };
        if rec.application != app || r.phase.is_final() {
            continue;
        }
        if r.targets.iter().any(|d| devices.contains(d)) {
            r.phase = Phase::Superseded;
            tracing::info!(deployment = %rec.id, by, "deployment superseded");
            changed.push(rec);
        }
    }
    for rec in changed {
        put_deployment(table, phases, &rec)?;
    }
    Ok(())
}

/// A validated deployment, ready to be committed.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Application name.
    pub application: String,
    /// Version to deploy.
    pub version: String,
    /// Strategy type.
    pub strategy: String,
    /// The artifact implementing that version.
    pub artifact: ArtifactRef,
    /// Resolved target devices (all known to the controller), in rollout order.
    pub devices: Vec<String>,
    /// Creation time.
    pub now: UnixMillis,
    /// How devices run it (from the registered application; defaults for a bare artifact).
    pub spec: AppSpec,
    /// Normalised strategy.
    pub params: Params,
    /// The target as requested (late joiners are matched against it).
    pub target: Option<TargetSpec>,
    /// The registered application's placement (late joiners must satisfy it too).
    pub placement: Option<Placement>,
    /// Every runnable artifact with its spec when the application has several (then devices
    /// get these as components and a marker instead of `artifact`, which stays the primary
    /// for the API); empty otherwise.
    pub components: Vec<DesiredComponent>,
}

impl NewDeployment {
    /// A bare all-at-once deployment of an artifact (tests and older callers).
    pub fn all_at_once(
        application: &str,
        version: &str,
        artifact: ArtifactRef,
        devices: Vec<String>,
        now: UnixMillis,
    ) -> Self {
        Self {
            application: application.into(),
            version: version.into(),
            strategy: "all-at-once".into(),
            artifact,
            devices,
            now,
            spec: AppSpec::default(),
            params: Params::all_at_once(),
            target: None,
            placement: None,
            components: Vec::new(),
        }
    }
}

impl Db {
    /// Stores the deployment and starts its rollout in one transaction: the first step's devices
    /// get a desired state one generation higher with the application set to the new version;
    /// older unfinished deployments of the same application to overlapping devices are marked
    /// superseded. Returns the record and the CBOR of each new desired state, to publish after
    /// the commit.
    pub fn create_deployment(
        &self,
        new: NewDeployment,
    ) -> Result<(DeploymentRecord, DesiredBytes), DbError> {
        let txn = self.raw()?.begin_write()?;
        let published;
        let record;
        {
            let mut counters = txn.open_table(COUNTERS)?;
            let seq = counters
                .get(DEPLOYMENT_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            counters.insert(DEPLOYMENT_SEQ, seq)?;
            let id = ids::deployment_id(new.now, seq);

            let mut deployments = txn.open_table(DEPLOYMENTS)?;
            let mut phases = txn.open_table(PHASES)?;
            supersede_overlapping(
                &mut deployments,
                &mut phases,
                &new.application,
                &new.devices,
                &id,
            )?;

            let several = !new.components.is_empty();
            let template = DesiredApp {
                name: new.application.clone(),
                version: new.version.clone(),
                artifact: if several {
                    components::marker_artifact(&new.application, &new.version)
                } else {
                    new.artifact.clone()
                },
                deployment_id: Some(id.clone()),
                // With components, each carries its own spec; the app's stays default so that
                // an agent predating components refuses on the marker's type alone.
                spec: if several {
                    AppSpec::default()
                } else {
                    new.spec
                },
                rollout: (new.params.kind == Kind::BlueGreen).then_some(BlueGreenHint {
                    validation_ms: new.params.min_healthy_ms,
                    switch_delay_ms: new.params.switch_delay_ms,
                }),
                components: new.components,
            };
            let mut rollout = Rollout::new(new.params, new.devices, new.now);
            let ctx = Ctx {
                version: &new.version,
                has_healthcheck: template.has_healthcheck(),
                deployment_id: &id,
            };
            let actions = tick(&mut rollout, ctx, &Snapshot::default(), new.now);
            let mut rec = DeploymentRecord {
                id: id.clone(),
                application: new.application,
                version: new.version,
                strategy: new.strategy,
                created_at: new.now,
                artifact: new.artifact,
                devices: BTreeMap::new(),
                rollout: None,
                template: Some(template),
                previous: BTreeMap::new(),
                target: new.target,
                placement: new.placement,
            };
            rec.rollout = Some(rollout);
            let mut desired = txn.open_table(DESIRED)?;
            published = super::rollouts::write_actions(&mut desired, &mut rec, &actions, new.now)?;
            put_deployment(&mut deployments, &mut phases, &rec)?;
            record = rec;
        }
        txn.commit()?;
        Ok((record, published))
    }

    /// One deployment.
    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        match table.get(id)? {
            Some(v) => Ok(Some(decode("deployments", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every deployment, oldest first (ids sort by creation). Corrupt records are logged and
    /// skipped.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<DeploymentRecord>("deployments", k.value(), v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(error = %e, "skipping deployment record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::ArtifactType;

    fn new(app: &str, version: &str, devices: &[&str]) -> NewDeployment {
        NewDeployment::all_at_once(
            app,
            version,
            ArtifactRef {
                name: app.into(),
                version: version.into(),
                kind: ArtifactType::Binary,
                size: 3,
                sha256: "00".into(),
                url: "http://x".into(),
                ..Default::default()
            },
            devices.iter().map(|d| d.to_string()).collect(),
            1_700_000_000_000,
        )
    }

    #[test]
    fn generations_grow_and_other_apps_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        let (d1, _) = db
            .create_deployment(new("a", "1.0.0", &["x", "y"]))
            .expect("d1");
        let (d2, out) = db.create_deployment(new("b", "2.0.0", &["x"])).expect("d2");
        assert!(d1.id < d2.id, "ids sort by creation");
        assert_eq!(d2.devices.get("x"), Some(&2));
        assert_eq!(out.len(), 1);
        let x = db.desired("x").expect("reads").expect("present");
        assert_eq!(x.generation, 2);
        assert_eq!(x.apps.len(), 2);
        let y = db.desired("y").expect("reads").expect("present");
        assert_eq!(y.generation, 1);
        assert_eq!(db.deployments().expect("lists").len(), 2);
        assert_eq!(
            db.desired_bytes("x").expect("reads"),
            Some(out[0].1.clone()),
            "stored bytes are the published bytes"
        );
    }

    #[test]
    fn a_canary_touches_only_its_first_step_and_a_newer_deployment_supersedes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        let mut d = new("a", "1.0.0", &["w", "x", "y", "z"]);
        d.params = crate::engine::rollout::params::parse(Some(&fleet_schema::api::StrategySpec {
            kind: "canary".into(),
            initial_percentage: Some(25),
            ..Default::default()
        }))
        .expect("valid");
        let (d1, out) = db.create_deployment(d).expect("d1");
        assert_eq!(out.len(), 1, "only the first step's device is written");
        assert!(db.desired("x").expect("reads").is_none());
        assert_eq!(d1.previous.get("w"), Some(&None), "nothing ran before");
        let (_, _) = db.create_deployment(new("a", "2.0.0", &["z"])).expect("d2");
        let d1 = db.deployment(&d1.id).expect("reads").expect("present");
        assert_eq!(d1.rollout.map(|r| r.phase), Some(Phase::Superseded));
        let (_, _) = db
            .create_deployment(new("b", "1.0.0", &["w"]))
            .expect("other app");
    }
}
