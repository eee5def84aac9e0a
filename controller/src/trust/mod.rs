//! The controller's side of the trust model (see "Security model" in `docs/architecture.md`):
//! - its own ed25519 key ([`controller_key`]), which signs every desired state, presence message
//!   and request it publishes, and which devices pin at enrollment;
//! - the identities of devices and the API tokens ([`records`], [`registry`]), checked at every
//!   MQTT CONNECT ([`Trust::authorize_connect`]), every API call ([`Trust::authenticate`]) and
//!   every incoming message ([`Trust::device`]);
//! - enrollment ([`enroll`]), the operator's decisions on devices ([`admin`]), tokens
//!   ([`tokens`]) and the Mosquitto password and ACL files ([`mosquitto`], [`broker_files`]).

pub mod admin;
pub mod broker_files;
pub mod controller_key;
pub mod enroll;
pub mod mosquitto;
pub mod principal;
pub mod records;
pub mod registry;
pub mod tokens;

pub use principal::{Forbidden, Principal};

use crate::db::{Db, DbError};
use fleet_schema::trust::keys::{constant_time_eq, new_secret_hex, secret_hash};
use fleet_schema::trust::tokens::{
    agent_client_id, CONTROLLER_CLIENT_ID, CONTROLLER_USERNAME, TOKEN_USERNAME,
};
use fleet_schema::trust::{seal, Credential, SealParams, SigningKey, Stamp};
use records::{IdentityRecord, TokenRecord};
use registry::{ActiveDevice, Registry};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use tokio::sync::Notify;

/// Why a request carries no usable credential (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No `Authorization` header.
    #[error("missing Authorization header: send 'Authorization: Bearer <token>' (create one with `fleetctl token create`)")]
    Missing,
    /// Not `Bearer <credential>`.
    #[error("Authorization header must be 'Bearer <token>'")]
    Scheme,
    /// A credential that is malformed, unknown, revoked or expired; the text says which.
    #[error("{0}")]
    Invalid(String),
}

/// Why the trust state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The controller key file.
    #[error(transparent)]
    Key(#[from] controller_key::KeyFileError),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The random generator.
    #[error("cannot create a secret: {0}")]
    Random(String),
}

/// Everything the controller knows about keys, identities and tokens; shared by the broker's
/// CONNECT check, the MQTT bridge and the HTTP API.
pub struct Trust {
    key: SigningKey,
    insecure: bool,
    /// (epoch, seq) of the controller's signed messages: the epoch grows with every broker
    /// connection (boot counter << 20, plus connections since start), the seq with every message.
    stamp: std::sync::Mutex<Stamp>,
    registry: RwLock<Registry>,
    mqtt_password: String,
    refused_connects: AtomicU64,
    /// Woken after every change of identities or tokens (the Mosquitto files writer listens).
    pub changed: Notify,
    kicks: std::sync::Mutex<Vec<String>>,
    /// Woken when devices must be disconnected from the broker (revoked, reset).
    pub kick_requested: Notify,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Trust(controller key {}, insecure {})",
            self.key.id(),
            self.insecure
        )
    }
}

impl Trust {
    /// Loads (or creates) the controller key in `data_dir`, bumps the boot epoch and loads the
    /// identities and tokens. `mqtt_password` is the controller's own broker password (`None`:
    /// a fresh random one, for the embedded broker).
    pub fn open(
        db: &Db,
        data_dir: &Path,
        insecure: bool,
        mqtt_password: Option<String>,
    ) -> Result<Trust, TrustError> {
        let key = controller_key::load_or_create(&data_dir.join(controller_key::FILE_NAME))?;
        let boot = db.bump_counter("controller-boot")?;
        let registry = Registry::load(&db.identities()?, db.tokens()?);
        let mqtt_password = match mqtt_password {
            Some(p) => p,
            None => new_secret_hex().map_err(|e| TrustError::Random(e.to_string()))?,
        };
        Ok(Trust::new(key, boot, registry, insecure, mqtt_password))
    }

    /// Assembles the trust state from its parts (tests build it without files).
    pub fn new(
        key: SigningKey,
        boot: u64,
        registry: Registry,
        insecure: bool,
        mqtt_password: String,
    ) -> Trust {
        Trust {
            key,
            insecure,
            stamp: std::sync::Mutex::new(Stamp {
                epoch: boot << 20,
                seq: 0,
            }),
            registry: RwLock::new(registry),
            mqtt_password,
            refused_connects: AtomicU64::new(0),
            changed: Notify::new(),
            kicks: std::sync::Mutex::new(Vec::new()),
            kick_requested: Notify::new(),
        }
    }

    /// The controller's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Whether authentication of connections and API calls is off (`--insecure`).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The controller's own MQTT password.
    pub fn mqtt_password(&self) -> &str {
        &self.mqtt_password
    }

    /// A fresh stamp for a message the controller signs (presence, requests, desired states),
    /// so agents refuse a replayed older one.
    pub fn next_stamp(&self) -> Stamp {
        let mut s = self.stamp.lock().expect("stamp lock is never poisoned");
        s.seq += 1;
        *s
    }

    /// Starts a new epoch for a new broker connection; returns it (its last will is stamped
    /// `Stamp::will(epoch)`, newer than every message of the connection, older than the next).
    pub fn new_connection(&self) -> u64 {
        let mut s = self.stamp.lock().expect("stamp lock is never poisoned");
        s.epoch += 1;
        s.seq = 0;
        s.epoch
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .expect("trust registry lock is never poisoned")
    }

    /// An active device's keys, if it is enrolled and not revoked.
    pub fn device(&self, id: &str) -> Option<ActiveDevice> {
        self.read().devices.get(id).cloned()
    }

    /// Number of devices waiting for an operator.
    pub fn pending_count(&self) -> usize {
        self.read().pending.len()
    }

    /// Records a committed identity change (`None`: forgotten).
    pub fn identity_changed(&self, device: &str, rec: Option<&IdentityRecord>) {
        self.registry
            .write()
            .expect("trust registry lock is never poisoned")
            .set_identity(device, rec);
        self.changed.notify_one();
    }

    /// Asks the MQTT bridge to disconnect a device's current connection (after a revoke or
    /// reset; the broker's CONNECT check keeps it out afterwards).
    pub fn request_kick(&self, device: &str) {
        self.kicks
            .lock()
            .expect("kick queue lock is never poisoned")
            .push(device.to_string());
        self.kick_requested.notify_one();
    }

    /// The devices waiting to be disconnected.
    pub fn take_kicks(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .kicks
                .lock()
                .expect("kick queue lock is never poisoned"),
        )
    }

    /// Records a committed token change.
    pub fn token_changed(&self, rec: &TokenRecord) {
        self.registry
            .write()
            .expect("trust registry lock is never poisoned")
            .tokens
            .insert(rec.id.clone(), rec.clone());
        self.changed.notify_one();
    }

    /// Seals a message the controller publishes to one device: signed, addressed to the
    /// device's key and encrypted under its bus key. `None` when the device is not active.
    pub fn seal_for_device(
        &self,
        topic: &str,
        device: &str,
        stamp: Stamp,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, fleet_schema::trust::SealError>> {
        let dev = self.device(device)?;
        Some(seal(
            SealParams {
                topic,
                signer: &self.key,
                to: Some(&dev.key.id),
                stamp,
                encrypt: Some(&dev.bus_key),
            },
            body,
        ))
    }

    /// Seals a message for every device (presence): signed, not encrypted.
    pub fn seal_public(
        &self,
        topic: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, fleet_schema::trust::SealError> {
        seal(
            SealParams {
                topic,
                signer: &self.key,
                to: None,
                stamp: self.next_stamp(),
                encrypt: None,
            },
            body,
        )
    }

    /// The broker's CONNECT check: the controller, an enrolled device on its own client id, or
    /// an API token on any other client id. Everything passes with `--insecure`.
    pub fn authorize_connect(&self, client_id: &str, username: &str, password: &str) -> bool {
        if self.insecure {
            return true;
        }
        let ok = self.check_connect(client_id, username, password);
        if !ok {
            let n = self.refused_connects.fetch_add(1, Ordering::Relaxed) + 1;
            // Bounded logging: the first ten, then every thousandth.
            if n <= 10 || n.is_multiple_of(1000) {
                tracing::warn!(
                    client_id,
                    username,
                    refused_total = n,
                    "MQTT connection refused: unknown, revoked or mismatched credentials"
                );
            }
        }
        ok
    }

    /// MQTT connections refused since start.
    pub fn refused_connects(&self) -> u64 {
        self.refused_connects.load(Ordering::Relaxed)
    }

    fn check_connect(&self, client_id: &str, username: &str, password: &str) -> bool {
        if username == CONTROLLER_USERNAME {
            return constant_time_eq(password.as_bytes(), self.mqtt_password.as_bytes());
        }
        if username == TOKEN_USERNAME || username.starts_with(&format!("{TOKEN_USERNAME}-")) {
            let reserved =
                client_id == CONTROLLER_CLIENT_ID || client_id.starts_with("fleet-agent-");
            return !reserved
                && match self.token_for(password) {
                    Ok(t) => {
                        username == TOKEN_USERNAME
                            || username == fleet_schema::trust::tokens::token_username(&t.id)
                    }
                    Err(_) => false,
                };
        }
        match self.read().devices.get(username) {
            Some(dev) => client_id == agent_client_id(username) && dev.password_matches(password),
            None => false,
        }
    }

    fn token_for(&self, presented: &str) -> Result<TokenRecord, Unauthenticated> {
        let Ok(Credential::Api { id, secret }) = Credential::parse(presented) else {
            return Err(Unauthenticated::Invalid(
                "token is malformed (expected fleet_<id>_<secret>)".into(),
            ));
        };
        self.usable_token(&id, |t| {
            constant_time_eq(secret_hash(&secret).as_bytes(), t.hash.as_bytes())
        })
    }

    /// The token `id` if `proof` holds for it and it is neither revoked nor expired.
    fn usable_token(
        &self,
        id: &str,
        proof: impl FnOnce(&TokenRecord) -> bool,
    ) -> Result<TokenRecord, Unauthenticated> {
        let reg = self.read();
        let unknown = || Unauthenticated::Invalid(format!("token {id} is not known"));
        let t = reg.tokens.get(id).ok_or_else(unknown)?;
        if !proof(t) {
            return Err(unknown());
        }
        if t.revoked {
            return Err(Unauthenticated::Invalid(format!("token {id} was revoked")));
        }
        if !t.is_valid(crate::clock::now_ms()) {
            return Err(Unauthenticated::Invalid(format!("token {id} has expired")));
        }
        Ok(t.clone())
    }

    /// Establishes the caller of an API request from its `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Unauthenticated> {
        if self.insecure {
            return Ok(Principal::Insecure);
        }
        let header = header.ok_or(Unauthenticated::Missing)?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(Unauthenticated::Scheme)?
            .trim();
        match Credential::parse(presented) {
            Ok(Credential::Api { .. }) => token_principal(self.token_for(presented)?),
            Ok(Credential::Device { device, secret }) => match self.device(&device) {
                Some(dev) if dev.password_matches(&secret) => Ok(Principal::Device(device)),
                _ => Err(Unauthenticated::Invalid(format!(
                    "device credential for {device} is not valid (not enrolled, revoked, or rotated)"
                ))),
            },
            Ok(Credential::Enroll { id, .. }) => Err(Unauthenticated::Invalid(format!(
                "enrollment token {id} is only accepted by POST /api/v1/enroll"
            ))),
            Err(e) => Err(Unauthenticated::Invalid(e)),
        }
    }
}

impl Trust {
    /// Establishes who sent a message signed with an API token instead of carrying it (CI
    /// requests on `fleet/_ci/requests/<token id>/<hmac>`): `mac_hex` must be the HMAC-SHA256 of
    /// `payload` keyed with the token's stored secret hash (the sha256 hex of its secret), so
    /// the secret itself never crosses the bus. `--insecure` accepts anything, as for the API.
    pub fn authenticate_mac(
        &self,
        token_id: &str,
        mac_hex: &str,
        payload: &[u8],
    ) -> Result<Principal, Unauthenticated> {
        if self.insecure {
            return Ok(Principal::Insecure);
        }
        let Ok(mac) = hex::decode(mac_hex) else {
            return Err(Unauthenticated::Invalid("the HMAC is not hex".into()));
        };
        let t = self
            .usable_token(token_id, |t| {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, t.hash.as_bytes());
                ring::hmac::verify(&key, payload, &mac).is_ok()
            })
            .map_err(|_| {
                Unauthenticated::Invalid(format!(
                    "token {token_id} is not known, revoked or expired, or the HMAC does not \
                     match the payload (HMAC-SHA256 keyed with the sha256 hex of the secret)"
                ))
            })?;
        token_principal(t)
    }
}

/// The principal of a token that authenticated.
fn token_principal(t: TokenRecord) -> Result<Principal, Unauthenticated> {
    Ok(Principal::Token {
        scope: t
            .top_scope()
            .ok_or_else(|| Unauthenticated::Invalid(format!("token {} has no scope", t.id)))?,
        id: t.id,
        name: t.name,
        apps: t.apps,
    })
}
