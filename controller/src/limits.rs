//! fleetd's resource limits in one place: every bound on what callers, devices and the bus can
//! make fleetd hold (connections, timeouts, payload and upload sizes, ...) is a flag here with a
//! documented default (see docs/limits.md), and every time one is hit it is counted in
//! `fleetd_limit_hits_total{limit=...}` and logged at most once per interval, never per event
//! (a flood must not turn into a flood of log lines).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one limit may be logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The limits' flags (flattened into `fleetd serve`'s flags under the "Limits" heading).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Most MQTT client connections the embedded broker keeps open at once; one more is closed
    /// at once. Each costs up to three file descriptors: fleetd raises its open-file limit to
    /// fit, and admits fewer (with a warning) when the hard limit does not allow it.
    #[arg(long, env = "FLEETD_MAX_MQTT_CONNECTIONS", default_value_t = fleet_broker::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_mqtt_connections: usize,
    /// Seconds a client of the embedded broker has, from the TCP accept, to finish TLS and send
    /// its CONNECT; then it is closed.
    #[arg(long, env = "FLEETD_MQTT_CONNECT_TIMEOUT_SECS", default_value_t = fleet_broker::limits::DEFAULT_CONNECT_TIMEOUT.as_secs())]
    pub mqtt_connect_timeout_secs: u64,
    /// Largest MQTT packet, in bytes, a client may send to the embedded broker; a larger one
    /// closes its connection before the broker holds it.
    #[arg(long, env = "FLEETD_MQTT_MAX_PACKET_BYTES", default_value_t = fleet_broker::limits::DEFAULT_MAX_PACKET)]
    pub mqtt_max_packet_bytes: usize,
    /// Largest device status (and `cmd` message from a client), in bytes: the embedded broker
    /// closes a client that sends a larger one, and fleetd refuses a larger status from any
    /// broker before it is stored.
    #[arg(long, env = "FLEETD_MQTT_MAX_STATUS_BYTES", default_value_t = fleet_broker::limits::DEFAULT_MAX_STATUS)]
    pub mqtt_max_status_bytes: usize,
}

impl LimitArgs {
    /// The embedded broker front's limits (`fleetd` fits `max_mqtt_connections` to the
    /// open-file limit before serving).
    pub fn mqtt_front(&self) -> fleet_broker::FrontLimits {
        fleet_broker::FrontLimits {
            max_connections: self.max_mqtt_connections,
            connect_timeout: Duration::from_secs(self.mqtt_connect_timeout_secs),
            max_packet: self.mqtt_max_packet_bytes,
            max_status: self.mqtt_max_status_bytes,
        }
    }
}

/// Feeds the embedded broker's limit hits into `limits` (`fleetd_limit_hits_total`, bounded
/// log lines).
pub fn broker_hook(metrics: std::sync::Arc<crate::metrics::Metrics>) -> fleet_broker::LimitHook {
    std::sync::Arc::new(move |limit, what| metrics.limits.hit(limit, what))
}

/// Counts of limits hit, by limit name, with the time each was last logged.
#[derive(Debug, Default)]
pub struct LimitHits {
    hits: Mutex<BTreeMap<&'static str, Hit>>,
}

#[derive(Debug, Default)]
struct Hit {
    count: u64,
    logged_at: Option<Instant>,
    logged_count: u64,
}

impl LimitHits {
    /// Counts one hit of `limit` (a short snake_case name such as `http_connections`) and logs
    /// `what` as a warning unless this limit was already logged in the last [`LOG_INTERVAL`];
    /// the log line says how many hits happened since the previous one.
    pub fn hit(&self, limit: &'static str, what: impl FnOnce() -> String) {
        self.hit_at(limit, Instant::now(), what);
    }

    /// [`LimitHits::hit`] at a given instant (tests).
    pub fn hit_at(&self, limit: &'static str, now: Instant, what: impl FnOnce() -> String) -> bool {
        let mut map = self.hits.lock().expect("limit lock is never poisoned");
        let hit = map.entry(limit).or_default();
        hit.count += 1;
        let due = hit
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
        if due {
            let since = hit.count - hit.logged_count;
            hit.logged_at = Some(now);
            hit.logged_count = hit.count;
            tracing::warn!(
                limit,
                hits_since_last_log = since,
                total = hit.count,
                "limit reached: {}",
                what()
            );
        }
        due
    }

    /// How many times `limit` was hit since start.
    pub fn count(&self, limit: &str) -> u64 {
        let map = self.hits.lock().expect("limit lock is never poisoned");
        map.get(limit).map_or(0, |h| h.count)
    }

    /// Every limit hit so far with its count (for the metrics exposition).
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let map = self.hits.lock().expect("limit lock is never poisoned");
        map.iter().map(|(k, h)| (*k, h.count)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_hit_and_logs_once_per_interval() {
        let hits = LimitHits::default();
        let t0 = Instant::now();
        assert!(hits.hit_at("x", t0, || "first".into()));
        for i in 1..100 {
            assert!(!hits.hit_at("x", t0 + Duration::from_millis(i), || unreachable!()));
        }
        assert!(hits.hit_at("y", t0, || "other limit".into()));
        assert!(hits.hit_at("x", t0 + LOG_INTERVAL, || "again".into()));
        assert_eq!(hits.count("x"), 101);
        assert_eq!(hits.snapshot(), vec![("x", 101), ("y", 1)]);
    }
}
