//! The controller's own metrics, rendered in the Prometheus text format on `GET /metrics`.
//! A handful of counters does not justify a metrics framework: atomics plus one map for the
//! labelled rejection counter.

use std::collections::BTreeMap;
use std::fmt::Write as _;
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
}

impl Metrics {
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

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, mqtt_connected: bool) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP fleetd_rejected_payloads_total MQTT payloads rejected (malformed, oversized, foreign or misaddressed).\n");
        out.push_str("# TYPE fleetd_rejected_payloads_total counter\n");
        {
            let map = self
                .rejected
                .lock()
                .expect("metrics lock is never poisoned");
            for ((topic, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "fleetd_rejected_payloads_total{{topic=\"{}\",reason=\"{}\"}} {n}",
                    escape(topic),
                    escape(reason)
                );
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: i128| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "fleetd_devices_online",
            "Devices whose last status said online.",
            "gauge",
            i128::from(self.devices_online.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_status_messages_processed_total",
            "Device status messages applied to the database.",
            "counter",
            i128::from(self.status_processed.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_desired_states_published_total",
            "Desired states published on fleet/<device>/cmd, republishes included.",
            "counter",
            i128::from(self.desired_published.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_cmd_repairs_total",
            "Retained cmd messages replaced by the database copy.",
            "counter",
            i128::from(self.cmd_repaired.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_mqtt_connects_total",
            "Connections to the MQTT broker since start.",
            "counter",
            i128::from(self.mqtt_connects.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_deployments_created_total",
            "Deployments created since start.",
            "counter",
            i128::from(self.deployments_created.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "fleetd_mqtt_connected",
            "1 while the controller is connected to the broker.",
            "gauge",
            i128::from(mqtt_connected),
        );
        out
    }
}

/// Escapes a label value (backslash, quote, newline) for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = m.render(true);
        assert!(
            text.contains("fleetd_rejected_payloads_total{topic=\"status\",reason=\"empty\"} 2")
        );
        assert!(text.contains("fleetd_rejected_payloads_total{topic=\"cmd\",reason=\"syntax\"} 1"));
        assert!(text.contains("fleetd_mqtt_connected 1"));
        assert_eq!(m.rejected_for("status"), 2);
    }
}
