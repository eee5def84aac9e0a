//! Classifies an incoming MQTT message (pure): a device status to store, a metrics batch for
//! the error-rate windows, a `cmd` message for the guard, or a rejection with a short reason for the metrics and a detail for the log.

use axum::body::Bytes;
use fleet_schema::{CodecError, DeviceId, DeviceStatus, MetricsBatch, Topic, DEFAULT_MAX_PAYLOAD};

/// What to do with one incoming message.
#[derive(Debug)]
pub enum Inbound {
    /// A valid status from the device named by the topic.
    Status(DeviceStatus),
    /// A metrics batch from the device named by the topic (error-rate windows).
    Metrics(MetricsBatch),
    /// A message on a device's `cmd` topic (the guard decides).
    Cmd {
        /// The device.
        device: DeviceId,
        /// The raw payload.
        payload: Bytes,
    },
    /// A topic the controller does not act on.
    Ignored,
    /// A malformed or misaddressed message.
    Rejected(Rejection),
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Topic kind label for the metrics ("status", "cmd", "unknown").
    pub topic: &'static str,
    /// Short reason label for the metrics.
    pub reason: &'static str,
    /// Human-readable detail for the log.
    pub detail: String,
}

/// The metrics label of a codec error.
pub fn codec_reason(e: &CodecError) -> &'static str {
    match e {
        CodecError::TooLarge { .. } => "too-large",
        CodecError::Empty => "empty",
        CodecError::Truncated => "truncated",
        CodecError::Syntax { .. } => "syntax",
        CodecError::Mistyped(_) => "mistyped",
        CodecError::Trailing(_) => "trailing",
        CodecError::TooDeep => "too-deep",
        CodecError::Encode(_) => "encode",
    }
}

/// The topic kind label of a topic string that may not parse.
fn topic_label(topic: &str) -> &'static str {
    match topic.rsplit('/').next() {
        Some("status") => "status",
        Some("cmd") => "cmd",
        Some("metrics") => "metrics",
        _ => "unknown",
    }
}

/// Decodes a device's message on its `label` topic and checks that the device it names (`id`)
/// is the one of the topic, so a device cannot speak for another.
fn decode_from<T: serde::de::DeserializeOwned>(
    device: &DeviceId,
    label: &'static str,
    payload: &[u8],
    id: impl Fn(&T) -> &str,
) -> Result<T, Rejection> {
    let msg = fleet_schema::decode::<T>(payload, DEFAULT_MAX_PAYLOAD).map_err(|e| Rejection {
        topic: label,
        reason: codec_reason(&e),
        detail: e.to_string(),
    })?;
    if id(&msg) != device.as_str() {
        return Err(Rejection {
            topic: label,
            reason: "device-mismatch",
            detail: format!(
                "{label} names device {:?} but came on the topic of {device}",
                id(&msg)
            ),
        });
    }
    Ok(msg)
}

/// Classifies one message.
pub fn classify(topic: &str, payload: Bytes) -> Inbound {
    let parsed = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            return Inbound::Rejected(Rejection {
                topic: topic_label(topic),
                reason: "bad-topic",
                detail: e.to_string(),
            })
        }
    };
    match parsed {
        Topic::Status(device) => {
            decode_from(&device, "status", &payload, |s: &DeviceStatus| &s.device_id)
                .map_or_else(Inbound::Rejected, Inbound::Status)
        }
        Topic::Cmd(device) => Inbound::Cmd { device, payload },
        Topic::Metrics(device) => decode_from(&device, "metrics", &payload, |m: &MetricsBatch| {
            &m.device_id
        })
        .map_or_else(Inbound::Rejected, Inbound::Metrics),
        Topic::Logs(_) | Topic::Req(_) | Topic::ControllerStatus => Inbound::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str) -> Bytes {
        Bytes::from(
            fleet_schema::encode(&DeviceStatus {
                device_id: id.into(),
                online: true,
                agent_version: String::new(),
                inventory: None,
                observed_generation: 0,
                apps: vec![],
                reported_at: 0,
            })
            .expect("encodes"),
        )
    }

    fn reason(i: Inbound) -> &'static str {
        match i {
            Inbound::Rejected(r) => r.reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn statuses_are_decoded_and_checked_against_the_topic() {
        assert!(matches!(
            classify("fleet/d1/status", status("d1")),
            Inbound::Status(_)
        ));
        assert_eq!(
            reason(classify("fleet/d1/status", status("d2"))),
            "device-mismatch"
        );
        assert_eq!(reason(classify("fleet/d1/status", Bytes::new())), "empty");
        let mut truncated = status("d1").to_vec();
        truncated.truncate(5);
        assert!(matches!(
            reason(classify("fleet/d1/status", Bytes::from(truncated))),
            "truncated" | "mistyped"
        ));
        let big = Bytes::from(vec![0u8; DEFAULT_MAX_PAYLOAD + 1]);
        assert_eq!(reason(classify("fleet/d1/status", big)), "too-large");
        assert_eq!(
            reason(classify("fleet/_x/status", status("d1"))),
            "bad-topic"
        );
    }

    #[test]
    fn metrics_are_decoded_and_checked_against_the_topic() {
        let batch = |id: &str| {
            Bytes::from(
                fleet_schema::encode(&MetricsBatch {
                    device_id: id.into(),
                    ..MetricsBatch::default()
                })
                .expect("encodes"),
            )
        };
        assert!(matches!(
            classify("fleet/d1/metrics", batch("d1")),
            Inbound::Metrics(b) if b.device_id == "d1"
        ));
        assert_eq!(
            reason(classify("fleet/d1/metrics", batch("d2"))),
            "device-mismatch"
        );
        assert!(matches!(
            classify("fleet/d1/metrics", Bytes::from_static(b"\xff")),
            Inbound::Rejected(Rejection {
                topic: "metrics",
                ..
            })
        ));
    }

    #[test]
    fn cmd_goes_to_the_guard_and_other_topics_are_ignored() {
        assert!(matches!(
            classify("fleet/d1/cmd", Bytes::from_static(b"x")),
            Inbound::Cmd { .. }
        ));
        assert!(matches!(
            classify("fleet/d1/logs", Bytes::new()),
            Inbound::Ignored
        ));
    }
}
