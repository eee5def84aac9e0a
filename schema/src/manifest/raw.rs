//! The manifest exactly as `app.yaml` writes it (seed format). Every struct refuses unknown
//! fields, so a typo is an error naming the field rather than a silently ignored setting.

use super::selector::LabelRequirement;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole `app.yaml` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// Must be `fleet.v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Must be `Application`.
    pub kind: String,
    /// Name and version.
    pub metadata: RawMetadata,
    /// What to run and how.
    pub spec: RawSpec,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// Application name.
    pub name: String,
    /// Application version (semantic).
    pub version: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// The artifacts making up this version.
    pub artifacts: Vec<RawArtifact>,
    /// Environment and files.
    #[serde(default)]
    pub configuration: Option<RawConfiguration>,
    /// Supervisor, restart policy, startup timeout.
    #[serde(default)]
    pub runtime: Option<RawRuntime>,
    /// Health check.
    #[serde(default)]
    pub healthcheck: Option<RawHealthCheck>,
    /// Limits and requests.
    #[serde(default)]
    pub resources: Option<RawResources>,
    /// Which devices may run it.
    #[serde(default)]
    pub placement: Option<RawPlacement>,
}

/// One entry of `spec.artifacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    /// Artifact name.
    pub name: String,
    /// Artifact version.
    pub version: String,
    /// Artifact type (`binary`, `oci-image`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// How this artifact runs when the app has several (replaces what it takes from
    /// `spec.runtime`; see [`super::components`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RawRuntime>,
    /// This artifact's own health check (the app's `spec.healthcheck` belongs to its first
    /// runnable artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<RawHealthCheck>,
}

/// A YAML scalar used as an environment value (`API_PORT: 8080` is an integer in YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// `spec.configuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfiguration {
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, Scalar>,
    /// Environment variables whose values are secret (encrypted on the bus like everything
    /// sent to a device, shown only to admin tokens, never logged).
    #[serde(default)]
    pub secrets: BTreeMap<String, Scalar>,
    /// Files written before start.
    #[serde(default)]
    pub files: Vec<RawFile>,
}

/// One of `spec.configuration.files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Where to write it.
    pub path: String,
    /// Content.
    pub content: String,
    /// Permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
    /// The content is secret (shown only to admin tokens, written 0600 unless `mode` says).
    #[serde(default)]
    pub secret: bool,
}

/// `spec.runtime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// `raw`, `supervisor`, `systemd`, `docker`, `podman`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `always`, `on-failure`, `never`.
    #[serde(default)]
    pub restart: Option<String>,
    /// e.g. `30s`.
    #[serde(default)]
    pub startup_timeout: Option<String>,
    /// SIGTERM to SIGKILL grace, e.g. `10s`.
    #[serde(default)]
    pub stop_grace: Option<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Entry point inside an archive.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Ports the app serves.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Script inside the archive run once after unpacking.
    #[serde(default)]
    pub install_script: Option<String>,
    /// Script inside the archive run before every start.
    #[serde(default)]
    pub pre_start_script: Option<String>,
}

/// Probe timing, written inside each probe as the seed does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpProbe {
    /// Path.
    pub path: String,
    /// Port.
    pub port: u16,
    /// Expected status.
    #[serde(default)]
    pub expected_status: Option<u16>,
    /// e.g. `30s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// e.g. `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive failures before unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Grace after start.
    #[serde(default)]
    pub start_period: Option<String>,
}

/// A TCP probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpProbe {
    /// Port.
    pub port: u16,
    /// e.g. `30s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// e.g. `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive failures before unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Grace after start.
    #[serde(default)]
    pub start_period: Option<String>,
}

/// A command probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecProbe {
    /// Program and arguments.
    pub command: Vec<String>,
    /// e.g. `30s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// e.g. `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive failures before unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Grace after start.
    #[serde(default)]
    pub start_period: Option<String>,
}

/// `spec.healthcheck`: exactly one of the probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// HTTP GET probe.
    #[serde(default)]
    pub http: Option<RawHttpProbe>,
    /// TCP connect probe.
    #[serde(default)]
    pub tcp: Option<RawTcpProbe>,
    /// Command probe.
    #[serde(default)]
    pub exec: Option<RawExecProbe>,
}

/// `memory` and `cpu` quantities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuantities {
    /// e.g. `2Gi`.
    #[serde(default)]
    pub memory: Option<String>,
    /// e.g. `500m`.
    #[serde(default)]
    pub cpu: Option<String>,
}

/// `spec.resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// Hard limits.
    #[serde(default)]
    pub limits: Option<RawQuantities>,
    /// What the app needs (placement).
    #[serde(default)]
    pub requests: Option<RawQuantities>,
}

/// `spec.placement.device_selector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeviceSelector {
    /// Device type: matched against the device's `type` label.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Minimum total memory, e.g. `4Gi`.
    #[serde(default)]
    pub min_memory: Option<String>,
    /// Capabilities the agent must report (e.g. `docker`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Architecture (e.g. `arm64`).
    #[serde(default)]
    pub arch: Option<String>,
}

/// `spec.placement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlacement {
    /// Capability and resource constraints.
    #[serde(default)]
    pub device_selector: Option<RawDeviceSelector>,
    /// Label requirements.
    #[serde(default)]
    pub node_affinity: Vec<LabelRequirement>,
}
