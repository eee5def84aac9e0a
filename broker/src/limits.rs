//! What the broker's front admits, and how it reports a refusal: the broker is a library
//! without fleetd's metrics, so every limit hit goes to a hook the embedder supplies (fleetd
//! counts it in `fleetd_limit_hits_total` and logs it at a bounded rate).

use std::sync::Arc;
use std::time::Duration;

/// Largest MQTT packet a client may send through the front by default: FleetD's payload cap
/// (1 MiB) plus room for the sealed envelope and the MQTT headers.
pub const DEFAULT_MAX_PACKET: usize = 1024 * 1024 + 8 * 1024;

/// Largest packet on a device's `status` or `cmd` topic by default: a status of hundreds of
/// apps fits many times over, and `cmd` is written by fleetd over the loopback listener only.
pub const DEFAULT_MAX_STATUS: usize = 256 * 1024;

/// Most connections open at once by default (a 10,000-device fleet plus tools, with headroom).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// How long a client has by default, from the TCP accept, to complete TLS and send CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest CONNECT packet (client id, credentials and a last will, which is a small status).
pub const MAX_CONNECT: usize = 64 * 1024;

/// Topics under which a client may leave a retained message.
pub const RETAINED_PREFIX: &str = "fleet/";

/// The bounds the front enforces on every client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontLimits {
    /// Most connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Time from accept to a complete CONNECT (TLS handshake included).
    pub connect_timeout: Duration,
    /// Largest packet (fixed header excluded) a client may send.
    pub max_packet: usize,
    /// Largest packet on `fleet/<device>/status` and `fleet/<device>/cmd`.
    pub max_status: usize,
    /// Bytes of recent messages rumqttd keeps in memory for one wildcard subscription
    /// (fleetd's `fleet/+/status` and the like): the largest burst fleetd may fall behind by
    /// before it skips ahead (statuses are retained and agents re-announce).
    pub wildcard_log_bytes: usize,
    /// Bytes of recent messages kept for one exact subscription (a device's own
    /// `fleet/<id>/cmd`); the newest message is always kept.
    pub device_log_bytes: usize,
}

/// Default of [`FrontLimits::wildcard_log_bytes`]: 8 MiB.
pub const DEFAULT_WILDCARD_LOG_BYTES: usize = 8 << 20;
/// Default of [`FrontLimits::device_log_bytes`]: 32 KiB.
pub const DEFAULT_DEVICE_LOG_BYTES: usize = 32 << 10;

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_packet: DEFAULT_MAX_PACKET,
            max_status: DEFAULT_MAX_STATUS,
            wildcard_log_bytes: DEFAULT_WILDCARD_LOG_BYTES,
            device_log_bytes: DEFAULT_DEVICE_LOG_BYTES,
        }
    }
}

/// The limits the front counts, as `fleetd_limit_hits_total{limit=...}` labels.
pub mod names {
    /// A connection beyond `max_connections`, closed at once.
    pub const CONNECTIONS: &str = "mqtt_connections";
    /// A client that did not complete TLS and CONNECT in time.
    pub const CONNECT_TIMEOUT: &str = "mqtt_connect_timeout";
    /// `accept` failed (out of file descriptors and the like); the front pauses briefly.
    pub const ACCEPT_ERRORS: &str = "mqtt_accept_errors";
    /// A packet above `max_packet` (or a CONNECT above [`super::MAX_CONNECT`]).
    pub const PACKET_BYTES: &str = "mqtt_packet_bytes";
    /// A packet on a status or cmd topic above `max_status`.
    pub const STATUS_BYTES: &str = "mqtt_status_bytes";
    /// A retained PUBLISH (or retained will) outside `fleet/`.
    pub const RETAINED_TOPIC: &str = "mqtt_retained_topic";
    /// Bytes that are not MQTT (bad length, first packet not CONNECT, malformed fields).
    pub const MALFORMED: &str = "mqtt_malformed";
}

/// Receives every limit hit: the limit's name (see [`names`]) and a function producing a line
/// that says what happened (called only when the embedder logs it, never per event).
pub type LimitHook = Arc<dyn Fn(&'static str, &dyn Fn() -> String) + Send + Sync>;

/// A hook that only logs, at most once per limit per minute (for embedders without counters).
pub fn log_only() -> LimitHook {
    let last = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        &'static str,
        std::time::Instant,
    >::new()));
    Arc::new(move |limit, what| {
        let now = std::time::Instant::now();
        let mut last = last.lock().expect("log-rate lock is never poisoned");
        let due = last
            .get(limit)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            last.insert(limit, now);
            tracing::warn!(limit, "MQTT limit reached: {}", what());
        }
    })
}
