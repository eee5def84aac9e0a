//! JSON types of fleetd's HTTP API, shared by the controller and `fleetctl`. Request types
//! refuse unknown fields (a typo must not be silently ignored); response types are read
//! leniently by the CLI so an older CLI works with a newer controller.

use crate::artifact::ArtifactMeta;
use crate::status::{AppStatus, Inventory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `metadata` part of `POST /api/v1/artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Strategy of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// "all-at-once" (more strategies arrive with rollouts).
    #[serde(rename = "type")]
    pub kind: String,
}

/// Which devices a deployment targets: an explicit list, a label selector, or both (union).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Explicit device ids.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Label equality selector: every pair must match.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

/// Body of `POST /api/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Overall state: "in-progress", "succeeded", "failed".
    pub state: String,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
    /// Per-device progress.
    pub devices: BTreeMap<String, DeviceProgress>,
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
