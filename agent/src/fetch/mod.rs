//! Getting an artifact onto the device before it is installed: [`verify`] refuses what the
//! device must not run (signature policy, platform, requirements) before a byte is fetched,
//! [`download`] streams it to disk while checking size and digests (resuming a cut transfer),
//! and [`refresh`] asks fleetd for a fresh URL when the one in the desired state expired.

pub mod download;
pub mod refresh;
pub mod verify;
