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
    /// Memory redb may use to cache database pages, MiB (redb's own default is 1 GiB).
    #[arg(long, env = "FLEETD_DB_CACHE_MIB", default_value_t = 64)]
    pub db_cache_mib: usize,
    /// Finished deployments kept (newest first; any a device's desired state still names is
    /// kept too). Older ones are removed once a minute: each holds per-device state.
    #[arg(long, env = "FLEETD_KEEP_FINISHED_DEPLOYMENTS", default_value_t = 1000)]
    pub keep_finished_deployments: usize,
    // --- HTTP server, uploads and request bodies (see docs/limits.md, "HTTP") ---
    /// Most HTTP(S) connections open at once; a connection beyond it is closed as soon as it is
    /// accepted, before it holds anything. Kept below half of fleetd's open-file limit (the
    /// embedded broker needs the rest).
    #[arg(long, env = "FLEETD_MAX_HTTP_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_connections: u32,
    /// Longest a client may take to send a complete request head, counted from its connection
    /// (or from the first byte of a later request on a kept-alive connection), seconds.
    #[arg(long, env = "FLEETD_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_secs: u64,
    /// Longest fleetd waits for the next piece of a request body, or for a client to take the
    /// next piece of a response, seconds: a timeout between reads (or writes), never on the
    /// whole transfer, so large uploads and downloads that progress are not cut.
    #[arg(long, env = "FLEETD_HTTP_BODY_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_secs: u64,
    /// Longest a kept-alive connection may wait idle for its next request, seconds.
    #[arg(long, env = "FLEETD_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_secs: u64,
    /// Longest a client may take to complete the TLS handshake (HTTPS), seconds.
    #[arg(long, env = "FLEETD_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_secs: u64,
    /// Largest body of an API request other than an upload (deployment requests, manifests,
    /// tokens, groups, ...), bytes.
    #[arg(long, env = "FLEETD_MAX_REQUEST_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Largest application manifest: its YAML with every alias expanded, and the total bytes
    /// of its arguments, environment and configuration files once validated.
    #[arg(long, env = "FLEETD_MAX_MANIFEST_BYTES", default_value_t = fleet_schema::manifest::DEFAULT_MAX_MANIFEST_BYTES)]
    pub max_manifest_bytes: usize,
    /// Largest accepted artifact upload, in bytes.
    #[arg(long, env = "FLEETD_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Largest file part staged before the upload's `metadata` part (clients that send `file`
    /// first, like the seed's curl call, cannot be checked until it arrives); metadata first is
    /// checked before any byte is staged and has only --max-upload-bytes.
    #[arg(long, env = "FLEETD_MAX_UPLOAD_BEFORE_METADATA_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_upload_before_metadata_bytes: u64,
    /// Most bytes being staged at once, over all uploads in flight (and CI fetches); an upload
    /// that would go beyond it is refused with 507.
    #[arg(long, env = "FLEETD_MAX_STAGING_BYTES", default_value_t = DEFAULT_MAX_STAGING_BYTES)]
    pub max_staging_bytes: u64,
    /// Most artifact uploads received at once; one more is answered 429.
    #[arg(long, env = "FLEETD_MAX_UPLOADS_IN_FLIGHT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads_in_flight: u32,
    // --- embedded MQTT broker and the bus ---
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
    /// Memory the embedded broker keeps for one wildcard subscription's recent messages (the
    /// burst fleetd may fall behind by on `fleet/+/status` and the like before it skips ahead),
    /// KiB.
    #[arg(long, env = "FLEETD_MQTT_WILDCARD_LOG_KIB", default_value_t = fleet_broker::limits::DEFAULT_WILDCARD_LOG_BYTES / 1024)]
    pub mqtt_wildcard_log_kib: usize,
    /// Memory the embedded broker keeps for one device subscription's recent messages
    /// (`fleet/<id>/cmd`; the newest is always kept), KiB.
    #[arg(long, env = "FLEETD_MQTT_DEVICE_LOG_KIB", default_value_t = fleet_broker::limits::DEFAULT_DEVICE_LOG_BYTES / 1024)]
    pub mqtt_device_log_kib: usize,
}

/// Default cap on one uploaded artifact: 8 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Default cap on the bytes staged at once over all uploads: 16 GiB.
pub const DEFAULT_MAX_STAGING_BYTES: u64 = 16 * 1024 * 1024 * 1024;

impl LimitArgs {
    /// The embedded broker front's limits (`fleetd` fits `max_mqtt_connections` to the
    /// open-file limit before serving).
    pub fn mqtt_front(&self) -> fleet_broker::FrontLimits {
        fleet_broker::FrontLimits {
            max_connections: self.max_mqtt_connections,
            connect_timeout: Duration::from_secs(self.mqtt_connect_timeout_secs),
            max_packet: self.mqtt_max_packet_bytes,
            max_status: self.mqtt_max_status_bytes,
            wildcard_log_bytes: self.mqtt_wildcard_log_kib.saturating_mul(1024),
            device_log_bytes: self.mqtt_device_log_kib.saturating_mul(1024),
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
