//! Checks the agent makes before fetching an artifact, so nothing is downloaded or half
//! installed that the device must refuse: the signature policy (trusted keys, whether
//! signatures are required) and the artifact's platforms and requirements against this
//! device's inventory. The texts become the app's `last_error`, naming what failed.

use fleet_schema::compat;
use fleet_schema::signing::{self, ManifestFields, SignError, TrustedKey};
use fleet_schema::{ArtifactRef, Inventory};

/// Which signatures the device accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Public keys whose signatures are accepted (several, so keys can rotate).
    pub trusted_keys: Vec<TrustedKey>,
    /// Refuse artifacts without a valid signature by a trusted key.
    pub require_signatures: bool,
}

/// The agent's artifact settings: what it trusts and how large an archive may unpack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactSettings {
    /// Signature policy.
    pub trust: TrustPolicy,
    /// Archive extraction limits.
    pub archive_limits: crate::install::archive::ArchiveLimits,
}

impl ArtifactSettings {
    /// Builds the settings from configuration values; each trusted key is hex or the path of
    /// a file holding hex (as `fleetctl keygen` writes it). The error names the bad key.
    pub fn resolve<'a>(
        keys: impl IntoIterator<Item = &'a String>,
        require_signatures: bool,
        archive_max_bytes: Option<u64>,
        archive_max_entries: Option<u64>,
    ) -> Result<Self, String> {
        let mut trusted_keys: Vec<TrustedKey> = Vec::new();
        for k in keys {
            let key = match TrustedKey::from_hex(k) {
                Ok(key) => key,
                Err(hex_err) => {
                    let text = std::fs::read_to_string(k)
                        .map_err(|e| format!("{hex_err}; nor is it a readable file: {e}"))?;
                    TrustedKey::from_hex(&text).map_err(|e| format!("{k}: {e}"))?
                }
            };
            if !trusted_keys.contains(&key) {
                trusted_keys.push(key);
            }
        }
        let d = crate::install::archive::ArchiveLimits::default();
        Ok(Self {
            trust: TrustPolicy {
                trusted_keys,
                require_signatures,
            },
            archive_limits: crate::install::archive::ArchiveLimits {
                max_bytes: archive_max_bytes.unwrap_or(d.max_bytes),
                max_entries: archive_max_entries.unwrap_or(d.max_entries),
            },
        })
    }
}

/// Why an artifact is refused before download.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature policy refused it.
    #[error("signature check failed: {0}")]
    Signature(#[from] SignError),
    /// The device cannot run it.
    #[error("device cannot run this artifact: {0}")]
    Unfit(String),
}

/// Applies the signature policy. With `require_signatures`, an unsigned artifact, one signed
/// only by unknown keys, or one whose signature does not match its manifest is refused.
/// Without it, a signature by a trusted key that does not match is still refused (that is
/// tampering), while unsigned or unknown-key artifacts are accepted.
pub fn check_signatures(artifact: &ArtifactRef, policy: &TrustPolicy) -> Result<(), SignError> {
    let manifest = signing::canonical_manifest(&ManifestFields {
        name: &artifact.name,
        version: &artifact.version,
        kind: &artifact.kind,
        size: artifact.size,
        sha256: &artifact.sha256,
        platforms: &artifact.platforms,
    });
    match signing::verify(&manifest, &artifact.signatures, &policy.trusted_keys) {
        Ok(key) => {
            tracing::info!(artifact = %artifact.name, version = %artifact.version, key, "signature verified");
            Ok(())
        }
        Err(e @ SignError::Mismatch(_)) => Err(e),
        Err(e) if policy.require_signatures => Err(e),
        Err(_) => Ok(()),
    }
}

/// Re-checks platforms, type and requirements against this device.
pub fn check_fit(artifact: &ArtifactRef, inventory: &Inventory) -> Result<(), String> {
    let unmet = compat::unmet(
        &artifact.kind,
        &artifact.platforms,
        &artifact.requirements,
        inventory,
    );
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(unmet.join("; "))
    }
}

/// Both checks, signature first.
pub fn check(
    artifact: &ArtifactRef,
    policy: &TrustPolicy,
    inventory: &Inventory,
) -> Result<(), Refusal> {
    check_signatures(artifact, policy)?;
    check_fit(artifact, inventory).map_err(Refusal::Unfit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::artifact::{Platform, Requirements};

    fn signed(private: &[u8]) -> ArtifactRef {
        let mut a = ArtifactRef {
            name: "app".into(),
            version: "1.0.0".into(),
            size: 3,
            sha256: "ab".repeat(32),
            url: "http://x".into(),
            platforms: vec![Platform::parse("linux/amd64").expect("valid")],
            ..Default::default()
        };
        let manifest = signing::canonical_manifest(&ManifestFields {
            name: &a.name,
            version: &a.version,
            kind: &a.kind,
            size: a.size,
            sha256: &a.sha256,
            platforms: &a.platforms,
        });
        a.signatures = vec![signing::sign(private, &manifest).expect("signs")];
        a
    }

    #[test]
    fn policy_names_unsigned_unknown_and_mismatch() {
        let (private, public) = signing::generate_key_pair().expect("keygen");
        let (_, other) = signing::generate_key_pair().expect("keygen");
        let key = TrustedKey::from_hex(&hex::encode(&public)).expect("key");
        let other = TrustedKey::from_hex(&hex::encode(&other)).expect("key");
        let strict = TrustPolicy {
            trusted_keys: vec![other.clone(), key.clone()],
            require_signatures: true,
        };
        let good = signed(&private);
        assert_eq!(check_signatures(&good, &strict), Ok(()));

        let unsigned = ArtifactRef {
            signatures: vec![],
            ..good.clone()
        };
        let err = check_signatures(&unsigned, &strict).expect_err("unsigned");
        assert!(err.to_string().contains("unsigned"), "{err}");
        assert_eq!(check_signatures(&unsigned, &TrustPolicy::default()), Ok(()));

        let only_other = TrustPolicy {
            trusted_keys: vec![other],
            require_signatures: true,
        };
        let err = check_signatures(&good, &only_other).expect_err("unknown key");
        assert!(err.to_string().contains("unknown key"), "{err}");

        let tampered = ArtifactRef {
            sha256: "cd".repeat(32),
            ..good.clone()
        };
        let lax = TrustPolicy {
            trusted_keys: vec![key],
            require_signatures: false,
        };
        for policy in [&strict, &lax] {
            let err = check_signatures(&tampered, policy).expect_err("mismatch");
            assert!(err.to_string().contains("does not match"), "{err}");
        }
    }

    #[test]
    fn settings_accept_hex_and_key_files_and_name_a_bad_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, a) = signing::generate_key_pair().expect("keygen");
        let (_, b) = signing::generate_key_pair().expect("keygen");
        let file = dir.path().join("b.pub");
        std::fs::write(&file, format!("{}\n", hex::encode(&b))).expect("write");
        let keys = [
            hex::encode(&a),
            file.to_string_lossy().into_owned(),
            hex::encode(&a),
        ];
        let s = ArtifactSettings::resolve(&keys, true, Some(10), None).expect("valid");
        assert_eq!(s.trust.trusted_keys.len(), 2, "duplicates merged");
        assert!(s.trust.require_signatures);
        assert_eq!(s.archive_limits.max_bytes, 10);
        let bad = ["not-a-key".to_string()];
        let err = ArtifactSettings::resolve(&bad, false, None, None).expect_err("bad key");
        assert!(err.contains("not-a-key"), "{err}");
    }

    #[test]
    fn unfit_artifacts_are_refused_naming_the_requirement() {
        let inv = crate::inventory::collect(std::path::Path::new("/"), &Default::default());
        let mut a = ArtifactRef {
            platforms: vec![Platform::parse("linux/not-an-arch").expect("valid")],
            ..Default::default()
        };
        let err = check_fit(&a, &inv).expect_err("wrong platform");
        assert!(err.contains("not-an-arch"), "{err}");
        a.platforms = vec![Platform::parse(&format!("linux/{}", inv.arch)).expect("valid")];
        assert_eq!(check_fit(&a, &inv), Ok(()));
        a.requirements = Requirements {
            min_memory: u64::MAX,
            ..Default::default()
        };
        assert!(check_fit(&a, &inv).expect_err("memory").contains("memory"));
    }
}
