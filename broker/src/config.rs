//! The rumqttd configuration fleetd needs: one MQTT 3.1.1 listener sized for thousands of
//! devices connecting at once and for desired states up to the codec cap, with every CONNECT
//! checked by fleetd (its credentials and client id) unless the bus runs open (`--insecure`).

use rumqttd::{AuthHandler, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest MQTT packet rumqttd accepts: FleetD's client packet limit, so rumqttd never holds a
/// packet fleetd's own connection could not read. Clients reach rumqttd through the front,
/// which refuses packets above its own, smaller limit first.
pub const MAX_PAYLOAD: usize = fleet_schema::MAX_PACKET_SIZE;

/// Connections rumqttd admits beyond the front's: fleetd's own client and the readiness probe.
const OWN_CONNECTIONS: usize = 16;

/// Builds the rumqttd configuration for one v4 listener on `listen` admitting the front's
/// `max_connections` (plus fleetd's own); `auth` decides every CONNECT (none: anyone may
/// connect).
pub fn broker_config(
    listen: SocketAddr,
    auth: Option<AuthHandler>,
    limits: &crate::FrontLimits,
) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: 1000,
        auth: None,
        external_auth: auth,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "fleet-v4".into(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accepted connection; 0 lets 5,000 devices in fast.
        next_connection_delay_ms: 0,
        connections,
    };
    let router = RouterConfig {
        max_connections: limits.max_connections + OWN_CONNECTIONS,
        max_outgoing_packet_count: 500,
        // rumqttd keeps an in-memory log per subscription filter. fleetd's wildcard filters
        // (`fleet/+/status`, ...) must absorb a fleet-wide burst while fleetd reads them; each
        // device's own filters (`fleet/<id>/cmd`) see a few messages per deployment and keep
        // only the newest (the patched `exact_filter_segment`, vendor/rumqttd).
        max_segment_size: (limits.wildcard_log_bytes / 4).max(1024),
        max_segment_count: 4,
        exact_filter_segment: Some(rumqttd::SegmentConfig {
            max_segment_size: (limits.device_log_bytes / 2).max(1024),
            max_segment_count: 2,
        }),
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}
