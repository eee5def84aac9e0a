//! Why simulated devices lost their connections: each error is reduced to a short kind and
//! counted, separately for errors before a device's first ConnAck (connecting) and after it
//! (a connected device dropped and reconnected with the same client id).

use rumqttc::{ConnectionError, StateError};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counts of connection errors by "phase: kind".
#[derive(Debug, Default)]
pub struct ErrorTally {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl ErrorTally {
    /// Counts one error; `connected` says whether the device had had a ConnAck before.
    pub fn record(&self, connected: bool, e: &ConnectionError) {
        let phase = if connected { "reconnect" } else { "connect" };
        let key = format!("{phase}: {}", kind(e));
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A short, stable name for an error (no addresses or packet ids, so equal causes add up).
pub fn kind(e: &ConnectionError) -> String {
    match e {
        ConnectionError::NetworkTimeout => "no ConnAck within the connection timeout".into(),
        ConnectionError::FlushTimeout => "write not flushed within the connection timeout".into(),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "keep-alive: previous PingReq not answered".into()
        }
        ConnectionError::MqttState(StateError::Io(io)) | ConnectionError::Io(io) => {
            format!("I/O: {:?}", io.kind())
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".into()
        }
        ConnectionError::MqttState(other) => format!("MQTT state: {other}"),
        ConnectionError::ConnectionRefused(code) => format!("refused: {code:?}"),
        other => {
            let text = other.to_string();
            text.split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_add_up_by_phase_and_kind() {
        let tally = ErrorTally::default();
        tally.record(false, &ConnectionError::NetworkTimeout);
        tally.record(false, &ConnectionError::NetworkTimeout);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        tally.record(true, &ConnectionError::Io(reset));
        tally.record(true, &StateError::AwaitPingResp.into());
        let counts = tally.snapshot();
        assert_eq!(
            counts.get("connect: no ConnAck within the connection timeout"),
            Some(&2)
        );
        assert_eq!(counts.get("reconnect: I/O: ConnectionReset"), Some(&1));
        assert_eq!(
            counts.get("reconnect: keep-alive: previous PingReq not answered"),
            Some(&1)
        );
    }
}
