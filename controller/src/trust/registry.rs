//! The in-memory view of who may do what: the active device identities (key, bus key, password
//! hash, labels) and the API tokens, loaded from the database at start and updated after every
//! committed change. The broker's CONNECT check, the API's bearer check and the verification of
//! every incoming message read it without touching the database.

use super::records::{IdentityRecord, TokenRecord};
use fleet_schema::signing::TrustedKey;
use fleet_schema::trust::keys::{constant_time_eq, secret_hash};
use fleet_schema::trust::tokens::EnrollmentState;
use fleet_schema::trust::BusKey;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the controller needs of an enrolled device at message speed.
#[derive(Debug, Clone)]
pub struct ActiveDevice {
    /// Its public key (statuses, metrics and logs must verify against it).
    pub key: TrustedKey,
    /// The key its desired states are encrypted with.
    pub bus_key: BusKey,
    /// sha256 of its MQTT password, hex.
    pub password_hash: String,
    /// Labels from its enrollment token (they override what it reports).
    pub labels: BTreeMap<String, String>,
}

impl ActiveDevice {
    /// The active view of an identity record (`None` unless it is accepted and complete).
    pub fn from_record(rec: &IdentityRecord) -> Option<ActiveDevice> {
        if rec.state != EnrollmentState::Accepted {
            return None;
        }
        let public = hex::decode(&rec.public_key).ok()?;
        Some(ActiveDevice {
            key: TrustedKey {
                id: rec.key_id.clone(),
                public,
            },
            bus_key: BusKey::from_hex(rec.bus_key.as_deref()?)?,
            password_hash: rec.password_hash.clone()?,
            labels: rec.labels.clone(),
        })
    }

    /// Whether `password` is this device's MQTT password.
    pub fn password_matches(&self, password: &str) -> bool {
        constant_time_eq(
            secret_hash(password).as_bytes(),
            self.password_hash.as_bytes(),
        )
    }
}

/// Identities and tokens as of the last committed change.
#[derive(Debug, Default)]
pub struct Registry {
    /// Active devices by id.
    pub devices: HashMap<String, ActiveDevice>,
    /// Every API token by id (also revoked and expired ones: refused with a reason).
    pub tokens: HashMap<String, TokenRecord>,
    /// Devices waiting for an operator (bounded, so a flood of requests cannot grow it).
    pub pending: HashSet<String>,
}

impl Registry {
    /// Builds the registry from stored records.
    pub fn load(identities: &[IdentityRecord], tokens: Vec<TokenRecord>) -> Registry {
        let mut reg = Registry::default();
        for rec in identities {
            reg.set_identity(&rec.device_id, Some(rec));
        }
        reg.tokens = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
        reg
    }

    /// Replaces what is known of one device (`None`: forgotten).
    pub fn set_identity(&mut self, device: &str, rec: Option<&IdentityRecord>) {
        if rec.is_some_and(|r| r.state == EnrollmentState::Pending) {
            self.pending.insert(device.to_string());
        } else {
            self.pending.remove(device);
        }
        match rec.and_then(ActiveDevice::from_record) {
            Some(active) => {
                self.devices.insert(device.to_string(), active);
            }
            None => {
                self.devices.remove(device);
            }
        }
    }
}
