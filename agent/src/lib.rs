//! fleet-agent: keeps one edge device at the desired state its controller publishes. Pure cores
//! (the [`reconcile`]r, the per-app [`supervisor`] state machine, the [`report`] builder) decide;
//! thin shells act, driven by the [`daemon`]. The library exists so the binary stays a small
//! entry point and every module is testable on its own.
//!
//! Where things live:
//!
//! | folder / module | what it does |
//! |---|---|
//! | [`daemon`] | the event loop: receives desired states, runs the reconciler and supervisors, carries out their actions, publishes status |
//! | [`reconcile`], [`supervisor`], [`report`], [`components`] | pure decisions: what to fetch, install, start and stop; one app's process lifecycle; the status; multi-component apps |
//! | [`fetch`] | download an artifact, ask for a fresh URL when it expired, verify signature and platform first |
//! | [`install`] | install a downloaded artifact, one file per artifact type (archive, deb, rpm/apk, nix, oci image, plain binary) |
//! | [`runtime`] | start and stop an app: [`runtime::raw`] processes, [`runtime::container`]s, [`runtime::systemd`] units; limits, files, health probes |
//! | [`traffic`] | blue-green: the port forwarder and the switch decision |
//! | [`telemetry`] | metrics, app logs, the app counters endpoint, the offline backlog |
//! | [`bus`], [`wire`] | the MQTT session, and publishing by the topic contract |
//! | [`identity`], [`tls`], [`http`] | enrollment, the device key and signer; TLS and HTTP clients |
//! | [`store`], [`layout`] | the agent database and the data directory's paths |
//! | [`resident`] | gives back the code pages and free heap an idle agent does not use |
//! | [`cli`], [`config`], [`inventory`], [`limits`], [`confine`], [`logging`] | the command line and settings, what the device offers, the agent's own bounds, paths confined to a directory, the RUST_LOG filter |

pub mod bus;
pub mod cli;
pub mod components;
pub mod config;
pub mod confine;
pub mod daemon;
pub mod fetch;
pub mod http;
pub mod identity;
pub mod install;
pub mod inventory;
pub mod layout;
pub mod limits;
pub mod logging;
pub mod reconcile;
pub mod report;
pub mod resident;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod traffic;
pub mod wire;
