//! Application manifests (`app.yaml`, `apiVersion: fleet.v1`, `kind: Application`): parsing
//! exactly as the seed writes them, validation with errors naming the field and the problem,
//! and the mapping to the wire [`AppSpec`] (milliseconds, bytes, millicores) that every
//! [`crate::DesiredApp`] carries. Pure: the controller parses once, devices never see YAML.

mod budget;
pub mod components;
mod raw;
pub mod selector;
pub mod units;
mod validate;

pub use raw::*;
pub use selector::{matches_all, LabelRequirement, Operator};

use crate::app_spec::AppSpec;
use crate::status::Inventory;
use serde::{Deserialize, Serialize};

/// A manifest that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML/JSON of the manifest's shape (the message names the field: unknown, missing or
    /// of the wrong type, with the position).
    #[error("manifest does not parse: {0}")]
    Syntax(String),
    /// Well-formed but invalid; one entry per problem.
    #[error("manifest is invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The document, with its YAML aliases expanded, is larger than the limit: refused before
    /// it is deserialized, so an alias bomb costs nothing.
    #[error("manifest expands beyond {limit} bytes once its YAML aliases (*name) are expanded; write the values out, or make them smaller")]
    Expands {
        /// The limit in bytes.
        limit: usize,
    },
    /// The manifest text, or the validated application (its arguments, environment,
    /// configuration files and other settings), is larger than the limit.
    #[error("manifest is too large: {what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was measured.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// Default bound on a manifest: its document with aliases expanded, and its validated
/// application. Well below the bus's 1 MiB payload limit ([`crate::codec::DEFAULT_MAX_PAYLOAD`]),
/// which a device's desired state (every app's spec) must fit.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.resources.limits.memory`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One artifact of an application version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppArtifact {
    /// Artifact name.
    pub name: String,
    /// Artifact version.
    pub version: String,
    /// Artifact type.
    #[serde(rename = "type")]
    pub kind: String,
    /// This artifact's own runtime, when its manifest entry gives one (see [`components`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::app_spec::RuntimeSpec>,
    /// This artifact's own health check, when its manifest entry gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::app_spec::HealthCheck>,
}

/// Where an application may run: checked against each device's reported inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Placement {
    /// The device's `type` label must equal this.
    pub device_type: Option<String>,
    /// The device must report at least this much memory, bytes.
    pub min_memory: Option<u64>,
    /// Capabilities the device must report.
    pub capabilities: Vec<String>,
    /// The device's architecture.
    pub arch: Option<String>,
    /// Label requirements (node affinity).
    pub affinity: Vec<LabelRequirement>,
}

impl Placement {
    /// Why a device with this inventory cannot run the application (`None`: it can).
    pub fn reject_reason(&self, inv: &Inventory) -> Option<String> {
        if let Some(t) = &self.device_type {
            if inv.labels.get("type") != Some(t) {
                return Some(format!("device type is not {t:?}"));
            }
        }
        if let Some(min) = self.min_memory {
            if inv.total_memory < min {
                return Some(format!(
                    "device has {} bytes of memory, needs {min}",
                    inv.total_memory
                ));
            }
        }
        if let Some(arch) = &self.arch {
            if &inv.arch != arch {
                return Some(format!(
                    "device architecture {:?} is not {arch:?}",
                    inv.arch
                ));
            }
        }
        if let Some(cap) = self
            .capabilities
            .iter()
            .find(|c| !inv.capabilities.contains(c))
        {
            return Some(format!("device lacks capability {cap:?}"));
        }
        if let Some(r) = self.affinity.iter().find(|r| !r.matches(&inv.labels)) {
            return Some(format!(
                "labels do not satisfy {} {:?} {:?}",
                r.key, r.operator, r.values
            ));
        }
        None
    }
}

/// Artifact types agents install and run: every artifact of one of them runs as a component of
/// the application; the first is its primary.
pub const RUNNABLE_TYPES: &[&str] = &[
    "binary",
    "archive",
    "deb",
    "oci-image",
    "rpm",
    "apk",
    "nixpack",
];

/// A validated application version, as the controller registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Application name.
    pub name: String,
    /// Application version.
    pub version: String,
    /// Labels from the metadata.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Artifacts in manifest order.
    pub artifacts: Vec<AppArtifact>,
    /// How devices run it (wire form).
    pub spec: AppSpec,
    /// Where it may run.
    #[serde(default)]
    pub placement: Placement,
}

impl Application {
    /// The artifact the device runs: the first one of a type agents run ([`RUNNABLE_TYPES`]).
    pub fn primary_artifact(&self) -> Option<&AppArtifact> {
        self.artifacts
            .iter()
            .find(|a| RUNNABLE_TYPES.contains(&a.kind.as_str()))
    }
}

/// Parses and validates a YAML manifest within [`DEFAULT_MAX_MANIFEST_BYTES`].
pub fn parse_yaml(text: &str) -> Result<Application, ManifestError> {
    parse_yaml_within(text, DEFAULT_MAX_MANIFEST_BYTES)
}

/// Parses and validates a JSON manifest (same shape as the YAML) within
/// [`DEFAULT_MAX_MANIFEST_BYTES`].
pub fn parse_json(text: &str) -> Result<Application, ManifestError> {
    parse_json_within(text, DEFAULT_MAX_MANIFEST_BYTES)
}

/// Parses and validates a YAML manifest of at most `max` bytes, aliases expanded (checked
/// before deserializing) and once validated.
pub fn parse_yaml_within(text: &str, max: usize) -> Result<Application, ManifestError> {
    text_within(text, max)?;
    budget::check_yaml(text, max).map_err(|e| match e {
        None => ManifestError::Expands { limit: max },
        Some(message) => ManifestError::Syntax(message),
    })?;
    let raw: RawManifest =
        serde_norway::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    validated_within(validate::validate(raw)?, max)
}

/// Parses and validates a JSON manifest of at most `max` bytes (text and validated).
pub fn parse_json_within(text: &str, max: usize) -> Result<Application, ManifestError> {
    text_within(text, max)?;
    let raw: RawManifest =
        serde_json::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    validated_within(validate::validate(raw)?, max)
}

fn text_within(text: &str, max: usize) -> Result<(), ManifestError> {
    if text.len() > max {
        return Err(ManifestError::TooLarge {
            what: "the document",
            size: text.len(),
            limit: max,
        });
    }
    Ok(())
}

/// Bounds what is stored and sent to devices: the application's size as JSON (its arguments,
/// environment, configuration files and every other setting).
fn validated_within(app: Application, max: usize) -> Result<Application, ManifestError> {
    let size = serde_json::to_vec(&app).map_or(usize::MAX, |v| v.len());
    if size > max {
        return Err(ManifestError::TooLarge {
            what: "the validated application (arguments, environment, configuration files and other settings)",
            size,
            limit: max,
        });
    }
    Ok(app)
}

#[cfg(test)]
mod tests;
