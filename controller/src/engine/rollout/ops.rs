//! Operator actions on a rollout (pure): pause, resume, abort, manual rollback, promote. Each
//! checks the phase and says why it does not apply.

use super::tick::{start_rollback, Actions};
use crate::model::rollback_triggers::RollbackAction;
use crate::model::rollout_state::{Fired, Phase, Rollout};
use std::collections::BTreeMap;

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stop touching new devices.
    Pause,
    /// Continue a paused rollout (the step's deadline restarts).
    Resume,
    /// Stop for good, leaving devices where they are.
    Abort,
    /// Send every touched device back (immediately or gradually).
    Rollback(RollbackAction),
    /// Skip the wait before the next step (health criteria still apply).
    Promote,
}

impl Op {
    /// Parses the action named in the URL.
    pub fn parse(name: &str, gradual: bool) -> Option<Op> {
        Some(match name {
            "pause" => Op::Pause,
            "resume" => Op::Resume,
            "abort" => Op::Abort,
            "rollback" if gradual => Op::Rollback(RollbackAction::Gradual),
            "rollback" => Op::Rollback(RollbackAction::Immediate),
            "promote" => Op::Promote,
            _ => return None,
        })
    }
}

/// Applies `op` at `now`; the error says why the phase does not allow it.
pub fn apply(r: &mut Rollout, op: Op, now: u64) -> Result<Actions, String> {
    let mut act = Actions::default();
    let refuse = |what: &str, r: &Rollout| {
        Err(format!(
            "cannot {what} a deployment that is {}",
            r.phase.as_str()
        ))
    };
    match op {
        Op::Pause if r.phase == Phase::Running => r.phase = Phase::Paused,
        Op::Pause => return refuse("pause", r),
        Op::Resume if r.phase == Phase::Paused => {
            r.phase = Phase::Running;
            r.step_started_at = now;
        }
        Op::Resume => return refuse("resume", r),
        Op::Abort if !r.phase.is_final() => r.phase = Phase::Aborted,
        Op::Abort => return refuse("abort", r),
        Op::Promote if matches!(r.phase, Phase::Running | Phase::Paused) => {
            r.phase = Phase::Running;
            r.promote = true;
        }
        Op::Promote => return refuse("promote", r),
        Op::Rollback(action)
            if !matches!(
                r.phase,
                Phase::RolledBack | Phase::RollingBack | Phase::Superseded
            ) =>
        {
            let fired = Fired {
                kind: "manual".into(),
                detail: format!(
                    "operator asked for a rollback of {} devices",
                    r.touched.len()
                ),
                observed: r.touched.len() as u64,
                threshold: 0,
                action,
                at: now,
            };
            start_rollback(r, fired, now, &mut act);
        }
        Op::Rollback(_) => return refuse("roll back", r),
    }
    Ok(act)
}

/// Records late joiners that match the target but cannot run the release (placement, platform
/// or requirements), so the deployment shows why they did not get it.
pub fn mark_ineligible(r: &mut Rollout, unfit: &BTreeMap<String, String>) -> Actions {
    for (d, why) in unfit {
        r.ineligible.insert(d.clone(), why.clone());
    }
    Actions::default()
}

/// Adds devices that joined the fleet after the deployment was created and match its target.
/// They join the last step; a finished (succeeded) rollout sends them the version at once. A
/// rollout that was rolled back, aborted, failed or superseded takes no new devices.
pub fn add_late_joiners(r: &mut Rollout, joiners: &[String], now: u64) -> Actions {
    let mut act = Actions::default();
    for d in joiners {
        r.ineligible.remove(d);
    }
    let fresh: Vec<String> = joiners
        .iter()
        .filter(|d| !r.targets.contains(d))
        .cloned()
        .collect();
    if fresh.is_empty() || !matches!(r.phase, Phase::Running | Phase::Paused | Phase::Succeeded) {
        return act;
    }
    r.targets.extend(fresh.iter().cloned());
    match r.steps.last_mut() {
        Some(last) => *last = r.targets.len(),
        None => r.steps.push(r.targets.len()),
    }
    if r.phase == Phase::Succeeded {
        r.step = r.steps.len() - 1;
        let first = r.targets.len() - fresh.len();
        for (i, d) in fresh.into_iter().enumerate() {
            if r.touched.insert(d.clone()) {
                r.restarts.insert(d.clone(), vec![(now, 0)]);
                if r.is_surge_slot(first + i) {
                    act.surge.push(d.clone());
                }
                act.touch.push(d);
            }
        }
    }
    act
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Params;

    #[test]
    fn late_joiners_join_the_last_step_or_get_the_release_at_once() {
        let mut r = Rollout::new(Params::all_at_once(), vec!["a".into()], 0);
        r.phase = Phase::Succeeded;
        let act = add_late_joiners(&mut r, &["a".into(), "b".into()], 5);
        assert_eq!(act.touch, vec!["b".to_string()]);
        assert_eq!(r.steps, vec![2]);
        r.phase = Phase::RolledBack;
        assert!(add_late_joiners(&mut r, &["c".into()], 6).is_empty());
        let mut r = Rollout::new(Params::all_at_once(), vec!["a".into()], 0);
        assert!(
            add_late_joiners(&mut r, &["b".into()], 1).is_empty(),
            "touched by the next tick"
        );
        assert_eq!(r.targets.len(), 2);
    }

    #[test]
    fn operator_actions_check_the_phase() {
        let mut r = Rollout::new(Params::all_at_once(), vec!["a".into()], 0);
        apply(&mut r, Op::Pause, 1).expect("pause");
        let err = apply(&mut r, Op::Pause, 2).expect_err("twice");
        assert_eq!(err, "cannot pause a deployment that is paused");
        apply(&mut r, Op::Resume, 3).expect("resume");
        assert_eq!(r.step_started_at, 3, "deadline restarts");
        r.touched.insert("a".into());
        let act = apply(&mut r, Op::Rollback(RollbackAction::Immediate), 4).expect("rollback");
        assert_eq!(act.revert, vec!["a".to_string()]);
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(r.fired.as_ref().map(|f| f.kind.as_str()), Some("manual"));
        assert!(apply(&mut r, Op::Abort, 5).is_err());
    }
}
