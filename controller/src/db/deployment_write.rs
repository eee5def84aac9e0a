//! One write transaction over deployments and the desired states they change. The database
//! holds no rules: the deployment service reads records through this handle, lets the pure
//! engine decide, and writes what it decided; everything is committed together or not at all.
//! A SIGKILL at any point leaves either the old or the new state, never half of one, so a
//! restarted fleetd resumes the same rollout step.

use super::phases::{put_deployment, PHASES};
use super::{decode, encode, Db, DbError, COUNTERS, DEPLOYMENTS, DESIRED};
use crate::model::{DeploymentRecord, Phase};
use fleet_schema::DesiredState;
use redb::{ReadableTable, Table};

/// Counter key of the deployment sequence.
const DEPLOYMENT_SEQ: &str = "deployment_seq";

/// The tables of one write transaction: deployment records with their phase index, desired
/// states and counters. Obtained from [`Db::write_deployments`].
pub struct DeploymentWrite<'t> {
    deployments: Table<'t, &'static str, &'static [u8]>,
    phases: Table<'t, &'static str, &'static str>,
    desired: Table<'t, &'static str, &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
    /// Whether anything was written (a transaction that wrote nothing is aborted, not
    /// committed, so a rollout tick that changes nothing costs no disk write).
    written: bool,
}

impl DeploymentWrite<'_> {
    /// The next number of the deployment sequence (1 for the first), counted in this
    /// transaction.
    pub fn next_deployment_seq(&mut self) -> Result<u64, DbError> {
        let seq = self
            .counters
            .get(DEPLOYMENT_SEQ)?
            .map(|v| v.value())
            .unwrap_or(0)
            + 1;
        self.counters.insert(DEPLOYMENT_SEQ, seq)?;
        self.written = true;
        Ok(seq)
    }

    /// Every deployment's id and phase from the phase index (`None` for records without a
    /// rollout), oldest first, as this transaction sees them.
    pub fn deployment_phases(&self) -> Result<Vec<(String, Option<Phase>)>, DbError> {
        let mut out = Vec::new();
        for entry in self.phases.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), Phase::parse(v.value())));
        }
        Ok(out)
    }

    /// One deployment record; a corrupt one is an error naming it.
    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, DbError> {
        match self.deployments.get(id)? {
            Some(v) => Ok(Some(decode("deployments", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes a deployment record and its phase.
    pub fn put_deployment(&mut self, rec: &DeploymentRecord) -> Result<(), DbError> {
        put_deployment(&mut self.deployments, &mut self.phases, rec)?;
        self.written = true;
        Ok(())
    }

    /// One device's desired state as stored.
    pub fn desired(&self, device: &str) -> Result<Option<DesiredState>, DbError> {
        match self.desired.get(device)? {
            Some(v) => Ok(Some(decode("desired", device, v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a device's desired state; returns its CBOR, the exact bytes to publish.
    pub fn put_desired(&mut self, state: &DesiredState) -> Result<Vec<u8>, DbError> {
        let bytes = encode(state)?;
        self.desired
            .insert(state.device_id.as_str(), bytes.as_slice())?;
        self.written = true;
        Ok(bytes)
    }
}

impl Db {
    /// Runs `f` in one write transaction over deployments, desired states and counters. It is
    /// committed when `f` succeeds and wrote something, and aborted when `f` fails or wrote
    /// nothing.
    pub fn write_deployments<T, E>(
        &self,
        f: impl FnOnce(&mut DeploymentWrite<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let txn = self.raw()?.begin_write().map_err(DbError::from)?;
        let (out, written) = {
            let mut w = DeploymentWrite {
                deployments: txn.open_table(DEPLOYMENTS).map_err(DbError::from)?,
                phases: txn.open_table(PHASES).map_err(DbError::from)?,
                desired: txn.open_table(DESIRED).map_err(DbError::from)?,
                counters: txn.open_table(COUNTERS).map_err(DbError::from)?,
                written: false,
            };
            let out = f(&mut w)?;
            (out, w.written)
        };
        if written {
            txn.commit().map_err(DbError::from)?;
        } else {
            txn.abort().map_err(DbError::from)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Params, Rollout};
    use fleet_schema::{ArtifactRef, DesiredApp};
    use std::collections::BTreeMap;

    /// A deployment record of app `a` for `targets` in `phase`, as the service would store it.
    pub(crate) fn record(id: &str, phase: Phase, targets: &[&str]) -> DeploymentRecord {
        let targets: Vec<String> = targets.iter().map(|d| d.to_string()).collect();
        let mut rollout = Rollout::new(Params::all_at_once(), targets, 1);
        rollout.phase = phase;
        DeploymentRecord {
            id: id.into(),
            application: "a".into(),
            version: "1.0.0".into(),
            strategy: "all-at-once".into(),
            created_at: 1,
            artifact: ArtifactRef::default(),
            devices: BTreeMap::new(),
            rollout: Some(rollout),
            template: None,
            previous: BTreeMap::new(),
            target: None,
            placement: None,
        }
    }

    /// A desired state of `device` at `generation` running app `a` of `deployment`.
    pub(crate) fn desired(device: &str, generation: u64, deployment: &str) -> DesiredState {
        DesiredState {
            device_id: device.into(),
            generation,
            apps: vec![DesiredApp {
                name: "a".into(),
                version: "1.0.0".into(),
                artifact: ArtifactRef::default(),
                deployment_id: Some(deployment.into()),
                spec: Default::default(),
                rollout: None,
                components: Vec::new(),
            }],
            issued_at: 1,
        }
    }

    /// Stores records and desired states in one transaction.
    pub(crate) fn put(db: &Db, records: &[DeploymentRecord], states: &[DesiredState]) {
        db.write_deployments(|w| {
            for rec in records {
                w.put_deployment(rec)?;
            }
            for s in states {
                w.put_desired(s)?;
            }
            Ok::<_, DbError>(())
        })
        .expect("writes");
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_and_a_good_one_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        let failed: Result<(), DbError> = db.write_deployments(|w| {
            w.next_deployment_seq()?;
            w.put_deployment(&record("d-1", Phase::Running, &["x"]))?;
            w.put_desired(&desired("x", 1, "d-1"))?;
            Err(DbError::Encode("the decision failed".into()))
        });
        assert!(failed.is_err());
        assert!(db.deployment("d-1").expect("reads").is_none());
        assert!(db.desired("x").expect("reads").is_none());
        assert!(db.deployment_phases().expect("reads").is_empty());
        let (seq, bytes) = db
            .write_deployments(|w| {
                let seq = w.next_deployment_seq()?;
                w.put_deployment(&record("d-1", Phase::Running, &["x"]))?;
                Ok::<_, DbError>((seq, w.put_desired(&desired("x", 1, "d-1"))?))
            })
            .expect("commits");
        assert_eq!(seq, 1, "the failed transaction's count was not kept");
        assert_eq!(db.desired_bytes("x").expect("reads"), Some(bytes));
        assert_eq!(
            db.deployment_phases().expect("reads"),
            vec![("d-1".to_string(), Some(Phase::Running))]
        );
        let seq = db
            .write_deployments(|w| w.next_deployment_seq())
            .expect("counts");
        assert_eq!(seq, 2);
    }
}
