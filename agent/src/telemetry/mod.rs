//! What the agent tells the operator besides status: per-app and per-device metrics (from
//! `/proc` plus the counters apps report to the local endpoint), app log lines, and the
//! on-disk backlog that carries both through broker outages.

pub mod counters;
pub mod logs;
pub mod procfs;
pub mod spool;
pub mod tail;
