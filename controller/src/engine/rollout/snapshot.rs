//! What the pure engine sees of the fleet at one instant: per target device, presence and the
//! state of the deployed app; per device, request and error counts over the error window.

use fleet_schema::{AppPhase, HealthState};
use std::collections::BTreeMap;

/// The deployed application as one device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppObs {
    /// Version the status is about.
    pub version: String,
    /// Its phase.
    pub phase: AppPhase,
    /// Restarts of that version.
    pub restart_count: u32,
    /// Health verdict.
    pub health: HealthState,
    /// Last error.
    pub error: Option<String>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceObs {
    /// Connected.
    pub online: bool,
    /// Last time heard from.
    pub last_seen: u64,
    /// The app, if reported.
    pub app: Option<AppObs>,
}

/// Requests and errors a device's app served over the error window (deltas of its counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
}

/// The fleet at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Devices by id (absent: never heard from).
    pub devices: BTreeMap<String, DeviceObs>,
    /// Error counts by device.
    pub errors: BTreeMap<String, ErrorCounts>,
}

/// What the rollout deploys.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The new version.
    pub version: &'a str,
    /// Whether the app has a health check (then only `healthy` counts as healthy).
    pub has_healthcheck: bool,
}

/// A device's standing with respect to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Running the new version and healthy.
    Healthy,
    /// Not there yet (downloading, starting, unhealthy, another version).
    Progressing,
    /// Reported failure of the new version.
    Failed(String),
    /// Offline longer than the offline timeout.
    Offline,
}

/// Classifies one device.
pub fn standing(
    obs: Option<&DeviceObs>,
    ctx: Ctx<'_>,
    now: u64,
    offline_timeout_ms: u64,
) -> Standing {
    let Some(obs) = obs else {
        return Standing::Progressing;
    };
    if !obs.online && now.saturating_sub(obs.last_seen) > offline_timeout_ms {
        return Standing::Offline;
    }
    match &obs.app {
        Some(a) if a.version == ctx.version => match (&a.phase, &a.health) {
            (AppPhase::Running, HealthState::Healthy) => Standing::Healthy,
            (AppPhase::Running, HealthState::Unknown) if !ctx.has_healthcheck => Standing::Healthy,
            (AppPhase::Failed, _) => Standing::Failed(
                a.error
                    .clone()
                    .unwrap_or_else(|| "device reported failure without a reason".into()),
            ),
            _ => Standing::Progressing,
        },
        _ => Standing::Progressing,
    }
}
