//! Staged rollouts: canary, rolling, blue-green (controller side) and all-at-once as one pure
//! engine. [`params`] normalises a strategy and computes step sizes, [`state`] is what redb
//! stores, [`snapshot`] is what the engine sees of the fleet, [`triggers`] are the automatic
//! rollback triggers, and [`tick::tick`] is the decision itself: a function of (rollout,
//! snapshot, now) returning the devices to update or revert.

pub mod ops;
pub mod params;
pub mod snapshot;
pub mod state;
pub mod tick;
pub mod trigger_params;
pub mod triggers;

#[cfg(test)]
mod tests;

pub use params::{Kind, Params};
pub use snapshot::{Ctx, Snapshot};
pub use state::{Fired, Phase, Rollout};
pub use tick::{tick, Actions};
