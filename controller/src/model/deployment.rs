//! A deployment as stored (table `deployments`): what was asked, the app every touched device
//! is told to run, what each ran before, and the rollout's state.

use super::rollout_state::Rollout;
use fleet_schema::api::TargetSpec;
use fleet_schema::manifest::Placement;
use fleet_schema::{ArtifactRef, DesiredApp, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Deployment id (sortable by creation).
    pub id: String,
    /// Application name.
    pub application: String,
    /// Version deployed.
    pub version: String,
    /// Strategy type.
    pub strategy: String,
    /// Creation time.
    pub created_at: UnixMillis,
    /// The artifact every target device was told to run.
    pub artifact: ArtifactRef,
    /// Devices this deployment has sent the new version to, each with the desired-state
    /// generation it wrote for it (a staged rollout adds devices step by step).
    pub devices: BTreeMap<String, u64>,
    /// The staged rollout (absent in records written before rollouts existed).
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// The app every touched device is told to run (with its spec).
    #[serde(default)]
    pub template: Option<DesiredApp>,
    /// Per touched device, the app it was told to run before (`None`: not installed), for
    /// rollback.
    #[serde(default)]
    pub previous: BTreeMap<String, Option<DesiredApp>>,
    /// The target as requested, for late joiners.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// The registered application's placement, re-checked for late joiners.
    #[serde(default)]
    pub placement: Option<Placement>,
}
