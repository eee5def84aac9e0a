//! Seals everything the agent publishes with the device's key: statuses, metrics and log
//! batches, and the last will. Each broker connection gets a new epoch (persisted before the
//! connection is attempted, and never lower than the wall clock in milliseconds, so it grows
//! across restarts even if the file is lost), and each message a sequence number in it; fleetd
//! refuses a message whose stamp is not newer than the last one it accepted, so recorded
//! messages cannot be replayed. The last will is stamped as the final message of its epoch.

use fleet_schema::trust::{seal_report, SealError, SigningKey, Stamp};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The device's signer.
#[derive(Debug)]
pub struct Signer {
    key: Arc<SigningKey>,
    epoch_file: PathBuf,
    stamp: Mutex<Stamp>,
}

impl Signer {
    /// A signer whose epoch file is `epoch_file` (the first connection bumps it).
    pub fn new(key: Arc<SigningKey>, epoch_file: PathBuf) -> Signer {
        let stored = std::fs::read_to_string(&epoch_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Signer {
            key,
            epoch_file,
            stamp: Mutex::new(Stamp {
                epoch: stored,
                seq: 0,
            }),
        }
    }

    /// The device key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Starts the epoch of a new connection and persists it; returns it.
    pub fn new_connection(&self, now_ms: u64) -> u64 {
        let mut s = self.stamp.lock().expect("signer lock is never poisoned");
        s.epoch = (s.epoch + 1).max(now_ms);
        s.seq = 0;
        if let Err(e) =
            super::files::write_private(&self.epoch_file, s.epoch.to_string().as_bytes())
        {
            tracing::warn!(error = %e, file = %self.epoch_file.display(), "cannot persist the connection epoch");
        }
        s.epoch
    }

    /// Seals `body` for `topic` with the next stamp of the current epoch.
    pub fn seal(&self, topic: &str, body: &[u8]) -> Result<Vec<u8>, SealError> {
        let stamp = {
            let mut s = self.stamp.lock().expect("signer lock is never poisoned");
            s.seq += 1;
            *s
        };
        self.seal_with(topic, stamp, body)
    }

    /// Seals `body` as the last will of connection `epoch`.
    pub fn seal_will(&self, topic: &str, epoch: u64, body: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_with(topic, Stamp::will(epoch), body)
    }

    fn seal_with(&self, topic: &str, stamp: Stamp, body: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_report(&self.key, topic, stamp, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::trust::{open, OpenParams};

    #[test]
    fn epochs_grow_across_restarts_and_stamps_within_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bus-epoch");
        let key = SigningKey::generate().expect("keygen").0;
        let pkcs8_free = key.trusted();
        let s = Signer::new(Arc::new(key), file.clone());
        let e1 = s.new_connection(1000);
        assert_eq!(e1, 1000);
        let a = s.seal("fleet/d/status", b"a").expect("seals");
        let b = s.seal("fleet/d/status", b"b").expect("seals");
        let open_at = |bytes: &[u8]| {
            open(
                OpenParams {
                    topic: "fleet/d/status",
                    signer: &pkcs8_free,
                    me: None,
                    decrypt: None,
                },
                bytes,
                1 << 20,
            )
            .expect("opens")
            .stamp
        };
        assert!(open_at(&b) > open_at(&a));
        let will = s.seal_will("fleet/d/status", e1, b"bye").expect("seals");
        assert!(open_at(&will) > open_at(&b));
        // A restart with a clock that went back still moves on.
        let s2 = Signer::new(Arc::new(SigningKey::generate().expect("keygen").0), file);
        assert_eq!(s2.new_connection(5), 1001);
    }
}
