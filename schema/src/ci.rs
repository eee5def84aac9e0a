//! Deploying from CI by MQTT publish: the request a CI job publishes on `fleet/_ci/requests`
//! and the answers fleetd publishes under the job's reply topic (see `topics.md`, "CI
//! requests"). Requests come from shell scripts, so they are JSON (CBOR of the same shape is
//! accepted too) and strict: an unknown or missing field is an error naming it.
//!
//! The reply topic is derived, never taken from the request: `fleet/_ci/replies/<owner>/<id>`,
//! where `<owner>` is the MQTT user name of the request's token (`_token-<token id>`), so a
//! broker ACL can let each CI credential read its own replies only, and fleetd never publishes
//! where a request tells it to.

use crate::api::{CreateDeployment, DeploymentView, DeviceProgress};
use crate::topic::CiReplyPart;
use serde::{Deserialize, Serialize};

/// How far a signed request's `issued_at` may be from fleetd's clock, either way: 10 minutes.
pub const MAX_SIGNED_AGE_S: u64 = 600;

/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;

/// The request-id level of the reply topic for a request whose own id cannot be read (missing,
/// not a string, or breaking the id rules): `fleet/_ci/replies/<owner>/_invalid/result`.
pub const INVALID_ID: &str = "_invalid";

/// The reply owner of requests without a token (accepted only by `fleetd --insecure`).
pub const ANONYMOUS_OWNER: &str = "_anonymous";

/// A CI request (the payload on `fleet/_ci/requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiRequest {
    /// Idempotency key chosen by the job, e.g. `web-2.0.0-build-4711`: a repeated id is answered
    /// again, never deployed twice. 1 to 128 of `A-Z a-z 0-9 . _ -`, starting with a letter or
    /// digit.
    pub id: String,
    /// The CI credential carried in the request: a deploy-scoped API token
    /// (`fleet_<id>_<secret>`). Accepted only where the broker keeps requests private (an
    /// external broker with fleetd's ACL); elsewhere requests are signed instead, on
    /// `fleet/_ci/requests/<token id>/<hmac>`, and carry no token. Optional against
    /// `fleetd --insecure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the job signed the request, in Unix seconds: required for signed requests, which
    /// fleetd takes only within [`MAX_SIGNED_AGE_S`] of its clock (a recorded request cannot
    /// be replayed later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
    /// An artifact to register first, fetched by fleetd from a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<CiArtifact>,
    /// The deployment to create: the body of `POST /api/v1/deployments`.
    pub deployment: CreateDeployment,
}

/// An artifact fleetd fetches from `url` and stores before deploying (a build that CI has
/// already published somewhere fleetd can reach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiArtifact {
    /// Artifact name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Artifact type (default `binary`).
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Where fleetd downloads it (http or https).
    pub url: String,
    /// The expected sha256 (64 hex digits): the download must match it.
    pub sha256: String,
    /// Platforms it runs on, e.g. `["linux/arm64"]`.
    #[serde(default)]
    pub platforms: Vec<String>,
}

fn default_type() -> String {
    "binary".into()
}

/// What fleetd publishes under a request's reply topic, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CiReply {
    /// On `<reply>/accepted` (retained): the deployment was created (or already existed for
    /// this id).
    Accepted {
        /// The request id.
        id: String,
        /// The deployment's id.
        deployment: String,
        /// The devices it targets.
        devices: Vec<String>,
        /// The artifact registered first (`name@version`), if the request carried one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artifact: Option<String>,
    },
    /// On `<reply>/progress` (not retained): the deployment's state and counts changed.
    Progress {
        /// The request id.
        id: String,
        /// The deployment's id.
        deployment: String,
        /// The deployment's state, as in the API.
        state: crate::api::DeploymentState,
        /// Devices running the version healthily.
        succeeded: usize,
        /// Devices that failed.
        failed: usize,
        /// Devices still on their way.
        in_progress: usize,
        /// Devices in the deployment.
        total: usize,
    },
    /// On `<reply>/result` (retained): the verdict, sent once per request.
    Result {
        /// The request id (empty when the request had none that could be read).
        id: String,
        /// True only when the deployment succeeded.
        ok: bool,
        /// `succeeded`, `failed`, `rolled-back`, `aborted`, `superseded`, or `rejected` (the
        /// request was refused and changed nothing).
        outcome: String,
        /// The deployment, when one was created.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
        /// Why it was rejected or failed, naming the field or device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl CiReply {
    /// The reply topic's last level this answer goes to.
    pub fn part(&self) -> CiReplyPart {
        match self {
            CiReply::Accepted { .. } => CiReplyPart::Accepted,
            CiReply::Progress { .. } => CiReplyPart::Progress,
            CiReply::Result { .. } => CiReplyPart::Result,
        }
    }
}

/// Devices of a deployment per outcome: what progress reports show (fleetctl's `deploy --wait`
/// and fleetd's CI replies count the same way).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// Running the version healthily.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Pending, in progress or waiting for a later step.
    pub in_progress: usize,
    /// Replaced by a newer deployment, or rolled back.
    pub superseded: usize,
}

impl DeviceCounts {
    /// Counts the devices of `view`.
    pub fn of(view: &DeploymentView) -> Self {
        let mut t = Self::default();
        for p in view.devices.values() {
            match p {
                DeviceProgress::Succeeded => t.succeeded += 1,
                DeviceProgress::Failed { .. } => t.failed += 1,
                DeviceProgress::Superseded | DeviceProgress::RolledBack => t.superseded += 1,
                DeviceProgress::Pending
                | DeviceProgress::InProgress { .. }
                | DeviceProgress::Waiting => t.in_progress += 1,
            }
        }
        t
    }
}

/// Checks a request id; the error names the rule broken.
pub fn validate_request_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID {
        return Err(format!("id must be 1 to {MAX_REQUEST_ID} characters"));
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("id {id:?} must start with a letter or digit"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "id {id:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_topic_safe() {
        assert!(validate_request_id("web-2.0.0_build-17").is_ok());
        for bad in ["", "-x", "a/b", "a+b", "a#", "a b", &"x".repeat(129)] {
            assert!(validate_request_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<CiRequest>(
            r#"{"id":"a","deployment":{"application":"a","version":"1.0.0","target":{"devices":["d"]}},"extra":1}"#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("extra"), "{err}");
        let err = serde_json::from_str::<CiRequest>(r#"{"id":"a"}"#).expect_err("missing");
        assert!(err.to_string().contains("deployment"), "{err}");
    }

    #[test]
    fn replies_are_tagged_by_event() {
        let r = CiReply::Result {
            id: "a".into(),
            ok: true,
            outcome: "succeeded".into(),
            deployment: Some("d-1".into()),
            error: None,
        };
        let v = serde_json::to_value(&r).expect("encodes");
        assert_eq!(v["event"], "result");
        assert_eq!(r.part(), CiReplyPart::Result);
    }
}
