//! Rollout transactions: each tick or operator action loads the deployment inside one write
//! transaction, lets the pure engine decide, and commits the new rollout state together with
//! the desired states it changed. A SIGKILL at any point leaves either the old or the new
//! state, never half of one, so a restarted fleetd resumes the same step.

use super::phases::{put_deployment, PHASES};
use super::{decode, encode, Db, DbError, DeploymentRecord, DesiredBytes, DEPLOYMENTS, DESIRED};
use crate::engine::plan;
use crate::engine::rollout::{tick, Actions, Ctx, Rollout, Snapshot};
use fleet_schema::{BlueGreenHint, DesiredApp, DesiredState, UnixMillis};
use redb::{ReadableTable, Table};

/// Why an operator action on a rollout was refused.
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

/// Writes the desired states for `actions` (touch: the template; revert: the previous app or
/// none) and records generations and previous apps in `rec`. Returns the bytes to publish.
pub(crate) fn write_actions(
    desired: &mut Table<&str, &[u8]>,
    rec: &mut DeploymentRecord,
    actions: &Actions,
    now: UnixMillis,
) -> Result<DesiredBytes, DbError> {
    let mut out = Vec::with_capacity(actions.touch.len() + actions.revert.len());
    let Some(template) = rec.template.clone() else {
        return Ok(out);
    };
    // Surge devices start the new version next to the old one, which stops once the new one
    // has been healthy for the grace period (the agent's blue-green path, without a delay).
    let surge_hint = BlueGreenHint {
        validation_ms: rec.rollout.as_ref().map_or(0, |r| r.params.min_healthy_ms),
        switch_delay_ms: 0,
    };
    for d in &actions.touch {
        let mut template = template.clone();
        if actions.surge.contains(d) {
            template.rollout.get_or_insert(surge_hint);
        }
        let prev: Option<DesiredState> = match desired.get(d.as_str())? {
            Some(v) => Some(decode("desired", d, v.value())?),
            None => None,
        };
        let before = prev
            .as_ref()
            .and_then(|p| p.apps.iter().find(|a| a.name == template.name).cloned());
        rec.previous.entry(d.clone()).or_insert(before);
        let next = plan::set_app(prev.as_ref(), d, template, now);
        let bytes = encode(&next)?;
        desired.insert(d.as_str(), bytes.as_slice())?;
        rec.devices.insert(d.clone(), next.generation);
        out.push((d.clone(), bytes));
    }
    for d in &actions.revert {
        let prev: Option<DesiredState> = match desired.get(d.as_str())? {
            Some(v) => Some(decode("desired", d, v.value())?),
            None => None,
        };
        let next = match rec.previous.get(d).cloned().flatten() {
            Some(app) => plan::set_app(prev.as_ref(), d, app, now),
            None => plan::remove_app(prev.as_ref(), d, &template.name, now),
        };
        let bytes = encode(&next)?;
        desired.insert(d.as_str(), bytes.as_slice())?;
        out.push((d.clone(), bytes));
    }
    Ok(out)
}

impl Db {
    /// Applies `f` to a deployment's rollout in one transaction and writes the desired states
    /// of the actions it returns. Nothing is written when `f` leaves the rollout unchanged.
    pub fn update_rollout<F>(
        &self,
        id: &str,
        now: UnixMillis,
        f: F,
    ) -> Result<(DeploymentRecord, DesiredBytes), RolloutOpError>
    where
        F: FnOnce(&mut Rollout, Ctx<'_>) -> Result<Actions, String>,
    {
        let txn = self.raw()?.begin_write().map_err(DbError::from)?;
        let (rec, published, changed) = {
            let mut table = txn.open_table(DEPLOYMENTS).map_err(DbError::from)?;
            let mut rec: DeploymentRecord = match table.get(id).map_err(DbError::from)? {
                Some(v) => decode("deployments", id, v.value())?,
                None => return Err(RolloutOpError::NotFound(id.to_string())),
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
            let mut desired = txn.open_table(DESIRED).map_err(DbError::from)?;
            let published = write_actions(&mut desired, &mut rec, &actions, now)?;
            rec.rollout = Some(rollout);
            if changed || !published.is_empty() {
                let mut phases = txn.open_table(PHASES).map_err(DbError::from)?;
                put_deployment(&mut table, &mut phases, &rec)?;
            }
            (rec, published, changed)
        };
        if changed || !published.is_empty() {
            txn.commit().map_err(DbError::from)?;
        } else {
            txn.abort().map_err(DbError::from)?;
        }
        Ok((rec, published))
    }

    /// One engine tick of a deployment against `snap`.
    pub fn tick_rollout(
        &self,
        id: &str,
        snap: &Snapshot,
        now: UnixMillis,
    ) -> Result<(DeploymentRecord, DesiredBytes), RolloutOpError> {
        self.update_rollout(id, now, |r, ctx| Ok(tick(r, ctx, snap, now)))
    }
}
