//! The rollout driver: a task that ticks every unfinished rollout on a fixed interval, builds
//! each one's fleet snapshot from the device table and the error windows, commits what the pure
//! engine decides, and queues the publishes. Everything it knows is in redb, so after a restart
//! it resumes every rollout at the step it was in.

use super::error_window::ErrorWindows;
use super::rollout::snapshot::{AppObs, DeviceObs};
use super::rollout::{ops, Phase, Snapshot};
use super::target;
use crate::db::{Db, DbError, DeploymentRecord, DeviceRecord, RolloutOpError};
use crate::mqtt::PublishQueue;
use fleet_schema::api::TargetSpec;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default time between ticks.
pub const DEFAULT_TICK: Duration = Duration::from_millis(500);

/// Builds what the engine sees of a deployment's targets.
pub fn snapshot(
    rec: &DeploymentRecord,
    devices: &BTreeMap<String, DeviceRecord>,
    errors: &ErrorWindows,
    now: u64,
) -> Snapshot {
    let Some(r) = &rec.rollout else {
        return Snapshot::default();
    };
    let obs = r
        .targets
        .iter()
        .filter_map(|d| {
            let dev = devices.get(d)?;
            let app = dev
                .status
                .as_ref()
                .and_then(|s| s.apps.iter().find(|a| a.name == rec.application))
                .map(AppObs::from);
            Some((
                d.clone(),
                DeviceObs {
                    online: dev.online,
                    last_seen: dev.last_seen,
                    app,
                },
            ))
        })
        .collect();
    let touched = r.touched.iter().filter(|d| !r.reverted.contains(*d));
    Snapshot {
        devices: obs,
        errors: errors.counts(
            &rec.application,
            touched,
            now,
            r.params.triggers.error_window_ms,
        ),
    }
}

/// Late joiners of one deployment.
#[derive(Debug, Default)]
struct Joiners {
    /// Devices to add to the rollout.
    fresh: Vec<String>,
    /// Devices that match the target but cannot run the release, with the reason, not yet
    /// recorded in the rollout.
    unfit: BTreeMap<String, String>,
}

/// Devices that match a deployment's target now but are not among its targets, claimed by the
/// newest deployment of each application whose target (with a selector, group or expressions;
/// explicit lists never grow) matches them. Each is checked against the application's placement
/// and the artifact's platforms and requirements, as at creation.
fn late_joiners(
    db: &Db,
    deployments: &[DeploymentRecord],
    devices: &BTreeMap<String, DeviceRecord>,
) -> Result<BTreeMap<String, Joiners>, DbError> {
    let known: BTreeMap<String, BTreeMap<String, String>> = devices
        .iter()
        .filter(|(_, r)| r.status.is_some())
        .map(|(id, r)| (id.clone(), r.labels()))
        .collect();
    let mut claimed: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for rec in deployments.iter().rev() {
        let (Some(r), Some(t)) = (&rec.rollout, &rec.target) else {
            continue;
        };
        let grows = !t.selector.is_empty() || !t.match_expressions.is_empty() || t.group.is_some();
        // Every device of this deployment is claimed by it (newer deployments came first).
        let mut matched: Vec<String> = Vec::new();
        if grows && matches!(r.phase, Phase::Running | Phase::Paused | Phase::Succeeded) {
            let group = match &t.group {
                Some(g) => db.group(g)?,
                None => None,
            };
            let bare = TargetSpec {
                devices: vec![],
                ..t.clone()
            };
            matched = target::resolve_with_group(&bare, group.as_ref(), &known).unwrap_or_default();
        }
        let targets: HashSet<&String> = r.targets.iter().collect();
        let candidates: Vec<String> = matched
            .into_iter()
            .filter(|d| !targets.contains(d))
            .filter(|d| !claimed.contains_key(&(rec.application.clone(), d.clone())))
            .collect();
        let mut j = Joiners::default();
        for d in candidates {
            let inv = devices
                .get(&d)
                .and_then(|x| x.status.as_ref())
                .and_then(|s| s.inventory.as_ref());
            match target::unfit_reason(rec.placement.as_ref(), &rec.artifact, inv) {
                None => j.fresh.push(d),
                Some(why) if r.ineligible.get(&d) != Some(&why) => {
                    j.unfit.insert(d, why);
                }
                Some(_) => {}
            }
        }
        for d in r.targets.iter().chain(j.fresh.iter()) {
            claimed.insert((rec.application.clone(), d.clone()), ());
        }
        if !j.fresh.is_empty() || !j.unfit.is_empty() {
            out.insert(rec.id.clone(), j);
        }
    }
    Ok(out)
}

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
        let snap = snapshot(&rec, &devices, errors, now);
        match db.tick_rollout(&rec.id, &snap, now) {
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
    let mut devices = db.devices()?;
    devices.retain(|id, _| enrolled(id));
    let mut out = Vec::new();
    for (id, j) in late_joiners(db, &records, &devices)? {
        if !j.unfit.is_empty() {
            tracing::info!(deployment = %id, devices = ?j.unfit, "late joiners cannot run the release");
        }
        if !j.fresh.is_empty() {
            tracing::info!(deployment = %id, devices = ?j.fresh, "late joiners added");
        }
        let apply = |r: &mut super::rollout::Rollout, _: super::rollout::Ctx<'_>| {
            ops::mark_ineligible(r, &j.unfit);
            Ok(ops::add_late_joiners(r, &j.fresh, now))
        };
        match db.update_rollout(&id, now, apply) {
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
