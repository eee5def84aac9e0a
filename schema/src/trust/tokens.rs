//! Credentials as they appear on the wire: API tokens (`fleet_<id>_<secret>`), enrollment
//! tokens (`enroll_<id>_<secret>`) and device credentials (`device:<id>:<secret>`), their
//! scopes, the MQTT user names each identity connects with, and the JSON of the endpoints that
//! manage them. Only hashes of secrets are ever stored; the token string is shown once.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// MQTT user name of the controller's own connection. Device ids cannot start with `_`, so no
/// device can hold this name.
pub const CONTROLLER_USERNAME: &str = "_fleetd";

/// MQTT user name prefix of API tokens (`_token-<id>`); `_token` alone is accepted by the
/// embedded broker too, the id then being read from the password.
pub const TOKEN_USERNAME: &str = "_token";

/// The client id an agent connects with: the embedded broker only lets device `<id>` use it.
pub fn agent_client_id(device: &str) -> String {
    format!("fleet-agent-{device}")
}

/// The client id of the controller's connection.
pub const CONTROLLER_CLIENT_ID: &str = "fleetd-controller";

/// The MQTT user name of an API token.
pub fn token_username(id: &str) -> String {
    format!("{TOKEN_USERNAME}-{id}")
}

/// What an API token may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Read artifacts, applications, deployments, devices, metrics.
    Read,
    /// Push artifacts, register applications, create and control deployments.
    Deploy,
    /// Tokens, enrollment, devices (accept, reject, revoke, reset), broker configuration.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Deploy, Scope::Admin];

    /// The name used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name, naming the valid ones when it is unknown.
    pub fn parse(s: &str) -> Result<Scope, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}; expected read, deploy or admin"))
    }
}

/// A credential as presented in `Authorization: Bearer ...` or an MQTT password.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API token.
    Api {
        /// Its public id.
        id: String,
        /// Its secret (64 hex).
        secret: String,
    },
    /// An enrollment token.
    Enroll {
        /// Its public id.
        id: String,
        /// Its secret.
        secret: String,
    },
    /// A device's own credential (the MQTT password it got at enrollment).
    Device {
        /// The device id.
        device: String,
        /// Its secret.
        secret: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Api { id, .. } => write!(f, "Api({id})"),
            Credential::Enroll { id, .. } => write!(f, "Enroll({id})"),
            Credential::Device { device, .. } => write!(f, "Device({device})"),
        }
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Length of a credential id (hex characters).
pub const ID_LEN: usize = 8;

/// The token string of an API token.
pub fn api_token(id: &str, secret: &str) -> String {
    format!("fleet_{id}_{secret}")
}

/// The token string of an enrollment token.
pub fn enroll_token(id: &str, secret: &str) -> String {
    format!("enroll_{id}_{secret}")
}

/// The HTTP credential of a device.
pub fn device_credential(device: &str, secret: &str) -> String {
    format!("device:{device}:{secret}")
}

impl Credential {
    /// Parses a presented credential. The error never repeats the secret.
    pub fn parse(text: &str) -> Result<Credential, String> {
        let text = text.trim();
        let split = |prefix: &str| -> Option<(String, String)> {
            let rest = text.strip_prefix(prefix)?;
            let (id, secret) = rest.split_once('_')?;
            (is_hex(id, ID_LEN) && is_hex(secret, 64)).then(|| (id.to_string(), secret.to_string()))
        };
        if let Some((id, secret)) = split("fleet_") {
            return Ok(Credential::Api { id, secret });
        }
        if let Some((id, secret)) = split("enroll_") {
            return Ok(Credential::Enroll { id, secret });
        }
        if let Some(rest) = text.strip_prefix("device:") {
            if let Some((device, secret)) = rest.rsplit_once(':') {
                if crate::DeviceId::parse(device).is_ok() && is_hex(secret, 64) {
                    return Ok(Credential::Device {
                        device: device.to_string(),
                        secret: secret.to_string(),
                    });
                }
            }
        }
        Err("credential is not a FleetD token (fleet_<id>_<secret>, enroll_<id>_<secret> or device:<id>:<secret>)".into())
    }
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for people (e.g. "ci-web").
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When not empty: the applications (and artifacts) it may deploy; others are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Lifetime, e.g. `90d`, `24h`; no expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// An API token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Application limit (empty: all).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Creation time, ms.
    pub created_at: u64,
    /// Expiry, ms.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Revoked tokens stay listed.
    #[serde(default)]
    pub revoked: bool,
    /// The MQTT user name to connect with.
    #[serde(default)]
    pub mqtt_username: String,
}

/// The answer to `POST /api/v1/tokens`: the only time the token string is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token (keep it; it cannot be shown again).
    pub token: String,
    /// Its listing.
    pub info: TokenView,
}

/// `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollToken {
    /// A name for people (e.g. "store-17 batch").
    #[serde(default)]
    pub name: String,
    /// Labels every device enrolled with it gets (over the labels it reports).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Lifetime, e.g. `24h`; no expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// How many devices may enroll with it; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// An enrollment token as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollTokenView {
    /// Public id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Labels given to devices.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time, ms.
    pub created_at: u64,
    /// Expiry, ms.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Uses left (unlimited when absent).
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// Devices enrolled with it so far.
    #[serde(default)]
    pub used: u32,
    /// Revoked tokens stay listed.
    #[serde(default)]
    pub revoked: bool,
}

/// The answer to `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollTokenCreated {
    /// The token (shown once).
    pub token: String,
    /// Its listing.
    pub info: EnrollTokenView,
}

/// Where a device's key stands with the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrollmentState {
    /// Enrolled: may connect, its reports are accepted.
    Accepted,
    /// Asked without a token; waiting for an operator.
    Pending,
    /// Refused by an operator.
    Rejected,
    /// Revoked by an operator: disconnected and refused from then on.
    Revoked,
}

impl EnrollmentState {
    /// The name used in the API and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }
}

/// A device's enrollment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentView {
    /// The device.
    pub device_id: String,
    /// State of its current key.
    pub state: EnrollmentState,
    /// Id of its current key.
    pub key_id: String,
    /// When it asked (pending) or was enrolled, ms.
    pub at: u64,
    /// The enrollment token it used, if any.
    #[serde(default)]
    pub token_id: Option<String>,
    /// Agent version at enrollment.
    #[serde(default)]
    pub agent_version: String,
    /// What it reported at enrollment (for deciding on a pending request).
    #[serde(default)]
    pub inventory: crate::Inventory,
}

/// The answer to `POST /api/v1/devices/{id}/{action}` (accept, reject, revoke, reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceActionResult {
    /// The device.
    pub device_id: String,
    /// What was done.
    pub action: String,
    /// Its enrollment afterwards (`None` after a reset).
    #[serde(default)]
    pub enrollment: Option<EnrollmentView>,
}

/// The answer to `GET /api/v1/whoami`: who fleetd takes the caller for, so a CI job can check
/// its token (and fleetctl can refuse before uploading a large file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `token`, or `insecure` when fleetd runs without authentication.
    pub kind: String,
    /// The token's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The token's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its strongest scope (`None`: insecure mode, everything allowed).
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Applications it is limited to (empty: all).
    #[serde(default)]
    pub apps: Vec<String>,
}

impl WhoAmI {
    /// Whether the caller may deploy (push, register, create deployments of) `app`.
    pub fn may_deploy(&self, app: &str) -> bool {
        match self.scope {
            None => self.kind == "insecure",
            Some(s) => {
                s >= Scope::Deploy && (self.apps.is_empty() || self.apps.iter().any(|a| a == app))
            }
        }
    }
}

/// The answer to `GET /api/v1/broker/mosquitto`: the files that make Mosquitto enforce
/// FleetD's topic rules, and the configuration lines that use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MosquittoConfig {
    /// `fleet.passwd` content.
    pub passwd: String,
    /// `fleet.acl` content.
    pub acl: String,
    /// Lines for `mosquitto.conf`.
    pub conf: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_never_debug_their_secret() {
        let s = "a".repeat(64);
        let api = Credential::parse(&api_token("0123abcd", &s)).expect("api");
        assert_eq!(
            api,
            Credential::Api {
                id: "0123abcd".into(),
                secret: s.clone()
            }
        );
        assert!(!format!("{api:?}").contains(&s));
        assert!(matches!(
            Credential::parse(&enroll_token("0123abcd", &s)),
            Ok(Credential::Enroll { .. })
        ));
        let dev = Credential::parse(&device_credential("rpi-0.1_x", &s)).expect("device");
        assert!(matches!(dev, Credential::Device { ref device, .. } if device == "rpi-0.1_x"));
        for bad in [
            "",
            "fleet_0123abcd",
            "fleet_0123abc_aaaa",
            "fleet_0123abcg_".to_string().as_str(),
            "device:_x:aa",
            "Bearer x",
        ] {
            let e = Credential::parse(bad).expect_err(bad);
            assert!(!e.contains(&s));
        }
    }

    #[test]
    fn scopes_are_ordered_and_named() {
        assert!(Scope::Admin > Scope::Deploy && Scope::Deploy > Scope::Read);
        assert_eq!(Scope::parse("deploy"), Ok(Scope::Deploy));
        assert!(Scope::parse("root")
            .expect_err("unknown")
            .contains("read, deploy"));
        let t: CreateToken =
            serde_json::from_str(r#"{"name":"ci","scopes":["deploy"],"apps":["web"]}"#)
                .expect("parses");
        assert_eq!(t.scopes, [Scope::Deploy]);
        let e = serde_json::from_str::<CreateToken>(r#"{"name":"ci","scopes":[],"scope":1}"#)
            .expect_err("unknown field");
        assert!(e.to_string().contains("scope"), "{e}");
    }
}
