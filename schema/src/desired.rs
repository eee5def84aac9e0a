//! Desired state: what the controller wants a device to run. One [`DesiredState`] per device is
//! kept in the controller's database and published retained on `fleet/<device>/cmd`; the agent
//! converges on the highest generation it has seen and never goes back to a lower one.

use crate::app_spec::AppSpec;
use crate::artifact::{ArtifactType, Platform, Requirements, Signature};
use crate::components::DesiredComponent;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// The complete desired state of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The device this state is for (guards against a message on the wrong topic).
    pub device_id: String,
    /// Monotonically increasing per device; an agent ignores a generation lower than the one it
    /// has applied, so replays and stale retained messages are harmless.
    pub generation: u64,
    /// The apps the device should run, each at one version. Apps absent here are stopped.
    pub apps: Vec<DesiredApp>,
    /// When the controller issued this generation.
    #[serde(default)]
    pub issued_at: UnixMillis,
}

/// One app the device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredApp {
    /// Application name (unique on the device).
    pub name: String,
    /// Application version.
    pub version: String,
    /// The artifact that implements this version.
    pub artifact: ArtifactRef,
    /// The deployment that asked for this version, for progress reporting.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// How to run it (runtime, configuration, health check, limits); defaults mean a raw
    /// process restarted always, with no health check and no limits.
    #[serde(default)]
    pub spec: AppSpec,
    /// Set when the deployment is blue-green: the agent starts the new version next to the old
    /// one, switches after the validation period and keeps the old one for the switch delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<BlueGreenHint>,
    /// The app's runnable artifacts when it has several (see [`crate::components`]): each runs
    /// as a component of this app, and `artifact` is then a marker no agent installs. Empty
    /// (and absent on the wire) for an app with one artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<DesiredComponent>,
}

impl DesiredApp {
    /// True when any part of the app has a health check (then a rollout counts a device healthy
    /// only on a `healthy` verdict, not on `unknown`).
    pub fn has_healthcheck(&self) -> bool {
        self.spec.healthcheck.is_some()
            || self.components.iter().any(|c| c.spec.healthcheck.is_some())
    }

    /// Every artifact the device fetches for this app: the components' when it has any, else
    /// its own.
    pub fn artifacts(&self) -> Vec<&ArtifactRef> {
        if self.components.is_empty() {
            vec![&self.artifact]
        } else {
            self.components.iter().map(|c| &c.artifact).collect()
        }
    }
}

/// How a blue-green deployment wants the agent to switch from the old version to the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlueGreenHint {
    /// How long the new version must run (and pass its health check) before the switch.
    pub validation_ms: u64,
    /// How long the old version is kept running after the switch, for an instant switch back.
    pub switch_delay_ms: u64,
}

/// What a device needs to fetch and verify an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Artifact name.
    pub name: String,
    /// Artifact version.
    pub version: String,
    /// Artifact type.
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// Exact size in bytes; a download of any other size is refused.
    pub size: u64,
    /// Lowercase hex sha256 of the content; a mismatch is refused.
    pub sha256: String,
    /// Where to download it from (absolute URL served by the controller or the store). It may
    /// expire; the agent then asks fleetd for a fresh one.
    pub url: String,
    /// Lowercase hex sha512 of the content, verified too when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Signatures over the artifact's canonical manifest (`fleet_schema::signing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    /// Platforms the artifact declares (part of the signed manifest; checked by the agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
    /// What the device must offer; re-checked by the agent before installing.
    #[serde(default, skip_serializing_if = "Requirements::is_empty")]
    pub requirements: Requirements,
    /// fleetd's endpoint that hands out a fresh `url` when this one has expired (used when the
    /// agent has not yet learnt fleetd's address from its presence message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
}

impl Default for ArtifactRef {
    /// An empty binary reference, for struct-update syntax in builders and tests.
    fn default() -> Self {
        Self {
            name: String::new(),
            version: String::new(),
            kind: ArtifactType::Binary,
            size: 0,
            sha256: String::new(),
            url: String::new(),
            sha512: None,
            signatures: Vec::new(),
            platforms: Vec::new(),
            requirements: Requirements::default(),
            refresh_url: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, DEFAULT_MAX_PAYLOAD};

    /// A newer controller may add fields and artifact types; this build must still read them.
    #[test]
    fn newer_peer_fields_and_types_are_accepted() {
        #[derive(Serialize)]
        struct NewerRef<'a> {
            name: &'a str,
            version: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            size: u64,
            sha256: &'a str,
            url: &'a str,
            delta_from: &'a str,
        }
        #[derive(Serialize)]
        struct NewerApp<'a> {
            name: &'a str,
            version: &'a str,
            artifact: NewerRef<'a>,
            priority: u8,
        }
        #[derive(Serialize)]
        struct Newer<'a> {
            device_id: &'a str,
            generation: u64,
            apps: Vec<NewerApp<'a>>,
            maintenance_window: &'a str,
        }
        let bytes = encode(&Newer {
            device_id: "d1",
            generation: 7,
            apps: vec![NewerApp {
                name: "a",
                version: "1.0.0",
                artifact: NewerRef {
                    name: "a",
                    version: "1.0.0",
                    kind: "wasm",
                    size: 3,
                    sha256: "00",
                    url: "http://x",
                    delta_from: "0.9.0",
                },
                priority: 1,
            }],
            maintenance_window: "02:00-04:00",
        })
        .expect("encodes");
        let d: DesiredState = decode(&bytes, DEFAULT_MAX_PAYLOAD).expect("lenient decode");
        assert_eq!(d.generation, 7);
        assert_eq!(d.apps[0].artifact.kind, ArtifactType::Other("wasm".into()));
        assert_eq!(d.apps[0].deployment_id, None);
    }
}
