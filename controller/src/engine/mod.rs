//! The deployment engine: every decision about a deployment, as pure functions with unit tests
//! and no I/O. It reads records (`crate::model`) and never touches storage or the bus; the
//! deployment service (`crate::deployments`) reads the records, calls these functions and
//! commits what they return.
//!
//! - [`targeting`]: who a deployment is for, at creation and for late joiners (one rule);
//! - [`start`]: a new deployment's template, record and first step, and whom it supersedes;
//! - [`rollout`]: the staged rollout's tick, triggers and operator actions;
//! - [`plan`]: the desired states a rollout decision writes (surge hints, previous apps,
//!   reverts);
//! - [`progress`] and [`view`]: per-device and overall progress, and the API's views;
//! - [`error_window`]: the error-rate windows the triggers read;
//! - [`ids`]: deployment ids.

pub mod error_window;
pub mod ids;
pub mod plan;
pub mod progress;
pub mod rollout;
pub mod start;
pub mod targeting;
pub mod view;
