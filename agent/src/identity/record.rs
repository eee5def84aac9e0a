//! The enrollment record (`<data>/enrollment.json`, 0600): the controller key this device
//! pinned, the bus key it shares with the controller, and its MQTT credentials. Written once
//! at enrollment (and again at a re-enrollment); without it the agent enrolls before it connects.

use super::files::{read_private, write_private};
use fleet_schema::signing::TrustedKey;
use fleet_schema::trust::enroll::Enrolled;
use fleet_schema::trust::BusKey;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What enrollment gave this device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    /// The pinned controller key, hex.
    pub controller_key: String,
    /// The shared bus key, hex.
    pub bus_key: String,
    /// MQTT user name.
    pub mqtt_username: String,
    /// MQTT password.
    pub mqtt_password: String,
    /// When it enrolled, ms.
    pub enrolled_at: u64,
    /// The `at` of the last enrollment request (a new one must be newer).
    pub last_request_at: u64,
}

impl std::fmt::Debug for EnrollmentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnrollmentRecord(user {}, controller key {})",
            self.mqtt_username, self.controller_key
        )
    }
}

impl EnrollmentRecord {
    /// The record of a completed enrollment.
    pub fn from_enrolled(e: &Enrolled, at: u64) -> EnrollmentRecord {
        EnrollmentRecord {
            controller_key: hex::encode(&e.controller_key.public),
            bus_key: e.bus_key.to_hex(),
            mqtt_username: e.mqtt_username.clone(),
            mqtt_password: e.mqtt_password.clone(),
            enrolled_at: at,
            last_request_at: at,
        }
    }

    /// The pinned controller key.
    pub fn controller(&self) -> Result<TrustedKey, String> {
        TrustedKey::from_hex(&self.controller_key).map_err(|e| format!("enrollment record: {e}"))
    }

    /// The bus key.
    pub fn bus(&self) -> Result<BusKey, String> {
        BusKey::from_hex(&self.bus_key)
            .ok_or_else(|| "enrollment record: bus_key is not 64 hex characters".into())
    }

    /// Loads the record (`Ok(None)` when the device has not enrolled).
    pub fn load(path: &Path) -> Result<Option<EnrollmentRecord>, String> {
        let Some(bytes) = read_private(path).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let rec: EnrollmentRecord =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        rec.controller()?;
        rec.bus()?;
        Ok(Some(rec))
    }

    /// Saves the record (0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_private(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_never_debug_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("enrollment.json");
        let ctl = fleet_schema::trust::SigningKey::generate()
            .expect("keygen")
            .0;
        let rec = EnrollmentRecord {
            controller_key: hex::encode(ctl.public()),
            bus_key: BusKey([5; 32]).to_hex(),
            mqtt_username: "d1".into(),
            mqtt_password: "p4ssw0rd".into(),
            enrolled_at: 1,
            last_request_at: 1,
        };
        rec.save(&path).expect("saves");
        assert_eq!(
            EnrollmentRecord::load(&path).expect("loads"),
            Some(rec.clone())
        );
        let shown = format!("{rec:?}");
        assert!(
            !shown.contains("p4ssw0rd") && !shown.contains(&rec.bus_key),
            "{shown}"
        );
        std::fs::write(&path, "{}").expect("write");
        assert!(EnrollmentRecord::load(&path).is_err());
    }
}
