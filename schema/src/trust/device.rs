//! The device's end of the sealed protocol, as one value: its key, what enrollment gave it,
//! and its stamp sequence. The agent has its own persistent version (its signer and trust
//! state); this one serves simulated devices (`fleet-sim`) and tests, which must speak exactly
//! the agent's protocol to be let in.

use super::enroll::Enrolled;
use super::seal::{open, seal_report, OpenParams, Opened, SealError, Stamp};
use super::SigningKey;

/// A device that has enrolled.
#[derive(Debug)]
pub struct DeviceEnd {
    key: SigningKey,
    enrolled: Enrolled,
    stamp: Stamp,
}

impl DeviceEnd {
    /// A device with `key` and its enrollment, starting at connection `epoch`.
    pub fn new(key: SigningKey, enrolled: Enrolled, epoch: u64) -> DeviceEnd {
        DeviceEnd {
            key,
            enrolled,
            stamp: Stamp { epoch, seq: 0 },
        }
    }

    /// Its key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// What enrollment gave it (MQTT credentials among others).
    pub fn enrolled(&self) -> &Enrolled {
        &self.enrolled
    }

    /// Starts the epoch of a new connection (higher than the last); returns it.
    pub fn new_connection(&mut self, at_least: u64) -> u64 {
        self.stamp = Stamp {
            epoch: (self.stamp.epoch + 1).max(at_least),
            seq: 0,
        };
        self.stamp.epoch
    }

    /// Seals a report (status, metrics, logs) for `topic` with the next stamp.
    pub fn seal(&mut self, topic: &str, body: &[u8]) -> Result<Vec<u8>, SealError> {
        self.stamp.seq += 1;
        self.seal_with(topic, self.stamp, body)
    }

    /// Seals the last will of the current connection.
    pub fn seal_will(&self, topic: &str, body: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_with(topic, Stamp::will(self.stamp.epoch), body)
    }

    fn seal_with(&self, topic: &str, stamp: Stamp, body: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_report(&self.key, topic, stamp, body)
    }

    /// Opens a message from the controller on `topic`; `addressed` (desired states, requests)
    /// requires it to be addressed to this device's key.
    pub fn open(&self, topic: &str, bytes: &[u8], addressed: bool) -> Result<Opened, SealError> {
        open(
            OpenParams {
                topic,
                signer: &self.enrolled.controller_key,
                me: addressed.then_some(self.key.id()),
                decrypt: Some(&self.enrolled.bus_key),
            },
            bytes,
            crate::DEFAULT_MAX_PAYLOAD + 4096,
        )
    }
}
