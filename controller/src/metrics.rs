//! The controller's own counters, exported on `GET /metrics` with the fleet's telemetry
//! ([`crate::telemetry`]). Atomics bumped where things happen, plus one map for the labelled
//! rejection counter; `prometheus-client` encodes them at each scrape.

use crate::telemetry::expose::{counter, gauge, label, Labels};
use crate::telemetry::Telemetry;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters shared by the MQTT bridge and the HTTP API.
#[derive(Debug, Default)]
pub struct Metrics {
    rejected: Mutex<BTreeMap<(String, String), u64>>,
    /// Devices whose last status said online.
    pub devices_online: AtomicI64,
    /// Device status messages decoded and applied to the database.
    pub status_processed: AtomicU64,
    /// Desired states published on `fleet/<device>/cmd` (including republishes).
    pub desired_published: AtomicU64,
    /// Retained cmd messages replaced because they differed from the database copy.
    pub cmd_repaired: AtomicU64,
    /// Connections (ConnAck) to the broker since start.
    pub mqtt_connects: AtomicU64,
    /// Deployments created since start.
    pub deployments_created: AtomicU64,
    /// The fleet's telemetry (the metrics bridge).
    pub telemetry: Telemetry,
    /// Resource limits hit (connections, sizes, timeouts), by limit.
    pub limits: crate::limits::LimitHits,
}

impl Metrics {
    /// Counters at zero, with the bridge's settings.
    pub fn with_telemetry(telemetry: Telemetry) -> Self {
        Self {
            telemetry,
            ..Self::default()
        }
    }

    /// Counts one rejected payload. `topic` is the topic kind ("status", "cmd", "unknown"),
    /// `reason` a short machine-friendly reason ("empty", "truncated", ...).
    /// Returns how many of that kind were counted so far (for bounded logging).
    pub fn reject(&self, topic: &str, reason: &str) -> u64 {
        let mut map = self
            .rejected
            .lock()
            .expect("metrics lock is never poisoned");
        let n = map
            .entry((topic.to_string(), reason.to_string()))
            .or_insert(0);
        *n += 1;
        *n
    }

    /// The number of rejections counted for `topic` (all reasons); for tests and logs.
    pub fn rejected_for(&self, topic: &str) -> u64 {
        let map = self
            .rejected
            .lock()
            .expect("metrics lock is never poisoned");
        map.iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Writes fleetd's own counters (names kept from the hand-written exposition of earlier
    /// releases; the encoder adds `_total` to counters).
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>, mqtt_connected: bool) -> fmt::Result {
        {
            let map = self
                .rejected
                .lock()
                .expect("metrics lock is never poisoned");
            counter(
                enc,
                "fleetd_rejected_payloads",
                "MQTT payloads rejected (malformed, oversized, foreign or misaddressed).",
                map.iter().map(|((topic, reason), n)| {
                    (
                        vec![
                            label("topic", topic.as_str()),
                            label("reason", reason.as_str()),
                        ],
                        *n,
                    )
                }),
            )?;
        }
        counter(
            enc,
            "fleetd_limit_hits",
            "Times a resource limit was reached (connections, sizes, timeouts), by limit; see docs/limits.md.",
            self.limits
                .snapshot()
                .into_iter()
                .map(|(limit, n)| (vec![label("limit", limit)], n)),
        )?;
        let one = |v: u64| [(Labels::new(), v)];
        gauge(
            enc,
            "fleetd_devices_online",
            "Devices whose last status said online.",
            [(Labels::new(), self.devices_online.load(Ordering::Relaxed))],
        )?;
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "fleetd_status_messages_processed",
                "Device status messages applied to the database.",
                &self.status_processed,
            ),
            (
                "fleetd_desired_states_published",
                "Desired states published on fleet/<device>/cmd, republishes included.",
                &self.desired_published,
            ),
            (
                "fleetd_cmd_repairs",
                "Retained cmd messages replaced by the database copy.",
                &self.cmd_repaired,
            ),
            (
                "fleetd_mqtt_connects",
                "Connections to the MQTT broker since start.",
                &self.mqtt_connects,
            ),
            (
                "fleetd_deployments_created",
                "Deployments created since start.",
                &self.deployments_created,
            ),
        ];
        for (name, help, v) in counters {
            counter(enc, name, help, one(v.load(Ordering::Relaxed)))?;
        }
        gauge(
            enc,
            "fleetd_mqtt_connected",
            "1 while the controller is connected to the broker.",
            one(u64::from(mqtt_connected)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_rejections() {
        let m = Metrics::default();
        m.reject("status", "empty");
        m.reject("status", "empty");
        m.reject("cmd", "syntax");
        m.limits.hit("http_connections", || "test".into());
        assert_eq!(m.rejected_for("status"), 2);
        let text = crate::telemetry::render(
            std::sync::Arc::new(m),
            true,
            crate::telemetry::DbFacts::default(),
            0,
        )
        .expect("renders");
        assert!(
            text.contains("fleetd_rejected_payloads_total{topic=\"status\",reason=\"empty\"} 2")
        );
        assert!(text.contains("fleetd_rejected_payloads_total{topic=\"cmd\",reason=\"syntax\"} 1"));
        assert!(text.contains("fleetd_mqtt_connected 1"));
        assert!(
            text.contains("fleetd_limit_hits_total{limit=\"http_connections\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE fleetd_status_messages_processed counter"));
        assert!(
            text.contains("fleetd_status_messages_processed_total 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
