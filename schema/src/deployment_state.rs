//! The states the API shows for a deployment and for each step of its rollout. fleetd derives
//! both from the rollout alone (its phase, current step and reverted devices), so there is one
//! definition of "succeeded"; fleetctl, fleet-sim and fleetd's CI replies match on these enums
//! instead of comparing strings. They are open enums: a state only a newer fleetd knows is kept
//! as `Other` and never breaks an older client.

use crate::open_enum;

open_enum! {
    /// Overall state of a deployment (`DeploymentView::state`): the rollout's phase, with
    /// `running` shown as `in-progress`.
    pub enum DeploymentState {
        /// Steps are progressing.
        InProgress => "in-progress",
        /// Held by an operator; nothing new is touched until it is resumed.
        Paused => "paused",
        /// Every step met its success criteria.
        Succeeded => "succeeded",
        /// A gradual rollback is sending devices back batch by batch.
        RollingBack => "rolling-back",
        /// Every touched device was sent back to its previous version.
        RolledBack => "rolled-back",
        /// Stopped by an operator; devices stay where they are.
        Aborted => "aborted",
        /// Failed without automatic rollback.
        Failed => "failed",
        /// A newer deployment of the same application took over before it finished.
        Superseded => "superseded",
    }
}

impl DeploymentState {
    /// Whether the state still changes on its own (fleetd moves it on without an operator).
    pub fn moves_on_its_own(&self) -> bool {
        matches!(self, Self::InProgress | Self::RollingBack)
    }

    /// How a wait for the deployment ends in this state: `None` while it still changes on its
    /// own or waits for an operator (`in-progress`, `rolling-back`, `paused`); otherwise the
    /// final state, where a state this build does not know counts as `Failed` (a pipeline must
    /// not report success it cannot confirm). fleetctl's `deploy --wait` and fleetd's CI
    /// replies share this one rule.
    pub fn outcome(&self) -> Option<DeploymentState> {
        match self {
            Self::InProgress | Self::RollingBack | Self::Paused => None,
            Self::Other(_) => Some(Self::Failed),
            known => Some(known.clone()),
        }
    }
}

open_enum! {
    /// State of one step of a rollout (`StepView::state`).
    pub enum StepState {
        /// Not started: an earlier step is still running, or the rollout ended before it.
        Waiting => "waiting",
        /// The rollout's current step, still running (or paused).
        Active => "active",
        /// The step met its success criteria.
        Succeeded => "succeeded",
        /// The rollout failed in this step (without automatic rollback).
        Failed => "failed",
        /// The rollout was aborted by an operator in this step.
        Aborted => "aborted",
        /// A newer deployment took over while this step ran.
        Superseded => "superseded",
        /// Devices of this step were sent back to their previous version.
        RolledBack => "rolled-back",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_wire_spelling() {
        for s in DeploymentState::KNOWN {
            let state = DeploymentState::from(*s);
            assert!(state.is_known(), "{s}");
            let json = serde_json::to_string(&state).expect("encodes");
            assert_eq!(json, format!("\"{s}\""));
        }
        assert_eq!(
            serde_json::to_string(&StepState::RolledBack).expect("encodes"),
            "\"rolled-back\""
        );
    }

    #[test]
    fn a_state_from_a_newer_server_is_read_and_ends_a_wait_as_failed() {
        let s: DeploymentState = serde_json::from_str("\"validating\"").expect("lenient");
        assert_eq!(s, DeploymentState::Other("validating".into()));
        assert_eq!(s.outcome(), Some(DeploymentState::Failed));
        assert!(!s.moves_on_its_own());
        let step: StepState = serde_json::from_str("\"draining\"").expect("lenient");
        assert_eq!(step.to_string(), "draining");
    }

    #[test]
    fn outcomes() {
        use DeploymentState::*;
        for waiting in [InProgress, RollingBack, Paused] {
            assert_eq!(waiting.outcome(), None, "{waiting}");
        }
        for done in [Succeeded, Failed, RolledBack, Aborted, Superseded] {
            assert_eq!(done.outcome(), Some(done.clone()));
        }
        assert!(InProgress.moves_on_its_own() && RollingBack.moves_on_its_own());
        assert!(!Paused.moves_on_its_own() && !Succeeded.moves_on_its_own());
    }
}
