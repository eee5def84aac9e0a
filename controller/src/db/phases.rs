//! The `deployment_phases` index: each deployment's rollout phase beside its record, written in
//! the same transaction, so the rollout driver finds the deployments it must look at without
//! decoding every record (a finished deployment of 10,000 devices is megabytes of CBOR).

use super::{decode, encode, Db, DbError, DEPLOYMENTS};
use crate::model::DeploymentRecord;
use crate::model::Phase;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};

/// Phase of each deployment by id (`Phase::as_str`; "none" for records without a rollout).
pub(crate) const PHASES: TableDefinition<&str, &str> = TableDefinition::new("deployment_phases");

/// The phase label stored for a record.
fn label(rec: &DeploymentRecord) -> &'static str {
    rec.rollout.as_ref().map_or("none", |r| r.phase.as_str())
}

/// Writes a deployment record and its phase (callers hold both tables of one transaction).
pub(crate) fn put_deployment(
    deployments: &mut Table<&str, &[u8]>,
    phases: &mut Table<&str, &str>,
    rec: &DeploymentRecord,
) -> Result<(), DbError> {
    deployments.insert(rec.id.as_str(), encode(rec)?.as_slice())?;
    phases.insert(rec.id.as_str(), label(rec))?;
    Ok(())
}

impl Db {
    /// Rebuilds the index when it does not cover every record (a database written before the
    /// index existed, or healed after a manual edit). Runs at open.
    pub(crate) fn heal_phases(&self) -> Result<(), DbError> {
        let txn = self.raw()?.begin_write()?;
        {
            let deployments = txn.open_table(DEPLOYMENTS)?;
            let mut phases = txn.open_table(PHASES)?;
            if phases.len()? == deployments.len()? {
                return Ok(());
            }
            tracing::info!("rebuilding the deployment phase index");
            phases.retain(|_, _| false)?;
            for entry in deployments.iter()? {
                let (k, v) = entry?;
                match decode::<DeploymentRecord>("deployments", k.value(), v.value()) {
                    Ok(rec) => {
                        phases.insert(k.value(), label(&rec))?;
                    }
                    Err(e) => tracing::warn!(error = %e, "deployment left out of the phase index"),
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every deployment's id and phase (`None` for records without a rollout), oldest first.
    pub fn deployment_phases(&self) -> Result<Vec<(String, Option<Phase>)>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(PHASES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), Phase::parse(v.value())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::deployment_write::tests::{put, record};

    #[test]
    fn the_index_follows_every_write_and_is_rebuilt_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.redb");
        let db = Db::open(&path).expect("opens");
        put(&db, &[record("d-1", Phase::Running, &["x", "y"])], &[]);
        put(
            &db,
            &[
                record("d-1", Phase::Superseded, &["x", "y"]),
                record("d-2", Phase::Running, &["y"]),
            ],
            &[],
        );
        let phases = db.deployment_phases().expect("reads");
        assert_eq!(
            phases,
            vec![
                ("d-1".to_string(), Some(Phase::Superseded)),
                ("d-2".to_string(), Some(Phase::Running))
            ]
        );
        // A database from before the index: the table is emptied, and reopening rebuilds it.
        let txn = db.raw().expect("open").begin_write().expect("write");
        txn.open_table(PHASES)
            .expect("table")
            .retain(|_, _| false)
            .expect("emptied");
        txn.commit().expect("commit");
        drop(db);
        let db = Db::open(&path).expect("reopens");
        assert_eq!(db.deployment_phases().expect("reads"), phases);
    }
}
