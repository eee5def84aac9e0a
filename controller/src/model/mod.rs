//! The controller's records: plain data that the database stores and the engine reads and
//! decides on. Nothing here does I/O, and nothing here imports the database or the engine, so
//! both can depend on it without depending on each other.
//!
//! - [`device`]: what the controller knows about a device, folded from its statuses;
//! - [`deployment`]: a deployment as stored, with the rollout's state inside it;
//! - [`rollout_state`]: where a rollout is (phase, step, observations, the trigger that fired);
//! - [`strategy`]: a deployment's strategy normalised from the API (step sizes included);
//! - [`rollback_triggers`]: the thresholds of the automatic rollback triggers, and how a
//!   rollback proceeds (immediate or gradual).

pub mod deployment;
pub mod device;
pub mod rollback_triggers;
pub mod rollout_state;
pub mod strategy;

pub use deployment::DeploymentRecord;
pub use device::DeviceRecord;
pub use rollout_state::{Fired, Phase, Rollout};
pub use strategy::{Kind, Params};
