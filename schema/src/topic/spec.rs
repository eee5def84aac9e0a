//! The delivery contract of every topic: its QoS, whether it is retained and the type of its
//! payload. `topics.md` documents this table (a test below keeps the two in step), and every
//! FleetD publisher and subscriber takes QoS and retain from here, never from the call site, so
//! the documented contract is the one on the wire.

use super::{CiReplyPart, DeviceTopicKind, Topic};

/// The largest MQTT packet a FleetD client (fleetd, the agent, fleet-sim) reads or writes, and
/// the embedded broker holds for fleetd's own connection: the payload cap
/// ([`crate::DEFAULT_MAX_PAYLOAD`], 1 MiB) with room to spare for the sealed envelope and the
/// MQTT headers. A larger packet from the broker means a poisoned session (see `topics.md`).
pub const MAX_PACKET_SIZE: usize = 2 * 1024 * 1024;

/// The MQTT quality of service levels FleetD uses (it never needs QoS 2: every receiver
/// discards duplicates by the stamp of the sealed envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0: fire and forget (telemetry, where the next batch supersedes a lost one).
    AtMostOnce,
    /// QoS 1: acknowledged, possibly duplicated (state, requests, answers).
    AtLeastOnce,
}

impl Qos {
    /// The level as MQTT numbers it (0 or 1).
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// The delivery properties of one topic pattern, as `topics.md` documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pattern: &'static str,
    qos: Qos,
    retain: bool,
    publisher: &'static str,
    payload: &'static str,
}

impl TopicSpec {
    /// The pattern, with `<device>` (and the CI topics' other placeholders) for variable levels.
    pub fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// The QoS every message on this topic is published at (and subscribed with).
    pub fn qos(&self) -> Qos {
        self.qos
    }

    /// Whether messages on this topic are published retained.
    pub fn retain(&self) -> bool {
        self.retain
    }

    /// Who publishes on this topic (documentation only).
    pub fn publisher(&self) -> &'static str {
        self.publisher
    }

    /// The name of the payload's type in `fleet_schema`.
    pub fn payload_type(&self) -> &'static str {
        self.payload
    }
}

/// One row of the contract table (keeps [`Topic::SPECS`] readable).
const fn spec(
    pattern: &'static str,
    qos: Qos,
    retain: bool,
    publisher: &'static str,
    payload: &'static str,
) -> TopicSpec {
    TopicSpec {
        pattern,
        qos,
        retain,
        publisher,
        payload,
    }
}

use Qos::{AtLeastOnce, AtMostOnce};

impl Topic {
    /// Every topic pattern and its delivery properties: the contract `topics.md` documents.
    pub const SPECS: [TopicSpec; 11] = [
        spec(
            "fleet/<device>/cmd",
            AtLeastOnce,
            true,
            "controller",
            "DesiredState",
        ),
        spec(
            "fleet/<device>/status",
            AtLeastOnce,
            true,
            "agent",
            "DeviceStatus",
        ),
        spec(
            "fleet/<device>/metrics",
            AtMostOnce,
            false,
            "agent",
            "MetricsBatch",
        ),
        spec(
            "fleet/<device>/logs",
            AtMostOnce,
            false,
            "agent",
            "LogBatch",
        ),
        spec(
            "fleet/_controller/status",
            AtLeastOnce,
            true,
            "controller",
            "ControllerStatus",
        ),
        spec(
            "fleet/<device>/req",
            AtLeastOnce,
            false,
            "controller",
            "AgentRequest",
        ),
        spec("fleet/_ci/requests", AtLeastOnce, false, "CI", "CiRequest"),
        spec(
            "fleet/_ci/requests/<token id>/<hmac>",
            AtLeastOnce,
            false,
            "CI",
            "CiRequest",
        ),
        spec(
            "fleet/_ci/replies/<owner>/<id>/accepted",
            AtLeastOnce,
            true,
            "controller",
            "CiReply",
        ),
        spec(
            "fleet/_ci/replies/<owner>/<id>/progress",
            AtLeastOnce,
            false,
            "controller",
            "CiReply",
        ),
        spec(
            "fleet/_ci/replies/<owner>/<id>/result",
            AtLeastOnce,
            true,
            "controller",
            "CiReply",
        ),
    ];

    /// The delivery properties of this topic.
    pub fn spec(&self) -> &'static TopicSpec {
        let i = match self {
            Topic::Cmd(_) => 0,
            Topic::Status(_) => 1,
            Topic::Metrics(_) => 2,
            Topic::Logs(_) => 3,
            Topic::ControllerStatus => 4,
            Topic::Req(_) => 5,
            Topic::CiRequests => 6,
            Topic::CiSignedRequest { .. } => 7,
            Topic::CiReply { part, .. } => match part {
                CiReplyPart::Accepted => 8,
                CiReplyPart::Progress => 9,
                CiReplyPart::Result => 10,
            },
        };
        &Self::SPECS[i]
    }
}

impl DeviceTopicKind {
    /// The delivery properties of this kind of per-device topic.
    pub fn spec(self) -> &'static TopicSpec {
        let i = match self {
            DeviceTopicKind::Cmd => 0,
            DeviceTopicKind::Status => 1,
            DeviceTopicKind::Metrics => 2,
            DeviceTopicKind::Logs => 3,
            DeviceTopicKind::Req => 5,
        };
        &Topic::SPECS[i]
    }
}

/// A subscription: a topic filter and the QoS of the topics it matches, so a subscriber cannot
/// ask for another QoS than the one the contract publishes at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    filter: String,
    qos: Qos,
}

impl Subscription {
    /// Exactly one topic.
    pub fn topic(topic: &Topic) -> Self {
        Self {
            filter: topic.to_string(),
            qos: topic.spec().qos(),
        }
    }

    /// One kind of per-device topic for every device, e.g. `fleet/+/status`.
    pub fn all_devices(kind: DeviceTopicKind) -> Self {
        Self {
            filter: kind.all_devices_filter(),
            qos: kind.spec().qos(),
        }
    }

    /// Every CI request signed with a token, `fleet/_ci/requests/+/+`.
    pub fn signed_ci_requests() -> Self {
        let sample = Topic::CiSignedRequest {
            token: String::new(),
            mac: String::new(),
        };
        Self {
            filter: format!("{}/+/+", Topic::CiRequests),
            qos: sample.spec().qos(),
        }
    }

    /// The MQTT topic filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The QoS to subscribe with.
    pub fn qos(&self) -> Qos {
        self.qos
    }
}
#[cfg(test)]
mod contract {
    use super::{DeviceTopicKind, Qos, Subscription, Topic};
    use crate::DeviceId;

    /// Parses the contract table in `topics.md` (the one headed `| topic | publisher | ...`)
    /// into (pattern, qos, retained, payload) rows.
    fn documented() -> Vec<(String, u8, bool, String)> {
        let doc = include_str!("../../../topics.md");
        doc.lines()
            .skip_while(|l| !l.starts_with("| topic | publisher |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 6, "topics.md row has 6 columns: {l}");
                let qos = cells[3].parse().expect("QoS column is a number");
                let retained = match cells[4] {
                    "yes" => true,
                    "no" => false,
                    other => panic!("retained column must be yes or no, got {other}"),
                };
                (
                    cells[0].trim_matches('`').to_string(),
                    qos,
                    retained,
                    cells[5].trim_matches('`').to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn topics_md_matches_the_topic_enum() {
        let doc = documented();
        let code: Vec<(String, u8, bool, String)> = Topic::SPECS
            .iter()
            .map(|s| {
                (
                    s.pattern().to_string(),
                    s.qos().level(),
                    s.retain(),
                    s.payload_type().to_string(),
                )
            })
            .collect();
        assert_eq!(doc, code, "topics.md table and Topic::SPECS disagree");
    }

    #[test]
    fn subscriptions_take_the_qos_of_their_topics() {
        let dev = DeviceId::parse("d1").expect("valid id");
        for kind in DeviceTopicKind::ALL {
            let one = Topic::for_device(kind, dev.clone());
            let all = Subscription::all_devices(kind);
            assert_eq!(all.qos(), one.spec().qos(), "{kind:?}");
            assert_eq!(all.filter(), format!("fleet/+/{}", kind.suffix()));
            assert_eq!(Subscription::topic(&one).qos(), one.spec().qos());
        }
        assert_eq!(
            Subscription::all_devices(DeviceTopicKind::Metrics).qos(),
            Qos::AtMostOnce
        );
        let signed = Subscription::signed_ci_requests();
        assert_eq!(signed.filter(), "fleet/_ci/requests/+/+");
        assert_eq!(signed.qos(), Qos::AtLeastOnce);
    }
}
