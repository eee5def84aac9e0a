//! The deployment service: where the engine's pure decisions meet storage and the bus. It
//! validates a request against the registered application and the artifact store, resolves the
//! target, and commits every decision (creation, rollout tick, operator action, late joiners)
//! in one database transaction before queueing the publishes. The engine (`crate::engine`)
//! decides and never touches storage; the database (`crate::db`) stores records and decides
//! nothing; this layer is the only one that calls both.
//!
//! - [`create`]: `POST /api/v1/deployments` and CI requests, from body to committed deployment
//!   ([`artifact`]: the stored artifact it names; [`error`]: why a request is refused);
//! - [`commit`]: the write transactions around the engine's decisions;
//! - [`driver`]: the task that ticks every unfinished rollout and adds late joiners.

pub mod artifact;
pub mod commit;
pub mod create;
pub mod driver;
pub mod error;

pub use commit::RolloutOpError;
pub use create::{create, parse_request, DeployContext};
pub use error::{DeployError, DeployErrorKind};
