//! Retention of finished deployments: every deployment record holds per-device state (megabytes
//! at fleet size), so keeping each one forever grows the database with every release. The
//! oldest finished deployments beyond a configured count are removed, except those some
//! device's desired state still names (the deployment a device is running stays visible).

use super::{decode, Db, DbError, DEPLOYMENTS, DESIRED};
use crate::db::phases::PHASES;
use crate::model::Phase;
use fleet_schema::DesiredState;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashSet;

fn is_finished(label: &str) -> bool {
    // Records without a rollout ("none") are legacy all-at-once records: finished once written.
    label == "none" || Phase::parse(label).is_some_and(Phase::is_final)
}

impl Db {
    /// Removes the oldest finished deployments beyond the `keep` most recent ones, skipping any
    /// a device's desired state still names. Returns how many were removed.
    pub fn prune_finished_deployments(&self, keep: usize) -> Result<usize, DbError> {
        let finished: Vec<String> = {
            let txn = self.raw()?.begin_read()?;
            let phases = txn.open_table(PHASES)?;
            let mut ids = Vec::new();
            for entry in phases.iter()? {
                let (k, v) = entry?;
                if is_finished(v.value()) {
                    ids.push(k.value().to_string());
                }
            }
            ids
        };
        if finished.len() <= keep {
            return Ok(0);
        }
        let referenced = self.referenced_deployments()?;
        let excess = finished.len() - keep;
        // Ids sort by creation time (see `ids::deployment_id`): the first are the oldest.
        let doomed: Vec<&String> = finished
            .iter()
            .filter(|id| !referenced.contains(id.as_str()))
            .take(excess)
            .collect();
        let txn = self.raw()?.begin_write()?;
        let mut removed = 0;
        {
            let mut deployments = txn.open_table(DEPLOYMENTS)?;
            let mut phases = txn.open_table(PHASES)?;
            for id in doomed {
                // Re-checked inside the write transaction: still finished.
                let still_finished = phases
                    .get(id.as_str())?
                    .is_some_and(|v| is_finished(v.value()));
                if still_finished {
                    phases.remove(id.as_str())?;
                    deployments.remove(id.as_str())?;
                    removed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Deployment ids named by any device's desired state.
    fn referenced_deployments(&self) -> Result<HashSet<String>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DESIRED)?;
        let mut out = HashSet::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<DesiredState>("desired", k.value(), v.value()) {
                Ok(d) => out.extend(d.apps.into_iter().filter_map(|a| a.deployment_id)),
                Err(e) => tracing::warn!(error = %e, "desired state left out of retention"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::db::deployment_write::tests::{desired, put, record};
    use crate::db::Db;
    use crate::model::Phase;

    #[test]
    fn removes_the_oldest_finished_deployments_beyond_the_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        // Six running deployments, each to its own device.
        let ids: Vec<String> = (0..6).map(|i| format!("d-1-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let device = format!("x{i}");
            put(
                &db,
                &[record(id, Phase::Running, &[&device])],
                &[desired(&device, 1, id)],
            );
        }
        assert_eq!(
            db.prune_finished_deployments(0).expect("prunes"),
            0,
            "running deployments are never pruned"
        );
        // Devices x0..x3 move on to newer deployments: the older ones are superseded (finished,
        // and no desired state names them any more).
        for (i, id) in ids.iter().enumerate().take(4) {
            let device = format!("x{i}");
            let newer = format!("d-2-{i}");
            put(
                &db,
                &[
                    record(id, Phase::Superseded, &[&device]),
                    record(&newer, Phase::Running, &[&device]),
                ],
                &[desired(&device, 2, &newer)],
            );
        }
        assert_eq!(db.prune_finished_deployments(2).expect("prunes"), 2);
        for id in &ids[..2] {
            assert!(db.deployment(id).expect("reads").is_none(), "{id} pruned");
        }
        for id in &ids[2..] {
            assert!(db.deployment(id).expect("reads").is_some(), "{id} kept");
        }
        assert_eq!(
            db.prune_finished_deployments(2).expect("prunes"),
            0,
            "idempotent"
        );
        // x4's deployment finished but x4 still runs it: it is never pruned.
        put(&db, &[record(&ids[4], Phase::Succeeded, &["x4"])], &[]);
        assert_eq!(db.prune_finished_deployments(0).expect("prunes"), 2);
        assert!(
            db.deployment(&ids[4]).expect("reads").is_some(),
            "still named"
        );
        assert_eq!(
            db.deployments().expect("reads").len(),
            6,
            "4 newer + x4's + x5's"
        );
    }
}
