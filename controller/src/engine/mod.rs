//! The deployment engine. The decisions are pure functions with unit tests and no I/O:
//! [`target`] resolves who a deployment is for, [`plan`] computes each device's next desired
//! state, [`progress`] derives per-device and overall progress, [`view`] shapes API answers.
//! [`deploy`] is the thin orchestration that validates a request, commits it to the database
//! and queues the publishes.

pub mod deploy;
pub mod driver;
pub mod error_window;
pub mod ids;
pub mod plan;
pub mod progress;
pub mod rollout;
pub mod target;
pub mod view;
