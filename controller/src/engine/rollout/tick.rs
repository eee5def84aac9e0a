//! The rollout engine's one decision: given the rollout, the fleet snapshot and the time, move
//! the rollout on and say which devices get the new version and which go back. Pure and
//! deterministic, so every strategy is tested on a simulated clock.

use super::snapshot::{standing, Ctx, Snapshot, Standing};
use super::triggers;
use crate::model::rollback_triggers::RollbackAction;
use crate::model::rollout_state::{Fired, Phase, Rollout};

/// What the driver must do after a tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Set the new version on these devices.
    pub touch: Vec<String>,
    /// Set these devices back to the version they ran before.
    pub revert: Vec<String>,
    /// The devices of `touch` that update make-before-break (rolling max surge).
    pub surge: Vec<String>,
}

impl Actions {
    /// True when nothing is to be written to devices.
    pub fn is_empty(&self) -> bool {
        self.touch.is_empty() && self.revert.is_empty()
    }
}

/// Counts of one step's devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCount {
    /// Healthy for at least the minimum healthy time.
    pub healthy: usize,
    /// Failed (or offline past the timeout with policy fail).
    pub failed: usize,
    /// Devices that count (offline ones are left out with policy skip).
    pub counted: usize,
}

/// Counts step `i`'s devices as the success criteria see them.
pub fn count_step(r: &Rollout, i: usize, ctx: Ctx<'_>, snap: &Snapshot, now: u64) -> StepCount {
    let mut c = StepCount::default();
    for d in r.step_devices(i) {
        match standing(snap.devices.get(d), ctx, now, r.params.offline_timeout_ms) {
            Standing::Offline
                if r.params.offline_policy == crate::model::strategy::OfflinePolicy::Skip =>
            {
                continue
            }
            Standing::Offline | Standing::Failed(_) => c.failed += 1,
            Standing::Healthy => {
                let since = r.healthy_since.get(d).copied().unwrap_or(now);
                if now.saturating_sub(since) >= r.params.min_healthy_ms {
                    c.healthy += 1;
                }
            }
            Standing::Progressing => {}
        }
        c.counted += 1;
    }
    c
}

/// Advances the rollout by one decision.
pub fn tick(r: &mut Rollout, ctx: Ctx<'_>, snap: &Snapshot, now: u64) -> Actions {
    let mut act = Actions::default();
    match r.phase {
        Phase::Running => running(r, ctx, snap, now, &mut act),
        Phase::RollingBack => revert_next_batch(r, now, &mut act),
        _ => {}
    }
    act
}

fn touch_current_step(r: &mut Rollout, now: u64, act: &mut Actions) {
    let cum = r.steps.get(r.step).copied().unwrap_or(0);
    for i in 0..cum.min(r.targets.len()) {
        let d = &r.targets[i];
        if r.touched.insert(d.clone()) {
            r.restarts.insert(d.clone(), vec![(now, 0)]);
            act.touch.push(d.clone());
            if r.is_surge_slot(i) {
                act.surge.push(d.clone());
            }
        }
    }
}

fn running(r: &mut Rollout, ctx: Ctx<'_>, snap: &Snapshot, now: u64, act: &mut Actions) {
    if r.steps.is_empty() {
        r.phase = Phase::Succeeded;
        r.finished_at = Some(now);
        return;
    }
    touch_current_step(r, now, act);
    for d in r.touched.iter() {
        let healthy = standing(snap.devices.get(d), ctx, now, r.params.offline_timeout_ms)
            == Standing::Healthy;
        if healthy {
            r.healthy_since.entry(d.clone()).or_insert(now);
        } else {
            r.healthy_since.remove(d);
        }
    }
    triggers::observe(r, ctx, snap, now);
    if let Some(f) = triggers::evaluate(r, ctx, snap, now) {
        fail(r, f, now, act);
        return;
    }
    let c = count_step(r, r.step, ctx, snap, now);
    let required = (c.counted * r.params.success_percentage as usize).div_ceil(100);
    if c.healthy >= required {
        if r.step + 1 >= r.steps.len() {
            r.phase = Phase::Succeeded;
            r.finished_at = Some(now);
        } else if r.promote
            || now.saturating_sub(r.step_started_at) >= r.params.increment_interval_ms
        {
            r.step += 1;
            r.step_started_at = now;
            r.promote = false;
            r.unhealthy_since = None;
            touch_current_step(r, now, act);
        }
    } else if c.counted - c.failed < required {
        let detail = format!(
            "step {}: {} of {} devices failed, {}% must succeed",
            r.step + 1,
            c.failed,
            c.counted,
            r.params.success_percentage
        );
        let threshold = (c.counted - required) as u64;
        let f = triggers::fired(
            r,
            "step-failed",
            RollbackAction::Immediate,
            detail,
            c.failed as u64,
            threshold,
            now,
        );
        fail(r, f, now, act);
    } else if now.saturating_sub(r.step_started_at) > r.params.progress_deadline_ms {
        let waited = now.saturating_sub(r.step_started_at);
        let detail = format!(
            "step {}: {} of {} devices healthy after {}s (deadline {}s)",
            r.step + 1,
            c.healthy,
            c.counted,
            waited / 1000,
            r.params.progress_deadline_ms / 1000
        );
        let f = triggers::fired(
            r,
            "progress-deadline",
            RollbackAction::Immediate,
            detail,
            waited,
            r.params.progress_deadline_ms,
            now,
        );
        fail(r, f, now, act);
    }
}

/// A trigger fired: roll back when the deployment allows it, else stop as failed.
fn fail(r: &mut Rollout, f: Fired, now: u64, act: &mut Actions) {
    if r.params.auto_rollback {
        start_rollback(r, f, now, act);
    } else {
        r.fired = Some(f);
        r.phase = Phase::Failed;
    }
}

/// Starts a rollback (automatic or manual): immediate reverts every touched device now,
/// gradual reverts the last step's devices now and earlier steps one batch per interval.
pub fn start_rollback(r: &mut Rollout, f: Fired, now: u64, act: &mut Actions) {
    let immediate = f.action == RollbackAction::Immediate;
    r.fired = Some(f);
    r.phase = Phase::RollingBack;
    if immediate {
        let all: Vec<String> = r.touched.difference(&r.reverted).cloned().collect();
        r.reverted.extend(all.iter().cloned());
        act.revert.extend(all);
        r.phase = Phase::RolledBack;
    } else {
        r.last_revert_at = 0;
        revert_next_batch(r, now, act);
    }
}

fn revert_next_batch(r: &mut Rollout, now: u64, act: &mut Actions) {
    if r.last_revert_at != 0 && now.saturating_sub(r.last_revert_at) < r.params.gradual_interval_ms
    {
        return;
    }
    for i in (0..r.steps.len()).rev() {
        let batch: Vec<String> = r
            .step_devices(i)
            .iter()
            .filter(|d| r.touched.contains(*d) && !r.reverted.contains(*d))
            .cloned()
            .collect();
        if !batch.is_empty() {
            r.reverted.extend(batch.iter().cloned());
            act.revert.extend(batch);
            r.last_revert_at = now.max(1);
            break;
        }
    }
    if r.touched.iter().all(|d| r.reverted.contains(d)) {
        r.phase = Phase::RolledBack;
    }
}
