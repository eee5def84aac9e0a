//! The durable state of a rollout, stored inside its deployment record in redb. Everything the
//! pure `engine::rollout::tick` needs to continue after a restart is here: the step, when it started,
//! what was observed (healthy-since times, restart counts), the trigger that fired.

use super::rollback_triggers::RollbackAction;
use super::strategy::Params;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Steps progressing.
    Running,
    /// Held by the operator; nothing new is touched.
    Paused,
    /// Every step succeeded.
    Succeeded,
    /// Reverting touched devices.
    RollingBack,
    /// Every touched device was sent back to its previous version.
    RolledBack,
    /// Stopped by the operator; devices stay where they are.
    Aborted,
    /// Failed without automatic rollback.
    Failed,
    /// A newer deployment of the same application took over.
    Superseded,
}

impl Phase {
    /// Every phase, for parsing the stored spelling back.
    pub const ALL: [Phase; 8] = [
        Phase::Running,
        Phase::Paused,
        Phase::Succeeded,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Failed,
        Phase::Superseded,
    ];

    /// The phase with this API spelling.
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling-back",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
            Phase::Superseded => "superseded",
        }
    }

    /// True when the driver has nothing more to do (late joiners aside).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Succeeded
                | Phase::RolledBack
                | Phase::Aborted
                | Phase::Failed
                | Phase::Superseded
        )
    }
}

/// A rollback trigger that fired, with its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// "crash-loop", "error-rate", "health-check", "step-failed", "progress-deadline", "manual".
    pub kind: String,
    /// Detail with the numbers.
    pub detail: String,
    /// Observed value.
    pub observed: u64,
    /// Threshold crossed.
    pub threshold: u64,
    /// Action taken.
    pub action: RollbackAction,
    /// When.
    pub at: u64,
}

/// A rollout in progress (or finished).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Strategy.
    pub params: Params,
    /// Target devices in rollout order.
    pub targets: Vec<String>,
    /// Cumulative device counts at the end of each step.
    pub steps: Vec<usize>,
    /// Phase.
    pub phase: Phase,
    /// Current step index.
    pub step: usize,
    /// When the current step started.
    pub step_started_at: u64,
    /// Devices sent the new version.
    pub touched: BTreeSet<String>,
    /// Devices sent back to their previous version.
    pub reverted: BTreeSet<String>,
    /// Since when each device has been running and healthy at the new version.
    pub healthy_since: BTreeMap<String, u64>,
    /// Restart-count observations per touched device: (time, count), within the crash window.
    pub restarts: BTreeMap<String, Vec<(u64, u32)>>,
    /// Since when the health-check trigger condition has held.
    pub unhealthy_since: Option<u64>,
    /// The trigger that fired.
    pub fired: Option<Fired>,
    /// Operator asked to skip the wait of the current step.
    pub promote: bool,
    /// Last gradual-rollback batch time.
    pub last_revert_at: u64,
    /// When every step succeeded (blue-green: old version cleanup is due `switch_delay` later).
    pub finished_at: Option<u64>,
    /// Late joiners that match the target but cannot run the release, with the reason.
    #[serde(default)]
    pub ineligible: BTreeMap<String, String>,
}

impl Rollout {
    /// A new rollout at step 0, nothing touched yet.
    pub fn new(params: Params, targets: Vec<String>, now: u64) -> Self {
        let steps = super::strategy::step_sizes(&params, targets.len());
        Self {
            params,
            targets,
            steps,
            phase: Phase::Running,
            step: 0,
            step_started_at: now,
            touched: BTreeSet::new(),
            reverted: BTreeSet::new(),
            healthy_since: BTreeMap::new(),
            restarts: BTreeMap::new(),
            unhealthy_since: None,
            fired: None,
            promote: false,
            last_revert_at: 0,
            finished_at: None,
            ineligible: BTreeMap::new(),
        }
    }

    /// True when the target at `index` (rollout order) updates make-before-break: in a rolling
    /// update with max surge, the devices of each batch beyond the first max unavailable.
    pub fn is_surge_slot(&self, index: usize) -> bool {
        if self.params.kind != super::strategy::Kind::Rolling || self.params.max_surge == 0 {
            return false;
        }
        let step = self.steps.partition_point(|end| *end <= index);
        let start = if step == 0 { 0 } else { self.steps[step - 1] };
        let in_place = usize::try_from(self.params.max_unavailable).unwrap_or(usize::MAX);
        index.saturating_sub(start) >= in_place
    }

    /// The devices of step `i` (not cumulative).
    pub fn step_devices(&self, i: usize) -> &[String] {
        let end = self
            .steps
            .get(i)
            .copied()
            .unwrap_or(0)
            .min(self.targets.len());
        let start = if i == 0 {
            0
        } else {
            self.steps.get(i - 1).copied().unwrap_or(0).min(end)
        };
        &self.targets[start..end]
    }
}
