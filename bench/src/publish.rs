//! A simulated device's status publishing: each publish is numbered in the order it enters the
//! client's queue, so the device can recognise the broker's acknowledgement of the one status
//! the benchmark measures.

use fleet_schema::trust::device::DeviceEnd;
use fleet_schema::{encode, Topic};
use rumqttc::AsyncClient;

/// Publishes a device's status, sealed with the device's key as agents do, and numbers each
/// publish in the order it enters the client's queue (the order rumqttc sends them), so the
/// benchmark can find the broker's acknowledgement of one particular status. The lock makes
/// "seal + enqueue + number" atomic for spawned publishers (stamps must go out in order).
pub struct StatusPublisher {
    client: AsyncClient,
    topic: Topic,
    state: std::sync::Mutex<(u64, DeviceEnd)>,
}

impl StatusPublisher {
    /// A publisher of statuses on `topic` through `client`, signing as `end`.
    pub fn new(client: AsyncClient, topic: Topic, end: DeviceEnd) -> Self {
        Self {
            client,
            topic,
            state: std::sync::Mutex::new((0, end)),
        }
    }

    /// Runs `f` on the device's end of the protocol (a new connection, opening messages).
    pub fn with_end<R>(&self, f: impl FnOnce(&mut DeviceEnd) -> R) -> R {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state.1)
    }

    /// Queues `status` as the status topic's contract says (retained, QoS 1); returns its sequence number, or `None` on failure.
    pub fn publish(&self, status: &fleet_schema::DeviceStatus) -> Option<u64> {
        let bytes = match encode(status) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{}: cannot encode status: {e}", self.topic);
                return None;
            }
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sealed = match state.1.seal(&self.topic.to_string(), &bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{}: cannot seal status: {e}", self.topic);
                return None;
            }
        };
        match crate::wire::try_publish(&self.client, &self.topic, sealed) {
            Ok(()) => {
                state.0 += 1;
                Some(state.0)
            }
            Err(e) => {
                tracing::warn!("{}: publish refused by the client: {e}", self.topic);
                None
            }
        }
    }
}

/// Where the acknowledgement of the measured status publish stands.
#[derive(Debug, Default)]
pub struct AckWatch {
    /// Publishes the client has sent (Outgoing events), counted over the device's life.
    sent: u64,
    /// Sequence number of the measured publish, until it is acknowledged.
    target: Option<u64>,
    /// Its packet id, once sent.
    pkid: Option<u16>,
    /// The connection dropped before the ack: count the first ack after reconnecting.
    rearmed: bool,
}

impl AckWatch {
    /// Watch for the acknowledgement of publish number `seq` (from [`StatusPublisher`]).
    pub fn measure(&mut self, seq: u64) {
        self.target = Some(seq);
        self.pkid = None;
    }

    /// The client sent a publish with packet id `pkid`.
    pub fn on_sent(&mut self, pkid: u16) {
        self.sent += 1;
        if self.target == Some(self.sent) {
            self.pkid = Some(pkid);
        }
    }

    /// The broker acknowledged packet `pkid`; true when that is the measured publish (or,
    /// after a reconnect, the first acknowledgement, which covers a status at least as new).
    pub fn on_ack(&mut self, pkid: u16) -> bool {
        let hit = self.rearmed || (self.target.is_some() && self.pkid == Some(pkid));
        if hit {
            *self = Self {
                sent: self.sent,
                ..Self::default()
            };
        }
        hit
    }

    /// The connection dropped. rumqttc re-sends unacknowledged publishes on reconnect, which
    /// breaks the count; the full status published on every ConnAck carries the new version, so
    /// the first acknowledgement after reconnecting stands for the measured one.
    pub fn on_disconnect(&mut self) {
        if self.target.is_some() {
            self.target = None;
            self.rearmed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_publish_is_recognised_by_its_packet_id() {
        let mut w = AckWatch::default();
        w.on_sent(1);
        w.measure(2);
        assert!(!w.on_ack(1), "an earlier publish is not the measured one");
        w.on_sent(7);
        assert!(w.on_ack(7));
        assert!(!w.on_ack(7), "counted once");
    }

    #[test]
    fn after_a_reconnect_the_first_ack_counts() {
        let mut w = AckWatch::default();
        w.measure(1);
        w.on_disconnect();
        w.on_sent(3);
        assert!(w.on_ack(3));
        let mut idle = AckWatch::default();
        idle.on_disconnect();
        assert!(!idle.on_ack(1), "nothing measured, nothing to count");
    }
}
