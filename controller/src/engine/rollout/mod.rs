//! Staged rollouts: canary, rolling, blue-green (controller side) and all-at-once as one pure
//! engine. The rollout's stored state and its normalised strategy are records
//! (`crate::model::{rollout_state, strategy}`); here [`snapshot`] is what the engine sees of the
//! fleet, [`triggers`] are the automatic rollback triggers, [`ops`] the operator's actions, and
//! [`tick::tick`] is the decision itself: a function of (rollout, snapshot, now) returning the
//! devices to update or revert.

pub mod ops;
pub mod snapshot;
pub mod tick;
pub mod triggers;

#[cfg(test)]
mod tests;

pub use snapshot::{Ctx, Snapshot};
pub use tick::{tick, Actions};
