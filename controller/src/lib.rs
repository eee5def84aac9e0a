//! fleetd, the FleetD controller, as a library: the binary (`main.rs`) only parses the command
//! line and calls [`server::run`], so integration tests and subcommands such as `fleetd demo`
//! reuse the same pieces.
//!
//! Layout, one folder per concern:
//! - [`config`]: command-line flags and the derived serving configuration.
//! - [`model`]: the records fleetd keeps (devices, deployments, a rollout's state): plain data.
//! - [`db`]: the redb database: reads and writes records, decides nothing.
//! - [`store`]: the artifact store (`ArtifactStore` trait, filesystem backend).
//! - [`engine`]: every deployment decision (targets, rollout steps, desired states, progress)
//!   as pure functions; it never touches storage.
//! - [`deployments`]: the deployment service: validates requests, commits the engine's
//!   decisions in one transaction each, drives the rollouts.
//! - [`mqtt`]: the bridge to the bus (status intake, desired-state publishing, cmd guard).
//! - [`http`]: the HTTP API.
//! - [`limits`]: every resource limit's flag, and the counter of limits hit.
//! - [`ci`]: deploying from CI by MQTT publish (`fleet/_ci/requests`).
//! - [`logstore`]: the central, bounded store of the devices' log lines.
//! - [`metrics`]: fleetd's own counters, exported on `/metrics`.
//! - [`telemetry`]: the metrics bridge (the fleet's telemetry on `/metrics`).
//! - [`trust`]: the controller key, device identities and enrollment, API tokens, Mosquitto
//!   files.
//! - [`tls`]: TLS configurations and the HTTPS listener.
//! - [`server`]: wires everything together and handles shutdown.
//! - [`demo`]: `fleetd demo`, the main job end to end on embedded defaults.

pub mod ci;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod deployments;
pub mod engine;
pub mod http;
pub mod limits;
pub mod logstore;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod server;
pub mod store;
pub mod system;
pub mod telemetry;
pub mod tls;
pub mod trust;
