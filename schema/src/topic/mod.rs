//! The typed topic tree. Every MQTT topic FleetD uses is a [`Topic`] variant; `topics.md` at the
//! workspace root documents each one (a test keeps the two in step). Nothing else in FleetD
//! formats or parses topic strings by hand.

use crate::device_id::{DeviceId, DeviceIdError};
use std::fmt;

mod spec;

pub use spec::{Qos, Subscription, TopicSpec, MAX_PACKET_SIZE};

/// The root of every FleetD topic.
pub const ROOT: &str = "fleet";

/// The reserved second level for control-plane topics; device ids can never start with `_`.
pub const CONTROL_LEVEL: &str = "_controller";

/// The reserved second level of the topics CI jobs use to deploy by MQTT publish.
pub const CI_LEVEL: &str = "_ci";

/// Which answer to a CI request a reply topic carries (its last level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CiReplyPart {
    /// `accepted`: the deployment id (retained).
    Accepted,
    /// `progress`: state and counts on every change (not retained).
    Progress,
    /// `result`: the verdict (retained).
    Result,
}

impl CiReplyPart {
    /// Every part.
    pub const ALL: [CiReplyPart; 3] = [Self::Accepted, Self::Progress, Self::Result];

    /// The last topic level.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Progress => "progress",
            Self::Result => "result",
        }
    }
}

/// A FleetD topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `fleet/<device>/cmd`: the device's desired state, retained, QoS 1, controller to agent.
    Cmd(DeviceId),
    /// `fleet/<device>/status`: the device's reported state, retained, QoS 1, agent to all.
    Status(DeviceId),
    /// `fleet/<device>/metrics`: metric batches, QoS 0, agent to controller.
    Metrics(DeviceId),
    /// `fleet/<device>/logs`: log batches, QoS 0, agent to controller and CLI.
    Logs(DeviceId),
    /// `fleet/_controller/status`: the controller's presence, retained, QoS 1.
    ControllerStatus,
    /// `fleet/<device>/req`: one-off requests to the agent (e.g. log history), QoS 1, not
    /// retained, controller to agent (signed).
    Req(DeviceId),
    /// `fleet/_ci/requests`: deployment requests from CI jobs (JSON or CBOR), QoS 1, CI to
    /// controller.
    CiRequests,
    /// `fleet/_ci/requests/<token id>/<hmac>`: a CI request signed with its token instead of
    /// carrying it (HMAC-SHA256 of the payload, keyed with the sha256 hex of the token's
    /// secret), so a bus that lets other clients read requests learns no credential.
    CiSignedRequest {
        /// The token's public id (8 hex).
        token: String,
        /// The HMAC, 64 hex digits.
        mac: String,
    },
    /// `fleet/_ci/replies/<owner>/<request id>/<part>`: fleetd's answers to one CI request;
    /// `<owner>` is the MQTT user name of the request's token, so an ACL can give each CI
    /// credential its own replies.
    CiReply {
        /// `_token-<token id>` (or `_anonymous` against `fleetd --insecure`).
        owner: String,
        /// The request id.
        request: String,
        /// Which answer.
        part: CiReplyPart,
    },
}

/// The kind of a per-device topic, for building subscription filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceTopicKind {
    /// `cmd`
    Cmd,
    /// `status`
    Status,
    /// `metrics`
    Metrics,
    /// `logs`
    Logs,
    /// `req`
    Req,
}

impl DeviceTopicKind {
    /// Every per-device topic kind.
    pub const ALL: [DeviceTopicKind; 5] = [
        Self::Cmd,
        Self::Status,
        Self::Metrics,
        Self::Logs,
        Self::Req,
    ];

    /// The last topic level.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Cmd => "cmd",
            Self::Status => "status",
            Self::Metrics => "metrics",
            Self::Logs => "logs",
            Self::Req => "req",
        }
    }

    /// The wildcard filter matching this kind for every device, e.g. `fleet/+/status`.
    pub fn all_devices_filter(self) -> String {
        format!("{ROOT}/+/{}", self.suffix())
    }
}

/// Why a topic string is not a FleetD topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not under `fleet/` or not of a known shape.
    #[error("topic {0:?} is not a FleetD topic")]
    Unknown(String),
    /// Device level is not a valid device id.
    #[error("topic {topic:?} has an invalid device id: {source}")]
    BadDevice {
        /// The topic.
        topic: String,
        /// Why the device id is invalid.
        source: DeviceIdError,
    },
}

impl Topic {
    /// The device this topic belongs to, if it is a per-device topic.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Topic::Cmd(d)
            | Topic::Status(d)
            | Topic::Metrics(d)
            | Topic::Logs(d)
            | Topic::Req(d) => Some(d),
            Topic::ControllerStatus
            | Topic::CiRequests
            | Topic::CiSignedRequest { .. }
            | Topic::CiReply { .. } => None,
        }
    }

    /// The reply topic of CI request `request` by `owner`, for answer `part`.
    pub fn ci_reply(owner: &str, request: &str, part: CiReplyPart) -> Self {
        Topic::CiReply {
            owner: owner.to_string(),
            request: request.to_string(),
            part,
        }
    }

    /// Builds a per-device topic of the given kind.
    pub fn for_device(kind: DeviceTopicKind, device: DeviceId) -> Self {
        match kind {
            DeviceTopicKind::Cmd => Topic::Cmd(device),
            DeviceTopicKind::Status => Topic::Status(device),
            DeviceTopicKind::Metrics => Topic::Metrics(device),
            DeviceTopicKind::Logs => Topic::Logs(device),
            DeviceTopicKind::Req => Topic::Req(device),
        }
    }

    /// Parses a topic string.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let unknown = || TopicError::Unknown(s.to_string());
        let mut parts = s.split('/');
        if parts.next() != Some(ROOT) {
            return Err(unknown());
        }
        if s.starts_with(&format!("{ROOT}/{CI_LEVEL}/")) {
            return Self::parse_ci(s).ok_or_else(unknown);
        }
        let second = parts.next().ok_or_else(unknown)?;
        let third = parts.next().ok_or_else(unknown)?;
        if parts.next().is_some() {
            return Err(unknown());
        }
        if second == CONTROL_LEVEL {
            return match third {
                "status" => Ok(Topic::ControllerStatus),
                _ => Err(unknown()),
            };
        }
        let kind = DeviceTopicKind::ALL
            .into_iter()
            .find(|k| k.suffix() == third)
            .ok_or_else(unknown)?;
        let device = DeviceId::parse(second).map_err(|source| TopicError::BadDevice {
            topic: s.to_string(),
            source,
        })?;
        Ok(Self::for_device(kind, device))
    }
}

impl Topic {
    /// Parses a topic under `fleet/_ci/`.
    fn parse_ci(s: &str) -> Option<Self> {
        let levels: Vec<&str> = s.split('/').collect();
        match levels.as_slice() {
            [_, _, "requests"] => Some(Topic::CiRequests),
            [_, _, "requests", token, mac] => {
                let hex = |s: &str, n: usize| {
                    s.len() == n
                        && s.bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                };
                (hex(token, 8) && hex(mac, 64)).then(|| Topic::CiSignedRequest {
                    token: token.to_string(),
                    mac: mac.to_string(),
                })
            }
            [_, _, "replies", owner, request, part] => {
                let owner_ok = !owner.is_empty()
                    && owner.starts_with('_')
                    && owner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
                let id_ok = *request == crate::ci::INVALID_ID
                    || crate::ci::validate_request_id(request).is_ok();
                if !owner_ok || !id_ok {
                    return None;
                }
                let part = CiReplyPart::ALL.into_iter().find(|p| p.suffix() == *part)?;
                Some(Self::ci_reply(owner, request, part))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::ControllerStatus => write!(f, "{ROOT}/{CONTROL_LEVEL}/status"),
            Topic::Cmd(d) => write!(f, "{ROOT}/{d}/cmd"),
            Topic::Status(d) => write!(f, "{ROOT}/{d}/status"),
            Topic::Metrics(d) => write!(f, "{ROOT}/{d}/metrics"),
            Topic::Logs(d) => write!(f, "{ROOT}/{d}/logs"),
            Topic::Req(d) => write!(f, "{ROOT}/{d}/req"),
            Topic::CiRequests => write!(f, "{ROOT}/{CI_LEVEL}/requests"),
            Topic::CiSignedRequest { token, mac } => {
                write!(f, "{ROOT}/{CI_LEVEL}/requests/{token}/{mac}")
            }
            Topic::CiReply {
                owner,
                request,
                part,
            } => write!(
                f,
                "{ROOT}/{CI_LEVEL}/replies/{owner}/{request}/{}",
                part.suffix()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("valid id")
    }

    #[test]
    fn format_parse_round_trip() {
        let all = [
            Topic::Cmd(dev("a")),
            Topic::Status(dev("b-2")),
            Topic::Metrics(dev("c.3")),
            Topic::Logs(dev("d_4")),
            Topic::ControllerStatus,
            Topic::Req(dev("e5")),
        ];
        for t in all {
            let s = t.to_string();
            assert_eq!(Topic::parse(&s).expect("parses"), t, "{s}");
            let pattern = match t.device() {
                Some(d) => s.replacen(d.as_str(), "<device>", 1),
                None => s.clone(),
            };
            assert_eq!(t.spec().pattern(), pattern);
        }
    }

    #[test]
    fn ci_topics_round_trip() {
        let req = Topic::CiRequests;
        assert_eq!(req.to_string(), "fleet/_ci/requests");
        assert_eq!(Topic::parse("fleet/_ci/requests").expect("parses"), req);
        assert_eq!(req.spec().pattern(), "fleet/_ci/requests");
        let mac = "ab".repeat(32);
        let signed = format!("fleet/_ci/requests/0123abcd/{mac}");
        let t = Topic::parse(&signed).expect("a signed request topic");
        assert_eq!(t.to_string(), signed);
        assert_eq!(t.spec().pattern(), "fleet/_ci/requests/<token id>/<hmac>");
        for bad in [
            format!("fleet/_ci/requests/0123ABCD/{mac}"),
            format!("fleet/_ci/requests/0123abc/{mac}"),
            "fleet/_ci/requests/0123abcd/short".to_string(),
            format!("fleet/_ci/requests/0123abcd/{mac}/x"),
        ] {
            assert!(Topic::parse(&bad).is_err(), "{bad}");
        }
        for part in CiReplyPart::ALL {
            let t = Topic::ci_reply("_token-0123abcd", "build-17", part);
            let s = t.to_string();
            assert_eq!(Topic::parse(&s).expect("parses"), t, "{s}");
            let pattern = s
                .replacen("_token-0123abcd", "<owner>", 1)
                .replacen("build-17", "<id>", 1);
            assert_eq!(t.spec().pattern(), pattern);
        }
        for bad in [
            "fleet/_ci/replies/_token-x/build/other",
            "fleet/_ci/replies/_token-x/+/result",
            "fleet/_ci/replies/owner/build/result",
            "fleet/_ci/replies/_token-x/build",
            "fleet/_ci/other",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        for bad in [
            "fleet",
            "fleet/a",
            "fleet/a/cmd/extra",
            "other/a/cmd",
            "fleet/a/unknown",
            "fleet/_controller/cmd",
            "fleet/+/status",
            "fleet/$x/status",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controller_topics_cannot_be_device_topics() {
        assert!(DeviceId::parse(CONTROL_LEVEL).is_err());
    }
}
