//! Artifact metadata: every field of the seed's `Artifact` message. It is stored beside each
//! blob, returned by the HTTP API as JSON, and summarised into [`crate::ArtifactRef`] for devices.

use crate::open_enum;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

open_enum! {
    /// What kind of package an artifact is; decides how the agent installs and runs it.
    pub enum ArtifactType {
        /// A standalone executable.
        Binary => "binary",
        /// A Docker/Podman image.
        OciImage => "oci-image",
        /// A reproducible Nix package.
        Nixpack => "nixpack",
        /// A tar.gz or zip with scripts.
        Archive => "archive",
        /// A Debian package.
        Deb => "deb",
        /// An RPM package.
        Rpm => "rpm",
        /// An Alpine package.
        Apk => "apk",
    }
}

/// Where and how the artifact was built (from CI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildInfo {
    /// Source revision (e.g. a git commit).
    pub commit: Option<String>,
    /// CI pipeline or job that built it.
    pub pipeline: Option<String>,
    /// Build time, Unix milliseconds.
    pub built_at: Option<u64>,
    /// Free-form extra build facts.
    pub extra: BTreeMap<String, String>,
}

/// What a device must offer to run the artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirements {
    /// Minimum memory, bytes.
    pub min_memory: u64,
    /// Minimum free storage, bytes.
    pub min_storage: u64,
    /// Minimum CPU clock, MHz.
    pub min_cpu_mhz: u32,
    /// Required capabilities ("docker", "systemd", "gpu", ...).
    pub capabilities: Vec<String>,
    /// OS family ("linux", "rtos"); empty means any.
    pub os_family: String,
    /// Minimum kernel version ("5.10"); empty means any.
    pub min_kernel: String,
    /// Accepted architectures (["arm64", "amd64"]); empty means any.
    pub arch: Vec<String>,
}

impl Requirements {
    /// True when nothing is required (the default), so the wire form can omit it.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A detached signature over the artifact's canonical manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Identifier of the signing key.
    pub key_id: String,
    /// Algorithm, e.g. "ed25519".
    pub algorithm: String,
    /// The signature bytes, hex-encoded (JSON- and CBOR-friendly).
    pub signature: String,
}

/// A platform an artifact runs on, e.g. linux/arm64 or linux/arm/v7.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. "linux".
    pub os: String,
    /// Architecture, e.g. "arm64".
    pub arch: String,
    /// Variant, e.g. "v7".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform string is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0:?} is not of the form os/arch or os/arch/variant (e.g. linux/arm64)")]
pub struct PlatformError(pub String);

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok_part(p)) {
            return Err(PlatformError(s.to_string()));
        }
        Ok(Self {
            os: parts[0].to_string(),
            arch: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{}", self.os, self.arch, v),
            None => write!(f, "{}/{}", self.os, self.arch),
        }
    }
}

/// The full metadata of a stored artifact version (the seed's `Artifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Stable id: `<name>@<version>`.
    pub id: String,
    /// Artifact name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Artifact type.
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// Build metadata.
    #[serde(default)]
    pub build_info: BuildInfo,
    /// Runtime requirements.
    #[serde(default)]
    pub requirements: Requirements,
    /// Signatures for verification.
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// Size in bytes.
    pub size: u64,
    /// Checksums by algorithm ("sha256" always present), lowercase hex.
    pub checksums: BTreeMap<String, String>,
    /// Where the store keeps the blob (store-specific URL, e.g. `file://...` or `s3://...`).
    pub storage_url: String,
    /// Platforms it runs on.
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// Upload time, Unix milliseconds.
    pub created_at: u64,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// For an `oci-image` that names a registry image instead of carrying a tarball: the
    /// reference (the blob is then its [`crate::image_ref::ImageSource::document`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The manifest digest that registry image must have, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

impl ArtifactMeta {
    /// The id FleetD gives an artifact version.
    pub fn make_id(name: &str, version: &str) -> String {
        format!("{name}@{version}")
    }

    /// The sha256 checksum, lowercase hex, if recorded.
    pub fn sha256(&self) -> Option<&str> {
        self.checksums.get("sha256").map(String::as_str)
    }

    /// The sha512 checksum, lowercase hex, if recorded.
    pub fn sha512(&self) -> Option<&str> {
        self.checksums.get("sha512").map(String::as_str)
    }

    /// The canonical manifest its signatures cover.
    pub fn signed_manifest(&self) -> Vec<u8> {
        crate::signing::canonical_manifest(&crate::signing::ManifestFields {
            name: &self.name,
            version: &self.version,
            kind: &self.kind,
            size: self.size,
            sha256: self.sha256().unwrap_or_default(),
            platforms: &self.platforms,
        })
    }
}

/// Validates an artifact or application name: 1 to 128 characters of ASCII letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit (names become path components).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1-128 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// Longest version string: versions become parts of file names (`<app>-<version>.partial`),
/// which file systems cap at 255 bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Validates a version: it must be a semantic version (e.g. `2.0.0`, `1.2.3-rc.1`) of at most
/// [`MAX_VERSION_LEN`] characters, which also makes it safe as a path component and gives
/// versions a total order.
pub fn validate_version(version: &str) -> Result<semver::Version, String> {
    if version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "version of {} characters is longer than {MAX_VERSION_LEN}",
            version.len()
        ));
    }
    semver::Version::parse(version)
        .map_err(|e| format!("version {version:?} is not a semantic version (e.g. 2.0.0): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        let p = Platform::parse("linux/arm/v7").expect("valid");
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        for bad in ["linux", "linux/", "/arm64", "a/b/c/d", "linux/arm 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_versions() {
        assert!(validate_name("my-app").is_ok());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_version("2.0.0").is_ok());
        assert!(validate_version("v2").is_err());
        assert!(validate_version("../1.0.0").is_err());
        let long = format!("1.0.0-{}", "a".repeat(300));
        let err = validate_version(&long).expect_err("too long");
        assert!(err.contains("longer than 64"), "{err}");
        assert!(validate_version(&format!("1.0.0-{}", "a".repeat(58))).is_ok());
    }

    #[test]
    fn artifact_type_json_name() {
        assert_eq!(
            serde_json::to_string(&ArtifactType::OciImage).expect("encodes"),
            "\"oci-image\""
        );
    }
}
