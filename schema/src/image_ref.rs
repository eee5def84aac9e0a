//! Registry references for `oci-image` artifacts. Instead of carrying an image tarball, an
//! `oci-image` artifact may name an image in a registry (`registry.example:5000/app@sha256:..`
//! or a tag). fleetd then stores a tiny *image reference document* as the artifact's blob
//! ([`ImageSource::document`]): its sha256 (and so the artifact's signatures) binds the
//! reference, devices download and verify it like any blob, and the agent pulls the image with
//! the device's container engine instead of loading a tarball. This module validates
//! references (the clear error names what is wrong) and reads and writes the document.

use serde::{Deserialize, Serialize};

/// The `mediaType` of an image reference document.
pub const DOCUMENT_MEDIA_TYPE: &str = "application/vnd.fleetd.image-reference.v1+json";

/// Largest blob the agent reads as a reference document (a tarball is far larger).
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;

/// The capability an agent reports when it can pull registry references (fleetd adds it to
/// such an artifact's requirements, so older agents are refused at deployment).
pub const PULL_CAPABILITY: &str = "oci-pull";

/// Longest repository name (registry host included) engines accept.
const MAX_NAME_LEN: usize = 255;

/// Why an image reference or digest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Nothing was given.
    #[error("image reference is empty (expected e.g. registry.example:5000/app@sha256:<64 hex>)")]
    Empty,
    /// Whitespace or control characters.
    #[error("image reference {0:?} contains whitespace or control characters")]
    Whitespace(String),
    /// The digest is not `sha256:` and 64 lowercase hex characters.
    #[error("digest {digest:?} of image reference {reference:?} is not sha256: followed by 64 lowercase hex characters")]
    BadDigest {
        /// The reference (or `--image-digest`) that carried it.
        reference: String,
        /// The malformed digest.
        digest: String,
    },
    /// The tag is malformed.
    #[error("tag {tag:?} of image reference {reference:?} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")]
    BadTag {
        /// The reference.
        reference: String,
        /// The malformed tag.
        tag: String,
    },
    /// The registry host (and port) is malformed.
    #[error("registry {registry:?} of image reference {reference:?} is not HOST or HOST:PORT")]
    BadRegistry {
        /// The reference.
        reference: String,
        /// The malformed registry part.
        registry: String,
    },
    /// A repository path component is malformed.
    #[error("repository path component {component:?} of image reference {reference:?} must be lowercase letters and digits, separated by '.', '_', '__' or dashes")]
    BadPath {
        /// The reference.
        reference: String,
        /// The malformed component.
        component: String,
    },
    /// The repository name is too long.
    #[error("repository name of image reference {0:?} is longer than 255 characters")]
    TooLong(String),
    /// The reference's digest and the separately given one differ.
    #[error("image reference {reference:?} is pinned to {pinned} but the given digest is {given}")]
    DigestConflict {
        /// The reference.
        reference: String,
        /// Its own digest.
        pinned: String,
        /// The other digest.
        given: String,
    },
}

/// A parsed image reference: `[registry[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host and port, when the reference names one.
    pub registry: Option<String>,
    /// Repository name including the registry (what `pull` takes before `:tag` / `@digest`).
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if pinned.
    pub digest: Option<String>,
}

/// Checks a digest: `sha256:` and 64 lowercase hex characters. `reference` names where it came
/// from in the error.
pub fn validate_digest(digest: &str, reference: &str) -> Result<(), ImageRefError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::BadDigest {
            reference: reference.to_string(),
            digest: digest.to_string(),
        })
    }
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn valid_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    !c.is_empty()
        && c.starts_with(alnum)
        && c.ends_with(alnum)
        && c.chars()
            .all(|ch| alnum(ch) || matches!(ch, '.' | '_' | '-'))
        && !c.contains("..")
        && !c.contains("___")
        && !c.contains(".-")
        && !c.contains("-.")
        && !c.contains("._")
        && !c.contains("_.")
        && !c.contains("_-")
        && !c.contains("-_")
}

impl ImageRef {
    /// Parses and validates a reference; the error names the part that is wrong.
    pub fn parse(reference: &str) -> Result<Self, ImageRefError> {
        if reference.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ImageRefError::Whitespace(reference.to_string()));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, d)) => {
                validate_digest(d, reference)?;
                (rest, Some(d.to_string()))
            }
            None => (reference, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag.filter(|t| !valid_tag(t)) {
            return Err(ImageRefError::BadTag {
                reference: reference.to_string(),
                tag: tag.to_string(),
            });
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = match parts.first() {
            Some(first)
                if parts.len() > 1
                    && (first.contains(['.', ':'])
                        || *first == "localhost"
                        || first.chars().any(|c| c.is_ascii_uppercase())) =>
            {
                if !valid_registry(first) {
                    return Err(ImageRefError::BadRegistry {
                        reference: reference.to_string(),
                        registry: (*first).to_string(),
                    });
                }
                Some(parts.remove(0).to_string())
            }
            _ => None,
        };
        if let Some(bad) = parts.iter().find(|c| !valid_component(c)) {
            return Err(ImageRefError::BadPath {
                reference: reference.to_string(),
                component: (*bad).to_string(),
            });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ImageRefError::TooLong(reference.to_string()));
        }
        Ok(Self {
            registry,
            repository: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// True when the registry is this device itself (`localhost`, `127.0.0.0/8`, `[::1]`):
    /// Docker allows plain HTTP there by default, and the agent tells Podman the same.
    pub fn is_loopback_registry(&self) -> bool {
        let Some(reg) = &self.registry else {
            return false;
        };
        let host = match reg.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => reg.as_str(),
        };
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Where an `oci-image` artifact's image comes from: a validated reference and the digest it
/// must have (the reference's own, or one recorded beside a tag at push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    /// The reference as given (tag and/or digest).
    pub image: String,
    /// The manifest digest the pulled image must have, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The document stored as the blob of a registry-reference artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(rename = "mediaType")]
    media_type: String,
    image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

impl ImageSource {
    /// Validates `image` and an optional separately given `digest` (which must agree with a
    /// digest in the reference).
    pub fn new(image: &str, digest: Option<&str>) -> Result<Self, ImageRefError> {
        let parsed = ImageRef::parse(image)?;
        if let Some(d) = digest {
            validate_digest(d, image)?;
        }
        let digest = match (parsed.digest, digest) {
            (Some(pinned), Some(given)) if pinned != given => {
                return Err(ImageRefError::DigestConflict {
                    reference: image.to_string(),
                    pinned,
                    given: given.to_string(),
                })
            }
            (pinned, given) => pinned.or_else(|| given.map(str::to_string)),
        };
        Ok(Self {
            image: image.to_string(),
            digest,
        })
    }

    /// The parsed reference (valid by construction).
    pub fn reference(&self) -> Result<ImageRef, ImageRefError> {
        ImageRef::parse(&self.image)
    }

    /// What to pull: `repository@digest` when the digest is known (the engine then verifies
    /// the content, whatever the tag points to now), the reference as given otherwise.
    pub fn pull_target(&self) -> Result<String, ImageRefError> {
        let r = self.reference()?;
        Ok(match &self.digest {
            Some(d) => format!("{}@{d}", r.repository),
            None => self.image.clone(),
        })
    }

    /// The canonical document bytes (deterministic: fleetctl signs exactly these).
    pub fn document(&self) -> Vec<u8> {
        let doc = Document {
            media_type: DOCUMENT_MEDIA_TYPE.to_string(),
            image: self.image.clone(),
            digest: self.digest.clone(),
        };
        let mut out = serde_json::to_vec(&doc).expect("a struct of strings always encodes");
        out.push(b'\n');
        out
    }

    /// Reads a document; `None` when `bytes` are not one (e.g. an image tarball), an error
    /// naming the problem when they claim to be one but are malformed.
    pub fn from_document(bytes: &[u8]) -> Option<Result<Self, String>> {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
        if bytes[start] != b'{' || bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return None;
        }
        Some((|| {
            let doc: Document = serde_json::from_slice(bytes)
                .map_err(|e| format!("image reference document is malformed: {e}"))?;
            if doc.media_type != DOCUMENT_MEDIA_TYPE {
                return Err(format!(
                    "image reference document has mediaType {:?}, expected {DOCUMENT_MEDIA_TYPE:?}",
                    doc.media_type
                ));
            }
            Self::new(&doc.image, doc.digest.as_deref()).map_err(|e| e.to_string())
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_into_their_parts() {
        let r = ImageRef::parse(&format!("registry.example:5000/team/app:1.2@{D}")).expect("ok");
        assert_eq!(r.registry.as_deref(), Some("registry.example:5000"));
        assert_eq!(r.repository, "registry.example:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = ImageRef::parse("busybox").expect("ok");
        assert_eq!((r.registry, r.tag, r.digest), (None, None, None));
        let r = ImageRef::parse("localhost/app:v1").expect("ok");
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        assert!(r.is_loopback_registry());
        assert!(ImageRef::parse("127.0.0.1:5000/a:1")
            .expect("ok")
            .is_loopback_registry());
        assert!(!ImageRef::parse("registry.example/a")
            .expect("ok")
            .is_loopback_registry());
        assert!(!ImageRef::parse("a/b").expect("ok").is_loopback_registry());
    }

    #[test]
    fn bad_references_name_the_problem() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        let e = ImageRef::parse("reg.example/app :1").expect_err("space");
        assert!(e.to_string().contains("whitespace"), "{e}");
        let e = ImageRef::parse("reg.example/app@sha256:abc").expect_err("short digest");
        assert!(e.to_string().contains("digest \"sha256:abc\""), "{e}");
        let e = ImageRef::parse(&format!("app@{}", D.to_uppercase())).expect_err("uppercase");
        assert!(matches!(e, ImageRefError::BadDigest { .. }), "{e}");
        let e = ImageRef::parse("reg.example/App:1").expect_err("uppercase path");
        assert!(e.to_string().contains("\"App\""), "{e}");
        let e = ImageRef::parse("reg.example:99999/app").expect_err("port");
        assert!(
            e.to_string().contains("registry \"reg.example:99999\""),
            "{e}"
        );
        let e = ImageRef::parse("reg.example/app:-x").expect_err("tag");
        assert!(e.to_string().contains("tag \"-x\""), "{e}");
        assert!(ImageRef::parse("reg.example//app").is_err());
        assert!(ImageRef::parse(&format!("a/{}", "b".repeat(300))).is_err());
    }

    #[test]
    fn sources_pin_digests_and_round_trip_as_documents() {
        let s = ImageSource::new("127.0.0.1:5000/web:2.0.0", Some(D)).expect("ok");
        assert_eq!(
            s.pull_target().expect("valid"),
            format!("127.0.0.1:5000/web@{D}")
        );
        let doc = s.document();
        assert_eq!(doc, s.document(), "deterministic");
        assert!(doc.ends_with(b"\n"));
        assert_eq!(ImageSource::from_document(&doc), Some(Ok(s)));
        let tag_only = ImageSource::new("reg.example/web:2", None).expect("ok");
        assert_eq!(tag_only.pull_target().expect("valid"), "reg.example/web:2");
        let other = "sha256:".to_string() + &"f".repeat(64);
        let e =
            ImageSource::new(&format!("reg.example/web@{D}"), Some(&other)).expect_err("conflict");
        assert!(matches!(e, ImageRefError::DigestConflict { .. }), "{e}");
        assert!(ImageSource::new("reg.example/web", Some("md5:00")).is_err());
        // A tarball is not a document; a broken document is an error, not a tarball.
        assert_eq!(ImageSource::from_document(b"manifest.json\0\0\0"), None);
        assert_eq!(ImageSource::from_document(b""), None);
        assert!(matches!(
            ImageSource::from_document(br#"{"mediaType":"x","image":"a"}"#),
            Some(Err(e)) if e.contains("mediaType")
        ));
        assert!(matches!(
            ImageSource::from_document(
                format!(r#"{{"mediaType":"{DOCUMENT_MEDIA_TYPE}","image":"A B"}}"#).as_bytes()
            ),
            Some(Err(e)) if e.contains("whitespace")
        ));
    }
}
