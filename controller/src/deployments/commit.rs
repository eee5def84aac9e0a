//! Committing the engine's decisions: each creation, tick or operator action reads the records
//! inside one write transaction, lets the pure engine decide, and writes the new deployment
//! record together with the desired states it changed. Returns the bytes to publish after the
//! commit.

use crate::db::{Db, DbError, DeploymentWrite, DesiredBytes};
use crate::engine::rollout::{tick, Actions, Ctx, Snapshot};
use crate::engine::start::{self, NewDeployment};
use crate::engine::{ids, plan};
use crate::model::{DeploymentRecord, Rollout};
use fleet_schema::{DesiredApp, UnixMillis};
use std::collections::{BTreeMap, HashSet};

/// Why an operator action (or a tick) on a rollout was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutOpError {
    /// No deployment with that id.
    #[error("deployment {0:?} not found")]
    NotFound(String),
    /// The action does not apply in the rollout's current phase.
    #[error("{0}")]
    Conflict(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Writes the desired states the engine computes for `actions` (`plan::apply_actions`) and
/// returns their bytes, in order.
fn write_actions(
    w: &mut DeploymentWrite<'_>,
    rec: &mut DeploymentRecord,
    actions: &Actions,
    now: UnixMillis,
) -> Result<DesiredBytes, DbError> {
    let mut current = BTreeMap::new();
    for d in actions.touch.iter().chain(&actions.revert) {
        if let Some(state) = w.desired(d)? {
            current.insert(d.clone(), state);
        }
    }
    let mut out = Vec::new();
    for state in plan::apply_actions(&current, rec, actions, now) {
        let bytes = w.put_desired(&state)?;
        out.push((state.device_id, bytes));
    }
    Ok(out)
}

/// Stores a new deployment and starts its rollout in one transaction: the first step's devices
/// get a desired state one generation higher with the application set to the new version, and
/// older unfinished deployments of the same application to overlapping devices are marked
/// superseded. Returns the record and the CBOR of each new desired state.
pub fn create_deployment(
    db: &Db,
    new: NewDeployment,
) -> Result<(DeploymentRecord, DesiredBytes), DbError> {
    db.write_deployments(|w| {
        let id = ids::deployment_id(new.now, w.next_deployment_seq()?);
        let devices: HashSet<&String> = new.devices.iter().collect();
        for (older, phase) in w.deployment_phases()? {
            if phase.is_none_or(|p| p.is_final()) {
                continue;
            }
            let mut rec = match w.deployment(&older) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable deployment left as it is");
                    continue;
                }
            };
            if start::supersede(&mut rec, &new.application, &devices) {
                tracing::info!(deployment = %rec.id, by = %id, "deployment superseded");
                w.put_deployment(&rec)?;
            }
        }
        let now = new.now;
        let (mut rec, actions) = start::start(new, id);
        let published = write_actions(w, &mut rec, &actions, now)?;
        w.put_deployment(&rec)?;
        Ok((rec, published))
    })
}

/// Applies `f` to a deployment's rollout in one transaction and writes the desired states of
/// the actions it returns. Nothing is written when `f` leaves the rollout unchanged and
/// returns no actions.
pub fn update_rollout<F>(
    db: &Db,
    id: &str,
    now: UnixMillis,
    f: F,
) -> Result<(DeploymentRecord, DesiredBytes), RolloutOpError>
where
    F: FnOnce(&mut Rollout, Ctx<'_>) -> Result<Actions, String>,
{
    db.write_deployments(|w| {
        let Some(mut rec) = w.deployment(id)? else {
            return Err(RolloutOpError::NotFound(id.to_string()));
        };
        let Some(mut rollout) = rec.rollout.clone() else {
            return Err(RolloutOpError::Conflict(format!(
                "deployment {id:?} predates staged rollouts and cannot be controlled"
            )));
        };
        let version = rec.version.clone();
        let ctx = Ctx {
            version: &version,
            deployment_id: id,
            has_healthcheck: rec
                .template
                .as_ref()
                .is_some_and(DesiredApp::has_healthcheck),
        };
        let actions = f(&mut rollout, ctx).map_err(RolloutOpError::Conflict)?;
        let changed = rec.rollout.as_ref() != Some(&rollout);
        let published = write_actions(w, &mut rec, &actions, now)?;
        rec.rollout = Some(rollout);
        if changed || !published.is_empty() {
            w.put_deployment(&rec)?;
        }
        Ok((rec, published))
    })
}

/// One engine tick of a deployment against `snap`.
pub fn tick_rollout(
    db: &Db,
    id: &str,
    snap: &Snapshot,
    now: UnixMillis,
) -> Result<(DeploymentRecord, DesiredBytes), RolloutOpError> {
    update_rollout(db, id, now, |r, ctx| Ok(tick(r, ctx, snap, now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rollout::ops::{self, Op};
    use crate::model::rollback_triggers::RollbackAction;
    use crate::model::strategy;
    use crate::model::Phase;
    use fleet_schema::api::StrategySpec;
    use fleet_schema::{ArtifactRef, ArtifactType};

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

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        (dir, db)
    }

    #[test]
    fn generations_grow_and_other_apps_are_kept() {
        let (_dir, db) = open();
        let (d1, _) = create_deployment(&db, new("a", "1.0.0", &["x", "y"])).expect("d1");
        let (d2, out) = create_deployment(&db, new("b", "2.0.0", &["x"])).expect("d2");
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
        let (_dir, db) = open();
        let mut d = new("a", "1.0.0", &["w", "x", "y", "z"]);
        d.params = strategy::parse(Some(&StrategySpec {
            kind: "canary".into(),
            initial_percentage: Some(25),
            ..Default::default()
        }))
        .expect("valid");
        let (d1, out) = create_deployment(&db, d).expect("d1");
        assert_eq!(out.len(), 1, "only the first step's device is written");
        assert!(db.desired("x").expect("reads").is_none());
        assert_eq!(d1.previous.get("w"), Some(&None), "nothing ran before");
        let (other, _) = create_deployment(&db, new("b", "1.0.0", &["w"])).expect("other app");
        let (_, _) = create_deployment(&db, new("a", "2.0.0", &["z"])).expect("d2");
        let phase = |id: &str| {
            db.deployment(id)
                .expect("reads")
                .and_then(|r| r.rollout)
                .map(|r| r.phase)
        };
        assert_eq!(phase(&d1.id), Some(Phase::Superseded));
        assert_eq!(
            phase(&other.id),
            Some(Phase::Running),
            "another application"
        );
    }

    #[test]
    fn an_operator_rollback_writes_the_previous_apps_in_the_same_transaction() {
        let (_dir, db) = open();
        create_deployment(&db, new("a", "1.0.0", &["x"])).expect("d1");
        let (d2, _) = create_deployment(&db, new("a", "2.0.0", &["x", "y"])).expect("d2");
        let (after, out) = update_rollout(&db, &d2.id, 5, |r, _| {
            ops::apply(r, Op::Rollback(RollbackAction::Immediate), 5)
        })
        .expect("rolls back");
        assert_eq!(out.len(), 2);
        let x = db.desired("x").expect("reads").expect("present");
        assert_eq!((x.generation, x.apps[0].version.as_str()), (3, "1.0.0"));
        assert!(db
            .desired("y")
            .expect("reads")
            .expect("present")
            .apps
            .is_empty());
        assert_eq!(db.deployment(&d2.id).expect("reads"), Some(after));
        let err =
            update_rollout(&db, "d-none", 5, |_, _| Ok(Actions::default())).expect_err("unknown");
        assert!(matches!(err, RolloutOpError::NotFound(_)), "{err}");
    }
}
