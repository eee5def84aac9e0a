//! Wall-clock time in the one representation FleetD uses on the wire and in its records.

use fleet_schema::UnixMillis;

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970, which only a broken
/// clock produces; timestamps are informational, never used for ordering decisions).
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
