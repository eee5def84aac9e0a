//! What the controller stores about identities: each device's enrolled key and credentials,
//! API tokens and enrollment tokens. Secrets are never stored, only their sha256 (and, for the
//! MQTT password of devices and tokens, Mosquitto's salted PBKDF2 form, so a Mosquitto password
//! file can be written without ever keeping the password).

use fleet_schema::trust::tokens::{
    token_username, EnrollTokenView, EnrollmentState, EnrollmentView, Scope, TokenView,
};
use fleet_schema::{Inventory, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One device's identity: the key it enrolled with and what was issued to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Device id.
    pub device_id: String,
    /// Where its current key stands.
    pub state: EnrollmentState,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Id of that key.
    pub key_id: String,
    /// When it asked (pending) or was last enrolled, ms.
    pub at: UnixMillis,
    /// The `at` of the last request seen from this key: a re-enrollment must be newer, so a
    /// replayed request cannot rotate the device's credentials.
    pub last_request_at: UnixMillis,
    /// The shared bus key, hex (accepted devices that completed enrollment).
    #[serde(default)]
    pub bus_key: Option<String>,
    /// sha256 of the MQTT password, hex.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The MQTT password in Mosquitto's PBKDF2-SHA512 form (`$7$...`).
    #[serde(default)]
    pub mosquitto_hash: Option<String>,
    /// The enrollment token used, if any.
    #[serde(default)]
    pub token_id: Option<String>,
    /// Labels given by that token (they override the labels the device reports).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Agent version at enrollment.
    #[serde(default)]
    pub agent_version: String,
    /// Inventory at enrollment (for the operator deciding on a pending request).
    #[serde(default)]
    pub inventory: Inventory,
    /// Ids of keys of this device that were revoked or rejected: never accepted again.
    #[serde(default)]
    pub refused_keys: Vec<String>,
}

impl IdentityRecord {
    /// True when the device may connect and its reports count.
    pub fn is_active(&self) -> bool {
        self.state == EnrollmentState::Accepted && self.password_hash.is_some()
    }

    /// The API's view.
    pub fn view(&self) -> EnrollmentView {
        EnrollmentView {
            device_id: self.device_id.clone(),
            state: self.state,
            key_id: self.key_id.clone(),
            at: self.at,
            token_id: self.token_id.clone(),
            agent_version: self.agent_version.clone(),
            inventory: self.inventory.clone(),
        }
    }
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (8 hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Application limit (empty: all).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Created, ms.
    pub created_at: UnixMillis,
    /// Expiry, ms.
    #[serde(default)]
    pub expires_at: Option<UnixMillis>,
    /// Revoked.
    #[serde(default)]
    pub revoked: bool,
    /// sha256 of the secret, hex.
    pub hash: String,
    /// The whole token in Mosquitto's PBKDF2 form, so tools can use it as an MQTT password.
    #[serde(default)]
    pub mosquitto_hash: Option<String>,
}

impl TokenRecord {
    /// The strongest scope it holds.
    pub fn top_scope(&self) -> Option<Scope> {
        self.scopes.iter().copied().max()
    }

    /// Usable at `now`.
    pub fn is_valid(&self, now: UnixMillis) -> bool {
        !self.revoked && self.expires_at.is_none_or(|t| now < t)
    }

    /// The API's view.
    pub fn view(&self) -> TokenView {
        TokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            apps: self.apps.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
            mqtt_username: token_username(&self.id),
        }
    }
}

/// An enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollTokenRecord {
    /// Public id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Labels given to the devices enrolled with it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Created, ms.
    pub created_at: UnixMillis,
    /// Expiry, ms.
    #[serde(default)]
    pub expires_at: Option<UnixMillis>,
    /// Uses left (unlimited when absent).
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// Devices enrolled with it.
    #[serde(default)]
    pub used: u32,
    /// Revoked.
    #[serde(default)]
    pub revoked: bool,
    /// sha256 of the secret, hex.
    pub hash: String,
}

impl EnrollTokenRecord {
    /// Why it cannot enroll a new device at `now`, if it cannot.
    pub fn unusable(&self, now: UnixMillis) -> Option<&'static str> {
        if self.revoked {
            Some("the enrollment token was revoked")
        } else if self.expires_at.is_some_and(|t| now >= t) {
            Some("the enrollment token has expired")
        } else if self.uses_left == Some(0) {
            Some("the enrollment token has no uses left")
        } else {
            None
        }
    }

    /// The API's view.
    pub fn view(&self) -> EnrollTokenView {
        EnrollTokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            uses_left: self.uses_left,
            used: self.used,
            revoked: self.revoked,
        }
    }
}
