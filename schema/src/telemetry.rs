//! Metrics and log batches streamed by agents on `fleet/<device>/metrics` and
//! `fleet/<device>/logs` (QoS 0, not retained). Batched so that a board sends a few packets per
//! interval instead of one per sample or line.

use crate::open_enum;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-app process metrics (the seed's `AppMetrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppMetrics {
    /// Application name.
    pub app: String,
    /// CPU use, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Bytes read from disk.
    pub disk_io_read: u64,
    /// Bytes written to disk.
    pub disk_io_write: u64,
    /// Network bytes received.
    pub network_rx: u64,
    /// Network bytes sent.
    pub network_tx: u64,
    /// Open file descriptors.
    pub fds: u32,
    /// Threads.
    pub threads: u32,
    /// Restarts of the current version.
    pub restart_count: u32,
    /// Seconds since the current process started.
    pub uptime_seconds: u64,
    /// Application-reported counters (e.g. "requests", "errors").
    pub custom_metrics: BTreeMap<String, f64>,
    /// Health verdict ("healthy", "unhealthy", "unknown").
    pub health: String,
    /// Health detail.
    pub health_message: String,
}

/// Whole-device metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceMetrics {
    /// CPU use, percent of all cores.
    pub cpu_percent: f32,
    /// Memory in use, bytes.
    pub memory_used: u64,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Disk space in use, bytes.
    pub disk_used: u64,
    /// Disk space total, bytes.
    pub disk_total: u64,
    /// One-minute load average.
    pub load1: f32,
    /// Network bytes received.
    pub network_rx: u64,
    /// Network bytes sent.
    pub network_tx: u64,
}

/// One metrics report from a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsBatch {
    /// Reporting device.
    pub device_id: String,
    /// Sample time.
    pub timestamp: UnixMillis,
    /// Device-wide figures.
    pub device: DeviceMetrics,
    /// Per-app figures.
    pub apps: Vec<AppMetrics>,
}

open_enum! {
    /// Severity parsed from a log line.
    pub enum LogLevel {
        /// Trace.
        Trace => "trace",
        /// Debug.
        Debug => "debug",
        /// Info (also the default for unmarked stdout lines).
        Info => "info",
        /// Warning.
        Warn => "warn",
        /// Error (also the default for unmarked stderr lines).
        Error => "error",
    }
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the line was read.
    pub timestamp: UnixMillis,
    /// Application it came from ("agent" for the agent's own lines).
    pub app: String,
    /// "stdout" or "stderr".
    #[serde(default)]
    pub stream: String,
    /// Parsed level.
    pub level: LogLevel,
    /// The line, truncated to the agent's limit.
    pub message: String,
}

/// A batch of log lines, with how many were dropped since the previous batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogBatch {
    /// Reporting device.
    pub device_id: String,
    /// The lines, oldest first.
    pub entries: Vec<LogEntry>,
    /// Lines dropped by rate limits or full buffers since the previous batch.
    pub dropped: u64,
    /// Part of the answer to a log-history request (not live output); an answer of no lines is
    /// one empty batch, so the asker knows the device answered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

/// Lines of history an [`AgentRequest::LogHistory`] returns when it names no count.
pub const DEFAULT_HISTORY_LINES: u32 = 100;

fn default_history_lines() -> u32 {
    DEFAULT_HISTORY_LINES
}

/// A one-off request to an agent on `fleet/<device>/req` (QoS 1, not retained). Tagged by
/// `kind` and open: an agent ignores kinds it does not know, so newer tools can add requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AgentRequest {
    /// Send the most recent lines of the agent's in-memory log ring as one [`LogBatch`] on
    /// `fleet/<device>/logs` (so `fleetctl logs` can show history before following).
    LogHistory {
        /// Only this app's lines; every app's when absent.
        #[serde(default)]
        app: Option<String>,
        /// How many lines at most (the agent caps it at its ring size).
        #[serde(default = "default_history_lines")]
        lines: u32,
    },
    /// A request kind this build does not know.
    #[serde(other)]
    Unsupported,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, DEFAULT_MAX_PAYLOAD};

    #[test]
    fn agent_requests_round_trip_and_unknown_kinds_are_kept_apart() {
        let r = AgentRequest::LogHistory {
            app: Some("web".into()),
            lines: 20,
        };
        let back: AgentRequest =
            decode(&encode(&r).expect("encodes"), DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(back, r);
        #[derive(Serialize)]
        struct Newer {
            kind: &'static str,
            depth: u8,
        }
        let newer = encode(&Newer {
            kind: "core-dump",
            depth: 3,
        })
        .expect("encodes");
        let got: AgentRequest = decode(&newer, DEFAULT_MAX_PAYLOAD).expect("lenient");
        assert_eq!(got, AgentRequest::Unsupported);
        #[derive(Serialize)]
        struct Bare {
            kind: &'static str,
        }
        let bare = encode(&Bare {
            kind: "log-history",
        })
        .expect("encodes");
        let got: AgentRequest = decode(&bare, DEFAULT_MAX_PAYLOAD).expect("defaults");
        assert_eq!(
            got,
            AgentRequest::LogHistory {
                app: None,
                lines: DEFAULT_HISTORY_LINES
            }
        );
    }
}
