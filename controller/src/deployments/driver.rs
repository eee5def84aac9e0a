//! The rollout driver: a task that ticks every unfinished rollout on a fixed interval, builds
//! each one's fleet snapshot from the device table and the error windows, commits what the pure
//! engine decides, and queues the publishes. Everything it knows is in redb, so after a restart
//! it resumes every rollout at the step it was in.

use super::commit::{self, RolloutOpError};
use crate::db::{Db, DbError};
use crate::engine::error_window::ErrorWindows;
use crate::engine::rollout::{ops, snapshot, Ctx};
use crate::engine::targeting;
use crate::model::{Phase, Rollout};
use crate::mqtt::PublishQueue;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default time between ticks.
pub const DEFAULT_TICK: Duration = Duration::from_millis(500);

/// How often the driver looks for late joiners even when no device appeared and no inventory
/// changed (free storage and CPU clock are not watched, and requirements read them).
const FULL_PASS_MS: u64 = 60_000;

/// What the driver remembers between passes, in memory (a restart begins with a full pass).
#[derive(Debug, Default)]
pub struct DriverMemory {
    /// The fleet epoch of the last late-joiner pass.
    seen_epoch: u64,
    /// When the last late-joiner pass ran.
    last_full_at: u64,
}

/// One pass: late joiners (only when the fleet changed, or once a minute), then one tick of
/// every running rollout, reading only its own devices. Finished deployments cost nothing.
/// Returns the devices whose desired state changed.
pub fn drive_once(
    db: &Db,
    errors: &ErrorWindows,
    enrolled: &dyn Fn(&str) -> bool,
    now: u64,
    mem: &mut DriverMemory,
) -> Result<Vec<String>, DbError> {
    let phases = db.deployment_phases()?;
    let with = |want: &[Phase]| -> Vec<String> {
        phases
            .iter()
            .filter(|(_, p)| p.is_some_and(|p| want.contains(&p)))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let joinable = with(&[Phase::Running, Phase::Paused, Phase::Succeeded]);
    let active = with(&[Phase::Running, Phase::RollingBack]);
    let mut out = Vec::new();
    let epoch = db.fleet_epoch();
    let due = epoch != mem.seen_epoch || now.saturating_sub(mem.last_full_at) >= FULL_PASS_MS;
    if due && !joinable.is_empty() {
        mem.seen_epoch = epoch;
        mem.last_full_at = now;
        out.extend(add_late_joiners(db, &joinable, enrolled, now)?);
    }
    for id in active {
        let Some(rec) = db.deployment(&id)? else {
            continue;
        };
        let Some(r) = &rec.rollout else {
            continue;
        };
        let devices = db.devices_by_ids(&r.targets)?;
        let snap = snapshot::of(&rec, &devices, errors, now);
        match commit::tick_rollout(db, &rec.id, &snap, now) {
            Ok((after, published)) => {
                if let (Some(a), Some(b)) = (&rec.rollout, &after.rollout) {
                    if a.phase != b.phase || a.step != b.step {
                        tracing::info!(
                            deployment = %rec.id,
                            phase = b.phase.as_str(),
                            step = b.step + 1,
                            steps = b.steps.len(),
                            trigger = ?b.fired.as_ref().map(|f| &f.detail),
                            "rollout moved"
                        );
                    }
                }
                out.extend(published.into_iter().map(|(d, _)| d));
            }
            Err(RolloutOpError::Db(e)) => return Err(e),
            Err(e) => tracing::warn!(deployment = %rec.id, error = %e, "rollout tick refused"),
        }
    }
    Ok(out)
}

/// Adds late joiners to the deployments `ids` (those whose phase takes them); only enrolled
/// devices join (a revoked device's last record stays, but receives nothing).
fn add_late_joiners(
    db: &Db,
    ids: &[String],
    enrolled: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<Vec<String>, DbError> {
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        records.extend(db.deployment(id)?);
    }
    let mut fleet = db.devices()?;
    fleet.retain(|id, _| enrolled(id));
    let groups = db
        .groups()?
        .into_iter()
        .map(|g| (g.name.clone(), g))
        .collect();
    let mut out = Vec::new();
    for (id, j) in targeting::late_joiners(&records, &groups, &fleet) {
        if !j.unfit.is_empty() {
            tracing::info!(deployment = %id, devices = ?j.unfit, "late joiners cannot run the release");
        }
        if !j.fresh.is_empty() {
            tracing::info!(deployment = %id, devices = ?j.fresh, "late joiners added");
        }
        let apply = |r: &mut Rollout, _: Ctx<'_>| {
            ops::mark_ineligible(r, &j.unfit);
            Ok(ops::add_late_joiners(r, &j.fresh, now))
        };
        match commit::update_rollout(db, &id, now, apply) {
            Ok((_, published)) => out.extend(published.into_iter().map(|(d, _)| d)),
            Err(RolloutOpError::Db(e)) => return Err(e),
            Err(e) => tracing::warn!(deployment = %id, error = %e, "late joiners refused"),
        }
    }
    Ok(out)
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    db: Db,
    queue: Arc<PublishQueue>,
    errors: Arc<ErrorWindows>,
    trust: Arc<crate::trust::Trust>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let memory = Arc::new(std::sync::Mutex::new(DriverMemory::default()));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = crate::clock::now_ms();
        let errs = errors.clone();
        let mem = memory.clone();
        let trust = trust.clone();
        let pass = move |db: &Db| {
            let mut mem = mem
                .lock()
                .expect("the driver memory lock is never poisoned");
            drive_once(db, &errs, &|d| trust.device(d).is_some(), now, &mut mem)
        };
        match db.call(pass).await {
            Ok(devices) if !devices.is_empty() => queue.mark_devices(devices),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rollout driver pass failed"),
        }
    }
}
