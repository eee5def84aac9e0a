//! Reported state: what a device says about itself on `fleet/<device>/status` (retained), and
//! the controller's presence on `fleet/_controller/status`.

use crate::components::ComponentStatus;
use crate::open_enum;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

open_enum! {
    /// Where an app is in its lifecycle on the device.
    pub enum AppPhase {
        /// Known but nothing done yet.
        Pending => "pending",
        /// Fetching the artifact.
        Downloading => "downloading",
        /// Verifying and unpacking into its per-version location.
        Installing => "installing",
        /// Process launched, not yet confirmed running.
        Starting => "starting",
        /// Running (and healthy, when a health check is configured).
        Running => "running",
        /// Restarting too often (crash loop).
        CrashLoop => "crash-loop",
        /// Failed; `last_error` says why.
        Failed => "failed",
        /// Stopped on purpose.
        Stopped => "stopped",
    }
}

impl AppPhase {
    /// True for phases from which the agent will not progress without a new desired state.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            AppPhase::Running | AppPhase::Failed | AppPhase::Stopped
        )
    }
}

/// What the device offers, reported so the controller can target and check requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    /// CPU architecture in platform spelling (e.g. "amd64", "arm64", "arm").
    pub arch: String,
    /// Operating system (e.g. "linux").
    pub os: String,
    /// Kernel release (e.g. "6.1.0").
    pub kernel: String,
    /// Total memory, bytes.
    pub total_memory: u64,
    /// Free storage where the agent keeps its data, bytes.
    pub free_storage: u64,
    /// CPU clock, MHz.
    pub cpu_mhz: u32,
    /// Capabilities the agent detected or was configured with (e.g. "binary", "docker").
    pub capabilities: Vec<String>,
    /// Labels given to the agent (used by deployment selectors).
    pub labels: BTreeMap<String, String>,
}

/// The reported state of one app on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// Application name.
    pub name: String,
    /// Version this status describes (the one being installed, or running).
    pub version: String,
    /// Lifecycle phase of `version`.
    pub phase: AppPhase,
    /// How many times the running version was restarted.
    #[serde(default)]
    pub restart_count: u32,
    /// Why the last attempt failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The version that keeps running while `version` is being installed or after it failed.
    #[serde(default)]
    pub running_version: Option<String>,
    /// The deployment that asked for `version`.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// Health of the running version, from its health check (unknown without one).
    #[serde(default)]
    pub health: HealthState,
    /// Detail of the last health verdict (e.g. the failing probe's error).
    #[serde(default)]
    pub health_message: Option<String>,
    /// Per-component state of an app made of several artifacts (see [`crate::components`]);
    /// empty (and absent on the wire) for an app with one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
}

impl AppStatus {
    /// The version that serves now: the one kept running during an upgrade or after a failed
    /// one, otherwise the version this status describes. What dashboards count per version.
    pub fn serving_version(&self) -> &str {
        self.running_version.as_deref().unwrap_or(&self.version)
    }
}

open_enum! {
    /// An app's health as its health check sees it.
    #[derive(Default)]
    pub enum HealthState {
        /// No health check, or no verdict yet.
        #[default]
        Unknown => "unknown",
        /// Within the start period.
        Starting => "starting",
        /// Probes pass.
        Healthy => "healthy",
        /// `retries` consecutive probes failed.
        Unhealthy => "unhealthy",
    }
}

/// Everything a device reports about itself. The agent publishes it retained on every connect
/// and on every change. Its last will is a status with `online: false`, no inventory and no
/// apps: an offline status only flips presence, and receivers keep the last known details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The reporting device.
    pub device_id: String,
    /// Whether the agent is connected.
    pub online: bool,
    /// Agent build version.
    #[serde(default)]
    pub agent_version: String,
    /// Device facts; absent in the offline will.
    #[serde(default)]
    pub inventory: Option<Inventory>,
    /// The highest desired-state generation the agent has accepted.
    #[serde(default)]
    pub observed_generation: u64,
    /// Per-app state.
    #[serde(default)]
    pub apps: Vec<AppStatus>,
    /// When the agent produced this report.
    #[serde(default)]
    pub reported_at: UnixMillis,
    /// The last message the agent refused (unsigned, forged, addressed to another device,
    /// replayed), so an operator sees an attack or a misconfiguration in the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// A message an agent refused, and how many it refused since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Refusal {
    /// The topic it came on.
    pub topic: String,
    /// Why it was refused.
    pub reason: String,
    /// When, ms.
    pub at: UnixMillis,
    /// Messages refused since the agent started.
    pub count: u64,
}

/// The controller's retained presence message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Whether the controller is connected (its last will says false).
    pub online: bool,
    /// Controller build version.
    #[serde(default)]
    pub version: String,
    /// Base URL of the controller's HTTP API, for agents and tools.
    #[serde(default)]
    pub http_url: Option<String>,
    /// When this was published.
    #[serde(default)]
    pub at: UnixMillis,
}
