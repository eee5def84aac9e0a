//! The keys of the trust model: an ed25519 key pair per device and one for the controller
//! ([`SigningKey`], verified through [`crate::signing::TrustedKey`]), and the symmetric key a
//! device shares with its controller since enrollment ([`BusKey`]), which encrypts what only
//! that device may read.

use crate::signing::{key_id, TrustedKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Length of every random secret FleetD issues (tokens, MQTT passwords, bus keys): 32 bytes.
pub const SECRET_LEN: usize = 32;

/// Why a key could not be created or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a PKCS#8 ed25519 private key.
    #[error("not a PKCS#8 ed25519 private key: {0}")]
    BadPrivateKey(String),
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// An ed25519 key pair that signs: the controller's (desired states, presence, requests) or a
/// device's (statuses, metrics, logs, enrollment requests). The key pair is parsed once and kept,
/// because parsing PKCS#8 costs more than a signature.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

impl SigningKey {
    /// Generates a new key pair; returns it with its PKCS#8 bytes (to be stored 0600).
    pub fn generate() -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// Loads a key pair from PKCS#8 bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, id })
    }

    /// The key id (first 16 hex characters of the public key's sha256).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw 32-byte public key.
    pub fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as a verifier would hold it.
    pub fn trusted(&self) -> TrustedKey {
        TrustedKey {
            id: self.id.clone(),
            public: self.public().to_vec(),
        }
    }

    /// Signs `message`; returns the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Verifies an ed25519 signature by `key` over `message`.
pub fn verify_signature(key: &TrustedKey, message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.public)
        .verify(message, signature)
        .is_ok()
}

/// The symmetric key a device and its controller derived at enrollment (X25519, HKDF-SHA256).
/// It encrypts desired states (ChaCha20-Poly1305) so that no other client on the bus can read a
/// device's configuration, secrets or download URLs. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct BusKey(pub [u8; SECRET_LEN]);

impl std::fmt::Debug for BusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusKey(<redacted>)")
    }
}

impl BusKey {
    /// Reads a key from its 64 hex characters.
    pub fn from_hex(text: &str) -> Option<BusKey> {
        let bytes = hex::decode(text.trim()).ok()?;
        let arr: [u8; SECRET_LEN] = bytes.try_into().ok()?;
        Some(BusKey(arr))
    }

    /// The key as 64 hex characters (for the files that store it, 0600).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Random)?;
    Ok(out)
}

/// A new random secret as 64 lowercase hex characters (tokens, MQTT passwords).
pub fn new_secret_hex() -> Result<String, KeyError> {
    Ok(hex::encode(random_bytes::<SECRET_LEN>()?))
}

/// The sha256 of a secret as hex: what is stored instead of the secret itself. Secrets are 256
/// random bits, so a fast hash is enough (no password stretching needed).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sign_and_verify_and_never_print_secrets() {
        let (key, pkcs8) = SigningKey::generate().expect("keygen");
        let again = SigningKey::from_pkcs8(&pkcs8).expect("reload");
        assert_eq!(key.id(), again.id());
        let sig = key.sign(b"hello");
        assert!(verify_signature(&key.trusted(), b"hello", &sig));
        assert!(!verify_signature(&key.trusted(), b"hellO", &sig));
        let (other, _) = SigningKey::generate().expect("keygen");
        assert!(!verify_signature(&other.trusted(), b"hello", &sig));
        assert!(SigningKey::from_pkcs8(b"junk").is_err());
        let bus = BusKey([7; SECRET_LEN]);
        assert_eq!(format!("{bus:?}"), "BusKey(<redacted>)");
        assert_eq!(BusKey::from_hex(&bus.to_hex()), Some(bus));
        assert!(BusKey::from_hex("abcd").is_none());
    }

    #[test]
    fn secrets_are_random_hashed_and_compared_in_constant_time() {
        let a = new_secret_hex().expect("random");
        let b = new_secret_hex().expect("random");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
