//! The trust model's pure parts, shared by the controller, the agent, the CLI and the
//! simulator so that every side builds and checks byte-identical messages:
//! - [`keys`]: ed25519 signing keys, the per-device symmetric bus key, secrets and their hashes;
//! - [`seal`]: the signed (and, for one device, encrypted) envelope every bus message travels in;
//! - [`enroll`]: the enrollment request and answer (key exchange, pinning, credentials);
//! - [`tokens`]: credential strings, scopes, MQTT user names and the token management API;
//! - [`device`]: a device's end of the protocol in one value, for simulators and tests.
//!
//! `docs/architecture.md` ("Security model") explains who holds which key and what each
//! signature covers.

pub mod device;
pub mod enroll;
pub mod keys;
pub mod seal;
pub mod tokens;

pub use keys::{BusKey, KeyError, SigningKey};
pub use seal::{open, peek, seal, seal_report, OpenParams, Opened, SealError, SealParams, Stamp};
pub use tokens::{Credential, Scope};
