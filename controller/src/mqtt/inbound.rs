//! Classifies an incoming MQTT message: a device status to store, a metrics batch for the
//! error-rate windows, a log batch for followers, a `cmd` message for the guard, or a rejection
//! with a short reason for the metrics and a detail for the log.
//!
//! Nothing a device reports counts unless it is sealed by that device's own enrolled key for
//! that very topic ([`fleet_schema::trust::seal`]): a message on `fleet/B/...` from anyone but B
//! (an unknown device, another device's key, an unsigned or replayed message) is rejected here,
//! before it reaches the database or the API.

use crate::trust::Trust;
use axum::body::Bytes;
use fleet_schema::trust::{open, OpenParams, SealError, Stamp};
use fleet_schema::{
    CodecError, DeviceId, DeviceStatus, LogBatch, MetricsBatch, Topic, DEFAULT_MAX_PAYLOAD,
};
use std::collections::HashMap;

/// The envelope may be a little larger than the message it carries.
const MAX_SEALED: usize = DEFAULT_MAX_PAYLOAD + 4096;

/// A verified status, with who signed it and when in its sequence.
#[derive(Debug)]
pub struct VerifiedStatus {
    /// The status (device id matches the topic; enrollment labels merged in).
    pub status: DeviceStatus,
    /// Id of the device key that signed it.
    pub key_id: String,
    /// Its stamp (the writer refuses one not newer than the last accepted).
    pub stamp: Stamp,
}

/// What to do with one incoming message.
#[derive(Debug)]
pub enum Inbound {
    /// A valid status from the device named by the topic.
    Status(Box<VerifiedStatus>),
    /// A metrics batch from the device named by the topic (error-rate windows).
    Metrics(MetricsBatch),
    /// A log batch from the device named by the topic (live followers).
    Logs(LogBatch),
    /// A message on a device's `cmd` topic (the guard decides).
    Cmd {
        /// The device.
        device: DeviceId,
        /// The raw payload.
        payload: Bytes,
    },
    /// A topic the controller does not act on.
    Ignored,
    /// A malformed, forged, replayed or misaddressed message.
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
    /// The limit this rejection hits (`fleetd_limit_hits_total`), if it is one.
    pub limit: Option<&'static str>,
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

/// The metrics label of a seal error.
pub fn seal_reason(e: &SealError) -> &'static str {
    match e {
        SealError::NotSealed(_) => "unsigned",
        SealError::Version(_) => "envelope-version",
        SealError::WrongSigner { .. } => "wrong-signer",
        SealError::BadSignature(_) => "bad-signature",
        SealError::NotForUs { .. } => "misaddressed",
        SealError::Undecryptable => "undecryptable",
        SealError::BadNonce(_) => "bad-nonce",
        SealError::Seal(_) => "seal",
    }
}

/// The topic kind label of a topic string that may not parse.
fn topic_label(topic: &str) -> &'static str {
    match topic.rsplit('/').next() {
        Some("status") => "status",
        Some("cmd") => "cmd",
        Some("metrics") => "metrics",
        Some("logs") => "logs",
        _ => "unknown",
    }
}

/// The newest stamps accepted per device and key for the topics whose messages are not stored
/// (metrics, logs), so a replayed batch cannot count twice. In memory: bounded by the fleet.
#[derive(Debug, Default)]
pub struct SeenStamps {
    metrics: HashMap<String, (String, Stamp)>,
    logs: HashMap<String, (String, Stamp)>,
}

impl SeenStamps {
    /// Accepts `stamp` for `device` and `key_id` on `kind` if newer than the last one.
    fn admit(&mut self, kind: &str, device: &str, key_id: &str, stamp: Stamp) -> bool {
        let map = if kind == "metrics" {
            &mut self.metrics
        } else {
            &mut self.logs
        };
        match map.get(device) {
            Some((k, last)) if k == key_id && stamp <= *last => false,
            _ => {
                map.insert(device.to_string(), (key_id.to_string(), stamp));
                true
            }
        }
    }
}

fn reject(topic: &'static str, reason: &'static str, detail: String) -> Rejection {
    Rejection {
        topic,
        reason,
        detail,
        limit: None,
    }
}

/// Opens a device's sealed message on its `label` topic, decodes it and checks that the
/// device it names (`id`) is the one of the topic.
fn open_from<T: serde::de::DeserializeOwned>(
    trust: &Trust,
    topic: &str,
    device: &DeviceId,
    label: &'static str,
    payload: &[u8],
    id: impl Fn(&T) -> &str,
) -> Result<(T, String, Stamp), Rejection> {
    if payload.is_empty() {
        return Err(reject(label, "empty", "payload is empty".into()));
    }
    if payload.len() > MAX_SEALED {
        return Err(reject(
            label,
            "too-large",
            format!("payload of {} bytes exceeds {MAX_SEALED}", payload.len()),
        ));
    }
    let Some(dev) = trust.device(device.as_str()) else {
        return Err(reject(
            label,
            "unknown-device",
            format!("{device} is not an enrolled device (or was revoked)"),
        ));
    };
    let opened = open(
        OpenParams {
            topic,
            signer: &dev.key,
            me: None,
            decrypt: None,
        },
        payload,
        MAX_SEALED,
    )
    .map_err(|e| reject(label, seal_reason(&e), e.to_string()))?;
    let msg = fleet_schema::decode::<T>(&opened.body, DEFAULT_MAX_PAYLOAD)
        .map_err(|e| reject(label, codec_reason(&e), e.to_string()))?;
    if id(&msg) != device.as_str() {
        return Err(reject(
            label,
            "device-mismatch",
            format!(
                "{label} names device {:?} but came on the topic of {device}",
                id(&msg)
            ),
        ));
    }
    Ok((msg, dev.key.id, opened.stamp))
}

/// Classifies one message; a status above `max_status` bytes is refused before it is opened.
pub fn classify(
    trust: &Trust,
    seen: &mut SeenStamps,
    topic: &str,
    payload: Bytes,
    max_status: usize,
) -> Inbound {
    let parsed = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            return Inbound::Rejected(reject(topic_label(topic), "bad-topic", e.to_string()));
        }
    };
    match parsed {
        Topic::Status(device) if payload.len() > max_status => Inbound::Rejected(Rejection {
            limit: Some("mqtt_status_bytes"),
            ..reject(
                "status",
                "too-large",
                format!(
                    "status of {device} is {} bytes, above the limit of {max_status} (--mqtt-max-status-bytes)",
                    payload.len()
                ),
            )
        }),
        Topic::Status(device) => {
            match open_from(
                trust,
                topic,
                &device,
                "status",
                &payload,
                |s: &DeviceStatus| &s.device_id,
            ) {
                Ok((mut status, key_id, stamp)) => {
                    if let (Some(dev), Some(inv)) =
                        (trust.device(device.as_str()), status.inventory.as_mut())
                    {
                        inv.labels.extend(dev.labels);
                    }
                    Inbound::Status(Box::new(VerifiedStatus {
                        status,
                        key_id,
                        stamp,
                    }))
                }
                Err(r) => Inbound::Rejected(r),
            }
        }
        Topic::Cmd(device) => Inbound::Cmd { device, payload },
        Topic::Metrics(device) => {
            match open_from(
                trust,
                topic,
                &device,
                "metrics",
                &payload,
                |m: &MetricsBatch| &m.device_id,
            ) {
                Ok((batch, key_id, stamp))
                    if seen.admit("metrics", device.as_str(), &key_id, stamp) =>
                {
                    Inbound::Metrics(batch)
                }
                Ok(_) => Inbound::Rejected(reject(
                    "metrics",
                    "replayed",
                    format!("metrics batch of {device} is not newer than the last one"),
                )),
                Err(r) => Inbound::Rejected(r),
            }
        }
        Topic::Logs(device) => {
            match open_from(trust, topic, &device, "logs", &payload, |l: &LogBatch| {
                &l.device_id
            }) {
                Ok((batch, key_id, stamp))
                    if seen.admit("logs", device.as_str(), &key_id, stamp) =>
                {
                    Inbound::Logs(batch)
                }
                Ok(_) => Inbound::Rejected(reject(
                    "logs",
                    "replayed",
                    format!("log batch of {device} is not newer than the last one"),
                )),
                Err(r) => Inbound::Rejected(r),
            }
        }
        Topic::Req(_)
        | Topic::ControllerStatus
        | Topic::CiRequests
        | Topic::CiSignedRequest { .. }
        | Topic::CiReply { .. } => Inbound::Ignored,
    }
}
