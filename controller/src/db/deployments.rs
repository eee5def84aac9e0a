//! The `deployments` table, and the one write transaction that creates a deployment together
//! with every target device's next desired state.

use super::{decode, encode, Db, DbError, DeploymentRecord, COUNTERS, DEPLOYMENTS, DESIRED};
use crate::engine::{ids, plan};
use fleet_schema::{ArtifactRef, DesiredApp, DesiredState, UnixMillis};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;

/// Device ids with the CBOR of their new desired state, in target order.
pub type DesiredBytes = Vec<(String, Vec<u8>)>;

/// Counter key of the deployment sequence.
const DEPLOYMENT_SEQ: &str = "deployment_seq";

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
    /// Resolved target devices (all known to the controller).
    pub devices: Vec<String>,
    /// Creation time.
    pub now: UnixMillis,
}

impl Db {
    /// Stores the deployment and, for every target device, a desired state one generation
    /// higher with the application set to the new version, all in one transaction. Returns the
    /// record and the CBOR of each new desired state, to publish after the commit.
    pub fn create_deployment(
        &self,
        new: NewDeployment,
    ) -> Result<(DeploymentRecord, DesiredBytes), DbError> {
        let txn = self.raw().begin_write()?;
        let mut published = Vec::with_capacity(new.devices.len());
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

            let mut desired = txn.open_table(DESIRED)?;
            let mut generations = BTreeMap::new();
            for device in &new.devices {
                let prev: Option<DesiredState> = match desired.get(device.as_str())? {
                    Some(v) => Some(decode("desired", device, v.value())?),
                    None => None,
                };
                let app = DesiredApp {
                    name: new.application.clone(),
                    version: new.version.clone(),
                    artifact: new.artifact.clone(),
                    deployment_id: Some(id.clone()),
                    spec: Default::default(),
                };
                let next = plan::set_app(prev.as_ref(), device, app, new.now);
                let bytes = encode(&next)?;
                desired.insert(device.as_str(), bytes.as_slice())?;
                generations.insert(device.clone(), next.generation);
                published.push((device.clone(), bytes));
            }

            record = DeploymentRecord {
                id: id.clone(),
                application: new.application,
                version: new.version,
                strategy: new.strategy,
                created_at: new.now,
                artifact: new.artifact,
                devices: generations,
            };
            let mut deployments = txn.open_table(DEPLOYMENTS)?;
            deployments.insert(id.as_str(), encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        Ok((record, published))
    }

    /// One deployment.
    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, DbError> {
        let txn = self.raw().begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        match table.get(id)? {
            Some(v) => Ok(Some(decode("deployments", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every deployment, oldest first (ids sort by creation). Corrupt records are logged and
    /// skipped.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, DbError> {
        let txn = self.raw().begin_read()?;
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
        NewDeployment {
            application: app.into(),
            version: version.into(),
            strategy: "all-at-once".into(),
            artifact: ArtifactRef {
                name: app.into(),
                version: version.into(),
                kind: ArtifactType::Binary,
                size: 3,
                sha256: "00".into(),
                url: "http://x".into(),
            },
            devices: devices.iter().map(|d| d.to_string()).collect(),
            now: 1_700_000_000_000,
        }
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
}
