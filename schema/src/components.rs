//! Applications made of several runnable artifacts ("components"), on the wire.
//!
//! A [`crate::DesiredApp`] with one runnable artifact looks exactly as it always has: its
//! `artifact` and `spec`, and no `components`. One with several carries them all in
//! `components` (each with its own artifact reference and spec, all covered by the desired
//! state's signature like the rest of the body), and its own `artifact` is a marker of type
//! [`COMPONENTS_KIND`] that no agent installs: an agent that predates components ignores the
//! unknown `components` field, sees an artifact type it does not support and refuses the whole
//! app (reporting it `failed` with that reason) instead of running half of it.
//!
//! On the status side, an [`crate::AppStatus`] of a multi-component app carries one
//! [`ComponentStatus`] per component, and its own phase and health are the fold of theirs
//! ([`fold_phase`], [`fold_health`]), so a reader that knows nothing of components still sees
//! the app as running and healthy only when every component is.

use crate::app_spec::AppSpec;
use crate::desired::ArtifactRef;
use crate::status::{AppPhase, AppStatus, HealthState};
use crate::ArtifactType;
use serde::{Deserialize, Serialize};

/// Between an app's name and a component's in the name of the unit a device runs the component
/// as (`<app>__<component>`): its directories, process, container and systemd unit, and the
/// app name its metrics and logs carry. Only characters every one of those names accepts.
pub const UNIT_SEPARATOR: &str = "__";

/// The application a unit (or app) name belongs to: the part before [`UNIT_SEPARATOR`], or the
/// name itself for a single-artifact app.
pub fn app_of_unit(unit: &str) -> &str {
    unit.split_once(UNIT_SEPARATOR).map_or(unit, |(app, _)| app)
}

/// The capability an agent reports when it runs applications of several artifacts; fleetd
/// refuses to send one to a device whose reported inventory lacks it (an older agent).
pub const CAPABILITY: &str = "components";

/// The artifact type of the marker a multi-component app carries in place of its artifact.
pub const COMPONENTS_KIND: &str = "components";

/// One runnable artifact of a multi-component app, as the device should run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredComponent {
    /// Component name: the artifact's name in the manifest, unique within the app.
    pub name: String,
    /// The artifact to fetch, verify and run.
    pub artifact: ArtifactRef,
    /// How to run it (defaults: a raw process restarted always, no health check).
    #[serde(default)]
    pub spec: AppSpec,
}

/// The reported state of one component of an app on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Version of the component's artifact.
    #[serde(default)]
    pub artifact_version: String,
    /// Lifecycle phase of the component at the app's desired version.
    pub phase: AppPhase,
    /// Restarts of the component's process.
    #[serde(default)]
    pub restart_count: u32,
    /// Why the component's last attempt failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Health of the component, from its own health check (unknown without one).
    #[serde(default)]
    pub health: HealthState,
    /// Detail of the last health verdict.
    #[serde(default)]
    pub health_message: Option<String>,
}

/// The marker artifact of a multi-component app `name@version` (see the module docs).
pub fn marker_artifact(name: &str, version: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.to_string(),
        version: version.to_string(),
        kind: ArtifactType::Other(COMPONENTS_KIND.to_string()),
        ..Default::default()
    }
}

/// True for the marker artifact type.
pub fn is_marker(kind: &ArtifactType) -> bool {
    kind.as_str() == COMPONENTS_KIND
}

/// How far along a phase is, for folding: the least advanced component sets the app's phase,
/// and any failure or crash loop outranks progress.
fn rank(phase: &AppPhase) -> u8 {
    match phase {
        AppPhase::Failed => 0,
        AppPhase::CrashLoop => 1,
        AppPhase::Stopped => 2,
        AppPhase::Pending => 3,
        AppPhase::Downloading => 4,
        AppPhase::Installing => 5,
        AppPhase::Starting => 6,
        AppPhase::Running => 7,
        // A phase from a newer agent: not running as far as this build can tell.
        AppPhase::Other(_) => 3,
    }
}

/// The phase of an app made of components in `phases`: `failed` when any failed, else
/// `crash-loop` when any crash-loops, else the least advanced one (`running` only when all
/// run). `pending` for no component at all.
pub fn fold_phase<'a>(phases: impl IntoIterator<Item = &'a AppPhase>) -> AppPhase {
    phases
        .into_iter()
        .min_by_key(|p| rank(p))
        .cloned()
        .unwrap_or(AppPhase::Pending)
}

/// The health of an app made of components in `states`: `unhealthy` when any is, else
/// `starting` when any is, else `healthy` when any has a verdict (components without a health
/// check stay `unknown` and do not veto), else `unknown`.
pub fn fold_health<'a>(states: impl IntoIterator<Item = &'a HealthState>) -> HealthState {
    let mut out = HealthState::Unknown;
    for s in states {
        out = match (s, &out) {
            (HealthState::Unhealthy, _) | (_, HealthState::Unhealthy) => HealthState::Unhealthy,
            (HealthState::Starting, _) | (_, HealthState::Starting) => HealthState::Starting,
            (HealthState::Healthy, _) | (_, HealthState::Healthy) => HealthState::Healthy,
            _ => HealthState::Unknown,
        };
    }
    out
}

impl AppStatus {
    /// The app's phase and health counting its components too: what a rollout judges. For an
    /// app without components, its own phase and health; with components, the fold of the
    /// app's own values and every component's, so a peer that folded differently (or not at
    /// all) cannot make a device count healthy while a component is not.
    pub fn overall(&self) -> (AppPhase, HealthState) {
        if self.components.is_empty() {
            return (self.phase.clone(), self.health.clone());
        }
        let phases = std::iter::once(&self.phase).chain(self.components.iter().map(|c| &c.phase));
        let health = std::iter::once(&self.health).chain(self.components.iter().map(|c| &c.health));
        (fold_phase(phases), fold_health(health))
    }
}

#[cfg(test)]
mod tests;
