//! Artifact signatures: the canonical CBOR manifest that is signed (name, version, type, size,
//! sha256, platforms), and ed25519 signing and verification over it. It lives here so that
//! `fleetctl` (signs), fleetd (stores) and the agent (verifies) build byte-identical manifests.
//!
//! Signing the manifest instead of the blob keeps verification cheap on a device: the blob is
//! bound to the manifest by its sha256, which the agent checks while streaming the download.

use crate::artifact::{ArtifactType, Platform, Signature};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Serialize;

/// The algorithm name recorded in [`Signature::algorithm`].
pub const ED25519_ALGORITHM: &str = "ed25519";

/// What a signature covers. Field order is the canonical CBOR key order (RFC 8949 §4.2.3:
/// shorter keys first, then bytewise), so ciborium's in-order encoding is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct CanonicalManifest<'a> {
    name: &'a str,
    size: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    sha256: String,
    version: &'a str,
    platforms: Vec<String>,
}

/// The facts about an artifact that a signature vouches for.
#[derive(Debug, Clone, Copy)]
pub struct ManifestFields<'a> {
    /// Artifact name.
    pub name: &'a str,
    /// Semantic version.
    pub version: &'a str,
    /// Artifact type.
    pub kind: &'a ArtifactType,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, hex (case-insensitive; lowercased in the manifest).
    pub sha256: &'a str,
    /// Platforms the artifact declares (order and duplicates do not matter).
    pub platforms: &'a [Platform],
}

/// The canonical CBOR bytes of an artifact's signed manifest.
pub fn canonical_manifest(f: &ManifestFields<'_>) -> Vec<u8> {
    let mut platforms: Vec<String> = f.platforms.iter().map(ToString::to_string).collect();
    platforms.sort();
    platforms.dedup();
    let manifest = CanonicalManifest {
        name: f.name,
        size: f.size,
        kind: f.kind.as_str(),
        sha256: f.sha256.to_ascii_lowercase(),
        version: f.version,
        platforms,
    };
    let mut out = Vec::new();
    // Writing plain strings and integers into a Vec cannot fail.
    ciborium::into_writer(&manifest, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Why a key or signature is unusable, or a verification failed. The texts are what a device
/// reports, so each names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A private key file is not a PKCS#8 ed25519 key.
    #[error("private key is not a PKCS#8 ed25519 key: {0}")]
    BadPrivateKey(String),
    /// A public key is not 32 bytes of hex.
    #[error("public key {0:?} is not 64 hex characters (an ed25519 public key)")]
    BadPublicKey(String),
    /// The artifact carries no signature while signatures are required.
    #[error("artifact is unsigned and this device requires signatures")]
    Unsigned,
    /// Every signature is by a key the device does not trust.
    #[error("artifact is signed only by unknown key(s) {0}; trusted keys: {1}")]
    UnknownKey(String, String),
    /// A signature by a trusted key does not verify against the manifest.
    #[error("signature by trusted key {0} does not match the artifact manifest (content or metadata changed after signing)")]
    Mismatch(String),
}

/// The id of a public key: the first 16 hex characters of its sha256, short enough to show
/// and stable across files and hosts.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex::encode(&digest.as_ref()[..8])
}

/// Generates a new ed25519 key pair as (PKCS#8 private key, raw 32-byte public key).
pub fn generate_key_pair() -> Result<(Vec<u8>, Vec<u8>), SignError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| SignError::BadPrivateKey(format!("key generation failed: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| SignError::BadPrivateKey(e.to_string()))?;
    Ok((pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

/// Signs a manifest with a PKCS#8 ed25519 private key.
pub fn sign(pkcs8: &[u8], manifest: &[u8]) -> Result<Signature, SignError> {
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SignError::BadPrivateKey(e.to_string()))?;
    Ok(Signature {
        key_id: key_id(pair.public_key().as_ref()),
        algorithm: ED25519_ALGORITHM.to_string(),
        signature: hex::encode(pair.sign(manifest).as_ref()),
    })
}

/// A public key a verifier trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Its [`key_id`].
    pub id: String,
    /// The raw 32-byte ed25519 public key.
    pub public: Vec<u8>,
}

impl TrustedKey {
    /// Parses a hex public key (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SignError> {
        let text = text.trim();
        let public = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| SignError::BadPublicKey(text.to_string()))?;
        Ok(Self {
            id: key_id(&public),
            public,
        })
    }
}

/// Checks that at least one signature is a valid ed25519 signature of `manifest` by a trusted
/// key; returns that key's id. The error says whether the artifact was unsigned, signed only by
/// unknown keys, or signed by a trusted key over a different manifest.
pub fn verify(
    manifest: &[u8],
    signatures: &[Signature],
    trusted: &[TrustedKey],
) -> Result<String, SignError> {
    if signatures.is_empty() {
        return Err(SignError::Unsigned);
    }
    let mut mismatched = None;
    for sig in signatures {
        let Some(key) = trusted.iter().find(|k| k.id == sig.key_id) else {
            continue;
        };
        let ok = sig.algorithm == ED25519_ALGORITHM
            && hex::decode(&sig.signature).is_ok_and(|bytes| {
                UnparsedPublicKey::new(&ED25519, &key.public)
                    .verify(manifest, &bytes)
                    .is_ok()
            });
        if ok {
            return Ok(key.id.clone());
        }
        mismatched = Some(key.id.clone());
    }
    if let Some(id) = mismatched {
        return Err(SignError::Mismatch(id));
    }
    let ids: Vec<&str> = signatures.iter().map(|s| s.key_id.as_str()).collect();
    let known: Vec<&str> = trusted.iter().map(|k| k.id.as_str()).collect();
    Err(SignError::UnknownKey(ids.join(", "), known.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(kind: &'a ArtifactType, platforms: &'a [Platform]) -> ManifestFields<'a> {
        ManifestFields {
            name: "app",
            version: "1.0.0",
            kind,
            size: 5,
            sha256: "ABCD",
            platforms,
        }
    }

    #[test]
    fn manifest_is_canonical_and_order_independent() {
        let kind = ArtifactType::Binary;
        let a = [
            Platform::parse("linux/arm64").expect("valid"),
            Platform::parse("linux/amd64").expect("valid"),
        ];
        let b = [a[1].clone(), a[0].clone(), a[1].clone()];
        let m = canonical_manifest(&fields(&kind, &a));
        assert_eq!(m, canonical_manifest(&fields(&kind, &b)));
        // Map of 6 entries, first key "name" (text of length 4): a1 would be wrong.
        assert_eq!(&m[..6], &[0xa6, 0x64, b'n', b'a', b'm', b'e']);
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("abcd"), "sha256 lowercased");
    }

    #[test]
    fn sign_verify_unknown_and_mismatch() {
        let kind = ArtifactType::Binary;
        let (private, public) = generate_key_pair().expect("keygen");
        let (_, other_public) = generate_key_pair().expect("keygen");
        let trusted = TrustedKey::from_hex(&hex::encode(&public)).expect("hex key");
        let other = TrustedKey::from_hex(&hex::encode(&other_public)).expect("hex key");
        let manifest = canonical_manifest(&fields(&kind, &[]));
        let sig = sign(&private, &manifest).expect("signs");
        assert_eq!(sig.key_id, trusted.id);

        let both = [other.clone(), trusted.clone()];
        assert_eq!(
            verify(&manifest, std::slice::from_ref(&sig), &both),
            Ok(trusted.id.clone())
        );
        assert_eq!(verify(&manifest, &[], &both), Err(SignError::Unsigned));
        assert!(matches!(
            verify(&manifest, std::slice::from_ref(&sig), &[other]),
            Err(SignError::UnknownKey(..))
        ));
        let bigger = ManifestFields {
            size: 6,
            ..fields(&kind, &[])
        };
        assert_eq!(
            verify(
                &canonical_manifest(&bigger),
                std::slice::from_ref(&sig),
                &both
            ),
            Err(SignError::Mismatch(trusted.id.clone()))
        );
        assert!(TrustedKey::from_hex("abc").is_err());
        assert!(sign(b"not a key", &manifest).is_err());
    }
}
