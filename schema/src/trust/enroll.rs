//! Enrollment: how a device's key becomes known to the controller and the controller's key
//! becomes pinned on the device. The agent sends `POST /api/v1/enroll` with its device id, its
//! ed25519 public key, a fresh X25519 exchange key and its inventory, signed by its key (proof
//! that it holds the private key), and with an enrollment token when it has one. The controller
//! answers `accepted` (token valid, or an operator accepted the request), `pending` (no token:
//! waiting for an operator) or `rejected`. An accepted answer carries the controller's public
//! key (pinned by the device), the controller's X25519 exchange key, and the device's MQTT
//! password encrypted under a key both sides derive from the X25519 exchange, all signed by the
//! controller. Both sides also derive the device's [`BusKey`] from that exchange, so the bus key
//! and the password never travel in the clear, not even over plain HTTP.

use super::keys::{verify_signature, BusKey, SigningKey, SECRET_LEN};
use crate::device_id::DeviceId;
use crate::signing::TrustedKey;
use crate::status::Inventory;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

const REQUEST_DOMAIN: &[u8] = b"fleetd-enroll-request-v1\0";
const ANSWER_DOMAIN: &[u8] = b"fleetd-enroll-answer-v1\0";
const HKDF_SALT: &[u8] = b"fleetd-enroll-v1";

/// The body of `POST /api/v1/enroll`. Read leniently: a newer agent may add fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The device id the agent asks to be known by.
    pub device_id: String,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// A fresh X25519 public key for this request, hex.
    pub exchange_key: String,
    /// What the device offers (shown to the operator deciding on a pending request).
    #[serde(default)]
    pub inventory: Inventory,
    /// Agent build version.
    #[serde(default)]
    pub agent_version: String,
    /// When the request was made (ms); a re-enrollment must be newer than the last one.
    pub at: u64,
    /// Ed25519 signature by `public_key` over the request's signed bytes, hex.
    pub signature: String,
}

/// The controller's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrollState {
    /// Enrolled: the answer carries keys and credentials.
    Accepted,
    /// Waiting for an operator (`fleetctl device accept ID`); ask again later.
    Pending,
    /// Refused by an operator, or the key was revoked.
    Rejected,
}

/// The answer to an enrollment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The decision.
    pub state: EnrollState,
    /// A sentence for the device's log (why pending or rejected).
    #[serde(default)]
    pub message: String,
    /// The device the answer is for.
    pub device_id: String,
    /// The controller's ed25519 public key, hex (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_key: Option<String>,
    /// The controller's X25519 exchange key, hex (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_key: Option<String>,
    /// The MQTT credentials, encrypted (nonce then ciphertext, hex) (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// The MQTT user name to connect with (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_username: Option<String>,
    /// The controller's signature over the answer, hex (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The secret part of an accepted answer.
#[derive(Serialize, Deserialize)]
struct Credentials {
    mqtt_password: String,
}

/// Why an enrollment request or answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// A field is malformed; the text names it.
    #[error("enrollment {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("enrollment {0} signature does not verify")]
    BadSignature(&'static str),
    /// The answer comes from another controller key than the pinned one.
    #[error(
        "enrollment answer is signed by controller key {got}, but this device pinned {pinned}"
    )]
    NotPinned {
        /// The key in the answer.
        got: String,
        /// The pinned key.
        pinned: String,
    },
    /// The answer is not `accepted`.
    #[error("enrollment is {state:?}: {message}")]
    NotAccepted {
        /// The state.
        state: EnrollState,
        /// The controller's message.
        message: String,
    },
    /// A cryptographic operation failed.
    #[error("enrollment key exchange failed: {0}")]
    Crypto(&'static str),
}

fn hex32(field: &'static str, text: &str) -> Result<[u8; 32], EnrollError> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| EnrollError::Malformed(format!("{field} is not 64 hex characters")))
}

fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

impl EnrollRequest {
    /// The bytes the device signs.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = REQUEST_DOMAIN.to_vec();
        push_part(&mut out, self.device_id.as_bytes());
        push_part(&mut out, self.public_key.as_bytes());
        push_part(&mut out, self.exchange_key.as_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
        out
    }

    /// Builds a signed request (the agent's side); returns it with the exchange secret needed
    /// to read the answer.
    pub fn new_signed(
        device: &DeviceId,
        key: &SigningKey,
        inventory: Inventory,
        agent_version: &str,
        at: u64,
    ) -> Result<(EnrollRequest, Exchange), EnrollError> {
        let exchange = Exchange::generate()?;
        let mut req = EnrollRequest {
            device_id: device.to_string(),
            public_key: hex::encode(key.public()),
            exchange_key: hex::encode(exchange.public),
            inventory,
            agent_version: agent_version.to_string(),
            at,
            signature: String::new(),
        };
        req.signature = hex::encode(key.sign(&req.signed_bytes()));
        Ok((req, exchange))
    }

    /// Checks the request's form and its signature (the controller's side); returns the
    /// device's validated id and public key.
    pub fn verify(&self) -> Result<(DeviceId, TrustedKey), EnrollError> {
        let device = DeviceId::parse(&self.device_id)
            .map_err(|e| EnrollError::Malformed(format!("device_id: {e}")))?;
        let public = hex32("public_key", &self.public_key)?;
        hex32("exchange_key", &self.exchange_key)?;
        let signature = hex::decode(&self.signature)
            .map_err(|_| EnrollError::Malformed("signature is not hex".into()))?;
        let key = TrustedKey {
            id: crate::signing::key_id(&public),
            public: public.to_vec(),
        };
        if !verify_signature(&key, &self.signed_bytes(), &signature) {
            return Err(EnrollError::BadSignature("request"));
        }
        Ok((device, key))
    }
}

/// The device's half of the X25519 exchange of one request.
pub struct Exchange {
    private: EphemeralPrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exchange({})", hex::encode(self.public))
    }
}

impl Exchange {
    fn generate() -> Result<Exchange, EnrollError> {
        let private = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
            .map_err(|_| EnrollError::Crypto("cannot generate an exchange key"))?;
        let public: [u8; 32] = private
            .compute_public_key()
            .map_err(|_| EnrollError::Crypto("cannot compute the exchange key"))?
            .as_ref()
            .try_into()
            .map_err(|_| EnrollError::Crypto("exchange key has the wrong length"))?;
        Ok(Exchange { private, public })
    }
}

/// The two keys both sides derive from the shared X25519 secret.
struct Derived {
    bus: BusKey,
    credentials: BusKey,
}

fn derive(
    shared: &[u8],
    req: &EnrollRequest,
    controller_exchange: &str,
) -> Result<Derived, EnrollError> {
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(shared);
    let mut context = Vec::new();
    push_part(&mut context, req.device_id.as_bytes());
    push_part(&mut context, req.public_key.as_bytes());
    push_part(&mut context, req.exchange_key.as_bytes());
    push_part(&mut context, controller_exchange.as_bytes());
    let expand = |label: &[u8]| -> Result<BusKey, EnrollError> {
        let info = [label, context.as_slice()];
        let okm = prk
            .expand(&info, HKDF_SHA256)
            .map_err(|_| EnrollError::Crypto("key derivation failed"))?;
        let mut out = [0u8; SECRET_LEN];
        okm.fill(&mut out)
            .map_err(|_| EnrollError::Crypto("key derivation failed"))?;
        Ok(BusKey(out))
    };
    Ok(Derived {
        bus: expand(b"bus")?,
        credentials: expand(b"credentials")?,
    })
}

fn answer_signed_bytes(req: &EnrollRequest, resp: &EnrollResponse) -> Vec<u8> {
    let mut out = ANSWER_DOMAIN.to_vec();
    for part in [
        req.device_id.as_str(),
        req.public_key.as_str(),
        req.exchange_key.as_str(),
        resp.controller_key.as_deref().unwrap_or(""),
        resp.exchange_key.as_deref().unwrap_or(""),
        resp.credentials.as_deref().unwrap_or(""),
        resp.mqtt_username.as_deref().unwrap_or(""),
    ] {
        push_part(&mut out, part.as_bytes());
    }
    out
}

/// An accepted answer and the bus key the controller keeps for the device.
#[derive(Debug)]
pub struct Issued {
    /// The answer to send.
    pub response: EnrollResponse,
    /// The device's bus key (store it; never send it).
    pub bus_key: BusKey,
}

/// Builds the accepted answer to a verified request (the controller's side).
pub fn accept(
    req: &EnrollRequest,
    controller: &SigningKey,
    mqtt_username: &str,
    mqtt_password: &str,
) -> Result<Issued, EnrollError> {
    let peer = hex32("exchange_key", &req.exchange_key)?;
    let ours = Exchange::generate()?;
    let ours_hex = hex::encode(ours.public);
    let derived = agreement::agree_ephemeral(
        ours.private,
        &UnparsedPublicKey::new(&X25519, peer),
        |shared| derive(shared, req, &ours_hex),
    )
    .map_err(|_| EnrollError::Crypto("X25519 agreement failed"))??;
    let plain = crate::encode(&Credentials {
        mqtt_password: mqtt_password.to_string(),
    })
    .map_err(|_| EnrollError::Crypto("cannot encode credentials"))?;
    let nonce: [u8; NONCE_LEN] =
        super::keys::random_bytes().map_err(|_| EnrollError::Crypto("random generator"))?;
    let mut buf = plain;
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &derived.credentials.0)
            .map_err(|_| EnrollError::Crypto("bad credentials key"))?,
    )
    .seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(req.device_id.as_bytes()),
        &mut buf,
    )
    .map_err(|_| EnrollError::Crypto("cannot encrypt credentials"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&buf);
    let mut response = EnrollResponse {
        state: EnrollState::Accepted,
        message: "enrolled".into(),
        device_id: req.device_id.clone(),
        controller_key: Some(hex::encode(controller.public())),
        exchange_key: Some(ours_hex),
        credentials: Some(hex::encode(sealed)),
        mqtt_username: Some(mqtt_username.to_string()),
        signature: None,
    };
    response.signature = Some(hex::encode(
        controller.sign(&answer_signed_bytes(req, &response)),
    ));
    Ok(Issued {
        response,
        bus_key: derived.bus,
    })
}

/// What a device keeps from an accepted enrollment.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The controller's key, now pinned.
    pub controller_key: TrustedKey,
    /// The key shared with the controller.
    pub bus_key: BusKey,
    /// MQTT user name.
    pub mqtt_username: String,
    /// MQTT password.
    pub mqtt_password: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Enrolled(controller {}, user {})",
            self.controller_key.id, self.mqtt_username
        )
    }
}

/// Reads an accepted answer (the device's side): checks the controller's signature (against
/// the pinned key when there is one), derives the bus key and decrypts the credentials.
pub fn complete(
    req: &EnrollRequest,
    exchange: Exchange,
    resp: &EnrollResponse,
    pinned: Option<&TrustedKey>,
) -> Result<Enrolled, EnrollError> {
    if resp.state != EnrollState::Accepted {
        return Err(EnrollError::NotAccepted {
            state: resp.state,
            message: resp.message.clone(),
        });
    }
    let missing = |f: &str| EnrollError::Malformed(format!("answer lacks {f}"));
    let ctl_hex = resp
        .controller_key
        .as_deref()
        .ok_or_else(|| missing("controller_key"))?;
    let ctl_public = hex32("controller_key", ctl_hex)?;
    let controller_key = TrustedKey {
        id: crate::signing::key_id(&ctl_public),
        public: ctl_public.to_vec(),
    };
    if let Some(pin) = pinned {
        if pin.public != controller_key.public {
            return Err(EnrollError::NotPinned {
                got: controller_key.id,
                pinned: pin.id.clone(),
            });
        }
    }
    let signature = hex::decode(
        resp.signature
            .as_deref()
            .ok_or_else(|| missing("signature"))?,
    )
    .map_err(|_| EnrollError::Malformed("signature is not hex".into()))?;
    if !verify_signature(&controller_key, &answer_signed_bytes(req, resp), &signature) {
        return Err(EnrollError::BadSignature("answer"));
    }
    let ex_hex = resp
        .exchange_key
        .as_deref()
        .ok_or_else(|| missing("exchange_key"))?;
    let peer = hex32("exchange_key", ex_hex)?;
    let derived = agreement::agree_ephemeral(
        exchange.private,
        &UnparsedPublicKey::new(&X25519, peer),
        |shared| derive(shared, req, ex_hex),
    )
    .map_err(|_| EnrollError::Crypto("X25519 agreement failed"))??;
    let sealed = hex::decode(
        resp.credentials
            .as_deref()
            .ok_or_else(|| missing("credentials"))?,
    )
    .map_err(|_| EnrollError::Malformed("credentials are not hex".into()))?;
    if sealed.len() < NONCE_LEN {
        return Err(EnrollError::Malformed("credentials are too short".into()));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| EnrollError::Malformed("credentials nonce".into()))?;
    let mut buf = ciphertext.to_vec();
    let plain = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &derived.credentials.0)
            .map_err(|_| EnrollError::Crypto("bad credentials key"))?,
    )
    .open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(req.device_id.as_bytes()),
        &mut buf,
    )
    .map_err(|_| EnrollError::Crypto("credentials do not decrypt"))?;
    let creds: Credentials = crate::decode(plain, 4096)
        .map_err(|e| EnrollError::Malformed(format!("credentials: {e}")))?;
    Ok(Enrolled {
        controller_key,
        bus_key: derived.bus,
        mqtt_username: resp
            .mqtt_username
            .clone()
            .ok_or_else(|| missing("mqtt_username"))?,
        mqtt_password: creds.mqtt_password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (DeviceId, SigningKey) {
        (
            DeviceId::parse("rpi-001").expect("valid"),
            SigningKey::generate().expect("keygen").0,
        )
    }

    #[test]
    fn both_sides_derive_the_same_bus_key_and_the_password_travels_encrypted() {
        let (id, key) = device();
        let ctl = SigningKey::generate().expect("keygen").0;
        let (req, exchange) =
            EnrollRequest::new_signed(&id, &key, Inventory::default(), "0.1.0", 1000)
                .expect("request");
        let (dev, dev_key) = req.verify().expect("valid request");
        assert_eq!(dev, id);
        assert_eq!(dev_key.id, key.id());
        let issued = accept(&req, &ctl, "rpi-001", "s3cret-password").expect("answer");
        let json = serde_json::to_string(&issued.response).expect("json");
        assert!(!json.contains("s3cret-password"), "{json}");
        let got = complete(&req, exchange, &issued.response, None).expect("completes");
        assert_eq!(got.bus_key, issued.bus_key);
        assert_eq!(got.mqtt_password, "s3cret-password");
        assert_eq!(got.controller_key.id, ctl.id());
    }

    #[test]
    fn tampered_requests_and_answers_are_refused() {
        let (id, key) = device();
        let ctl = SigningKey::generate().expect("keygen").0;
        let (req, exchange) =
            EnrollRequest::new_signed(&id, &key, Inventory::default(), "", 1).expect("request");
        let mut other_id = req.clone();
        other_id.device_id = "rpi-002".into();
        assert_eq!(other_id.verify(), Err(EnrollError::BadSignature("request")));
        let mut later = req.clone();
        later.at += 1;
        assert!(later.verify().is_err());
        let mut bad_key = req.clone();
        bad_key.public_key = "zz".into();
        assert!(
            matches!(bad_key.verify(), Err(EnrollError::Malformed(m)) if m.contains("public_key"))
        );

        let issued = accept(&req, &ctl, "rpi-001", "pw").expect("answer");
        let mut swapped = issued.response.clone();
        let impostor = SigningKey::generate().expect("keygen").0;
        swapped.controller_key = Some(hex::encode(impostor.public()));
        let (req2, exchange2) =
            EnrollRequest::new_signed(&id, &key, Inventory::default(), "", 2).expect("request");
        assert!(complete(&req2, exchange2, &swapped, None).is_err());
        let pinned = impostor.trusted();
        assert!(matches!(
            complete(&req, exchange, &issued.response, Some(&pinned)),
            Err(EnrollError::NotPinned { .. })
        ));
        let pending = EnrollResponse {
            state: EnrollState::Pending,
            message: "waiting for an operator".into(),
            device_id: "rpi-001".into(),
            controller_key: None,
            exchange_key: None,
            credentials: None,
            mqtt_username: None,
            signature: None,
        };
        let (req3, exchange3) =
            EnrollRequest::new_signed(&id, &key, Inventory::default(), "", 3).expect("request");
        let e = complete(&req3, exchange3, &pending, None).expect_err("pending");
        assert!(e.to_string().contains("waiting for an operator"), "{e}");
    }
}
