//! JSON types of fleetd's HTTP API, shared by the controller and `fleetctl`. Request types
//! refuse unknown fields (a typo must not be silently ignored); response types are read
//! leniently by the CLI so an older CLI works with a newer controller.

use crate::artifact::{ArtifactMeta, BuildInfo, Requirements, Signature};
pub use crate::deployment_state::{DeploymentState, StepState};
use crate::status::{AppStatus, Inventory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `metadata` part of `POST /api/v1/artifacts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadMetadata {
    /// Artifact name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Artifact type ("binary", ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// One platform, e.g. "linux/arm64".
    #[serde(default)]
    pub platform: Option<String>,
    /// Several platforms.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What a device must offer to run it (checked at deployment and on the device).
    #[serde(default)]
    pub requirements: Requirements,
    /// Where and how CI built it.
    #[serde(default)]
    pub build_info: BuildInfo,
    /// Signatures over the canonical manifest (`fleetctl artifact push --sign`).
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// `oci-image` only: a registry reference (`registry:5000/app@sha256:..` or a tag) the
    /// device pulls instead of loading a tarball; the `file` part is then omitted (or must be
    /// the reference document fleetd would store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// With a tagged `image`: the manifest digest the pulled image must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Size of the `file` part in bytes, when the client knows it (fleetctl does): fleetd
    /// refuses an upload over its limit before reading the file, reserves its staging space at
    /// once, and checks the file has exactly this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Strategy of a deployment and its parameters. Durations are strings such as `30s`, `5m`;
/// percentages are integers 0-100. Parameters that do not apply to the strategy are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// "all-at-once", "canary", "rolling" or "blue-green".
    #[serde(rename = "type")]
    pub kind: String,
    /// Canary: percentage of the target in the first step (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_percentage: Option<u32>,
    /// Canary: percentage added by each further step (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_percentage: Option<u32>,
    /// Canary: least time between the start of two steps (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_interval: Option<String>,
    /// Rolling: devices per batch (default and most: max_unavailable + max_surge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Rolling: most devices updating at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// Rolling: devices per batch beyond max_unavailable that update make-before-break (the
    /// new version starts next to the old one), so they stay available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    /// Rolling: time a batch must stay healthy before the next (default 10s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "health_check_grace"
    )]
    pub health_check_grace_period: Option<String>,
    /// Blue-green: time the new version must stay healthy before the switch (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_period: Option<String>,
    /// Blue-green: time the old version is kept after the switch (default 30s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "traffic_switch_delay"
    )]
    pub switch_delay: Option<String>,
    /// Least time a device must be running and healthy to count (default 10s; canary and
    /// all-at-once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_time: Option<String>,
    /// Percentage of a step's devices that must be healthy for the step to succeed (default
    /// 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_percentage: Option<u32>,
    /// Most time a step may take before the deployment fails and rolls back (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// A device offline longer than this counts as failed or is skipped (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_timeout: Option<String>,
    /// "fail" (default) or "skip": what an offline device is after `offline_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_policy: Option<String>,
    /// Roll back automatically when a trigger fires (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// Override every trigger's action: "immediate" or "gradual".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The seed's `RollbackTriggers`: each entry replaces the default thresholds of its trigger
    /// type; types not listed keep the seed's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_triggers: Vec<RollbackTriggerSpec>,
}

/// One automatic rollback trigger of a deployment (the seed's `RollbackTrigger`), so an
/// operator can tighten or loosen the defaults per deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackTriggerSpec {
    /// "crash-loop" (threshold: restarts), "high-error-rate" (threshold: fraction of requests
    /// that failed, e.g. 0.05) or "health-check-failure" (threshold: fraction of the step's
    /// devices unhealthy, e.g. 0.5).
    #[serde(rename = "type")]
    pub kind: String,
    /// The trigger's threshold, in the unit its type names.
    pub threshold: f64,
    /// The window (crash loop, error rate) or how long the condition must hold (health), such
    /// as `2m`; the seed's default for the type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// "immediate" or "gradual"; the seed's default for the type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Which devices a deployment targets: explicit ids, plus the devices that pass every filter
/// given (group AND selector AND match expressions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Explicit device ids, added to whatever the filters below select.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Label equality selector: every pair must match (a filter: with `group` and
    /// `match_expressions`, a device must pass all of them).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// A named device group (static list or label selector): only its members are chosen, and
    /// of them only those that also pass `selector` and `match_expressions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Set-based label requirements (In, NotIn, Exists, DoesNotExist, Gt, Lt), all of which
    /// must hold; they narrow `selector` (or select alone when it is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<crate::manifest::LabelRequirement>,
}

/// Body of `POST /api/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Application (today: the artifact of the same name).
    pub application: String,
    /// Version to deploy.
    pub version: String,
    /// Rollout strategy; all-at-once when absent.
    #[serde(default)]
    pub strategy: Option<StrategySpec>,
    /// Target devices.
    pub target: TargetSpec,
}

/// Answer to `POST /api/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentCreated {
    /// The new deployment's id.
    pub id: String,
    /// The devices it targets.
    pub devices: Vec<String>,
}

/// Progress of one device in a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum DeviceProgress {
    /// Desired state published, device has not started on it.
    Pending,
    /// Device is downloading, installing or starting it.
    InProgress {
        /// The device's current phase.
        phase: String,
    },
    /// Device runs the deployed version.
    Succeeded,
    /// Device failed; reason from its status.
    Failed {
        /// Why.
        reason: String,
    },
    /// A newer deployment took over this device.
    Superseded,
    /// In the target, but its step has not started yet.
    Waiting,
    /// Returned to the version it ran before this deployment.
    RolledBack,
}

/// A deployment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    /// Deployment id.
    pub id: String,
    /// Application name.
    pub application: String,
    /// Version being deployed.
    pub version: String,
    /// Strategy type.
    pub strategy: String,
    /// Overall state, derived from the rollout's phase alone.
    pub state: DeploymentState,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
    /// Per-device progress.
    pub devices: BTreeMap<String, DeviceProgress>,
    /// The staged rollout: steps, phase, the trigger that fired.
    #[serde(default)]
    pub rollout: Option<RolloutView>,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// "running", "paused", "succeeded", "rolling-back", "rolled-back", "aborted", "failed",
    /// "superseded".
    pub phase: String,
    /// Index of the current step (0-based).
    pub current_step: usize,
    /// Every step in order.
    pub steps: Vec<StepView>,
    /// The rollback trigger that fired, with its numbers.
    #[serde(default)]
    pub trigger: Option<TriggerView>,
    /// Devices that joined later and match the target but cannot run the release, each with
    /// the reason (placement or the artifact's platforms and requirements).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ineligible: BTreeMap<String, String>,
}

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// Devices of this step (not cumulative).
    pub devices: Vec<String>,
    /// Of them, those reporting the new version running (progress `succeeded`): an
    /// observation for progress bars; whether the step succeeded is `state`, the engine's
    /// decision, which also waits for `min_healthy_time`.
    pub healthy: usize,
    /// Of them, those reporting this deployment failed (progress `failed`).
    pub failed: usize,
    /// Where the step stands, derived from the rollout alone.
    pub state: StepState,
}

/// A rollback trigger that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerView {
    /// "crash-loop", "error-rate", "health-check", "step-failed", "progress-deadline",
    /// "manual".
    pub kind: String,
    /// Human-readable detail with the numbers.
    pub detail: String,
    /// Observed value (restarts, error permille, unhealthy percent, ...).
    pub observed: u64,
    /// The threshold it crossed.
    pub threshold: u64,
    /// "immediate" or "gradual".
    pub action: String,
    /// When it fired.
    pub at: u64,
}

/// Answer to `POST /api/v1/applications` and an entry of `GET /api/v1/applications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationView {
    /// The validated application version.
    pub application: crate::manifest::Application,
    /// When it was registered.
    pub registered_at: u64,
}

/// Body of `POST /api/v1/groups`: a named set of devices, a static list or a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// Static member ids.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Label equality selector.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<crate::manifest::LabelRequirement>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Connected to the bus.
    pub online: bool,
    /// Labels the agent reported.
    pub labels: BTreeMap<String, String>,
    /// Last reported inventory.
    pub inventory: Option<Inventory>,
    /// Agent version.
    pub agent_version: String,
    /// Generation desired by the controller.
    pub desired_generation: u64,
    /// Generation the agent last accepted.
    pub observed_generation: u64,
    /// Each app's reported state.
    pub apps: Vec<AppStatus>,
    /// Last time anything was heard from it, Unix milliseconds.
    pub last_seen: u64,
    /// Where its enrollment stands (`accepted`, `revoked`, ...); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<crate::trust::tokens::EnrollmentState>,
    /// The last message its agent refused (forged, unsigned, replayed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<crate::status::Refusal>,
}

/// One entry of `GET /api/v1/artifacts/{name}/versions`, in semantic-version order.
pub type VersionList = Vec<ArtifactMeta>;

/// Answer to `GET /api/v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always "ok" when the controller answers at all.
    pub status: String,
    /// Whether the controller is currently connected to the MQTT broker.
    pub mqtt_connected: bool,
}

/// One entry of `GET /api/v1/artifacts`: an artifact name and its newest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSummary {
    /// Artifact name.
    pub name: String,
    /// Highest semantic version stored.
    pub latest_version: String,
    /// Number of versions stored.
    pub version_count: usize,
}

/// Answer to `GET /api/v1/artifacts/{name}/{version}/url`: a fresh download URL, for a device
/// whose URL from an older desired state has expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadUrl {
    /// Absolute URL (fleetd's signed download endpoint or a presigned object-store URL).
    pub url: String,
    /// When it stops working, Unix milliseconds.
    pub expires_at: u64,
}

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What was wrong, naming the offending input.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_upload_metadata_parses_and_typos_are_refused() {
        let ok: UploadMetadata = serde_json::from_str(
            r#"{"name":"myapp","version":"2.0.0","platform":"linux/amd64","type":"binary"}"#,
        )
        .expect("the seed's metadata parses");
        assert_eq!(ok.kind, "binary");
        let err = serde_json::from_str::<UploadMetadata>(
            r#"{"name":"myapp","version":"2.0.0","typo":"x","type":"binary"}"#,
        )
        .expect_err("unknown field refused");
        assert!(err.to_string().contains("typo"), "{err}");
    }

    #[test]
    fn deployment_request_parses() {
        let d: CreateDeployment = serde_json::from_str(
            r#"{"application":"myapp","version":"2.0.0","strategy":{"type":"all-at-once"},"target":{"selector":{"site":"a"}}}"#,
        )
        .expect("parses");
        assert_eq!(d.target.selector.get("site").map(String::as_str), Some("a"));
    }
}
