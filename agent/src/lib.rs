//! fleet-agent: keeps one edge device at the desired state its controller publishes. Pure cores
//! (the [`reconcile`]r, the per-app [`supervisor`] state machine, the [`report`] builder) decide;
//! thin shells ([`download`], [`install`], [`process`], [`bus`], [`store`], driven by
//! [`daemon`]) act. The library exists so the binary stays a small entry point and every module
//! is testable on its own.

pub mod bluegreen;
pub mod bus;
pub mod components;
pub mod config;
pub mod confine;
pub mod container;
pub mod container_run;
pub mod daemon;
pub mod download;
pub mod download_refresh;
pub mod forward;
pub mod http;
pub mod identity;
pub mod install;
pub mod install_archive;
pub mod install_deb;
pub mod install_nix;
pub mod install_oci;
pub mod install_pkg;
pub mod install_script;
pub mod install_tool;
pub mod inventory;
pub mod layout;
pub mod limits;
pub mod process;
pub mod reconcile;
pub mod report;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod verify;
pub mod wire;
