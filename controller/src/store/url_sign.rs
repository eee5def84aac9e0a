//! Expiring, HMAC-signed download URLs for blobs fleetd serves itself (the filesystem store).
//! A URL names the artifact version, an expiry (Unix seconds) and an HMAC-SHA256 over both, so
//! fleetd can check a download without any state and a leaked URL stops working once expired.
//! The key is generated once and kept in the store directory (mode 0600), so URLs survive a
//! restart of fleetd.

use super::StoreError;
use ring::hmac;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Default lifetime of a download URL.
pub const DEFAULT_URL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a download URL is refused (HTTP 403); the text tells a device what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// No `expires` or `sig` query parameter.
    #[error("download URL is not signed (missing `expires` or `sig`); ask GET /api/v1/artifacts/{{name}}/{{version}}/url for a signed one")]
    Unsigned,
    /// The URL's lifetime is over.
    #[error("download URL expired at {expired_at} (Unix seconds, now {now}); ask GET /api/v1/artifacts/{{name}}/{{version}}/url for a fresh one")]
    Expired {
        /// Expiry in the URL.
        expired_at: u64,
        /// Server time.
        now: u64,
    },
    /// The HMAC does not match (forged or altered URL, or a key from another fleetd).
    #[error("download URL signature is invalid for this artifact and expiry")]
    BadSignature,
}

/// Signs and checks download URLs.
#[derive(Clone)]
pub struct UrlSigner {
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner").field("ttl", &self.ttl).finish()
    }
}

/// Now in Unix seconds.
pub fn now_secs() -> u64 {
    crate::clock::now_ms() / 1000
}

impl UrlSigner {
    /// Reads the 32-byte key at `path`, creating it (random, mode 0600) on first use.
    pub fn load_or_create(path: &Path, ttl: Duration) -> Result<Self, StoreError> {
        let io = |what: &str| {
            let context = format!("cannot {what} download-URL key {}", path.display());
            move |reason| StoreError::Io { context, reason }
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io("create"))?;
                f.write_all(&key).map_err(io("write"))?;
                f.sync_all().map_err(io("sync"))?;
                key.to_vec()
            }
            Err(e) => return Err(io("read")(e)),
        };
        if bytes.len() != 32 {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                reason: format!(
                    "download-URL key must be 32 bytes, found {}; delete it to generate a new one (outstanding URLs stop working)",
                    bytes.len()
                ),
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            ttl,
        })
    }

    /// How long a new URL stays valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns a signer with another URL lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn mac(&self, name: &str, version: &str, expires: u64) -> hmac::Tag {
        let msg = format!("fleetd-download-v1\n{name}\n{version}\n{expires}");
        hmac::sign(&self.key, msg.as_bytes())
    }

    /// The query string (`expires=..&sig=..`) of a URL valid until `now + ttl`, and that
    /// expiry in Unix seconds.
    pub fn query(&self, name: &str, version: &str, now: u64) -> (String, u64) {
        let expires = now.saturating_add(self.ttl.as_secs().max(1));
        let sig = hex::encode(self.mac(name, version, expires).as_ref());
        (format!("expires={expires}&sig={sig}"), expires)
    }

    /// Checks a download request's `expires` and `sig` at time `now`.
    pub fn check(
        &self,
        name: &str,
        version: &str,
        expires: Option<u64>,
        sig: Option<&str>,
        now: u64,
    ) -> Result<(), UrlRefusal> {
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(UrlRefusal::Unsigned);
        };
        let sig = hex::decode(sig).map_err(|_| UrlRefusal::BadSignature)?;
        let msg = format!("fleetd-download-v1\n{name}\n{version}\n{expires}");
        hmac::verify(&self.key, msg.as_bytes(), &sig).map_err(|_| UrlRefusal::BadSignature)?;
        if expires < now {
            return Err(UrlRefusal::Expired {
                expired_at: expires,
                now,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_expire_and_forgeries_fail_and_the_key_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let s = UrlSigner::load_or_create(&path, Duration::from_secs(60)).expect("creates");
        let (q, exp) = s.query("app", "1.0.0", 1000);
        assert_eq!(exp, 1060);
        let sig = q.split("sig=").nth(1).expect("sig");
        assert_eq!(s.check("app", "1.0.0", Some(exp), Some(sig), 1059), Ok(()));
        assert!(matches!(
            s.check("app", "1.0.0", Some(exp), Some(sig), 1061),
            Err(UrlRefusal::Expired { .. })
        ));
        // Extending the expiry or switching the version breaks the HMAC.
        assert_eq!(
            s.check("app", "1.0.0", Some(exp + 100), Some(sig), 1061),
            Err(UrlRefusal::BadSignature)
        );
        assert_eq!(
            s.check("app", "2.0.0", Some(exp), Some(sig), 1000),
            Err(UrlRefusal::BadSignature)
        );
        assert_eq!(
            s.check("app", "1.0.0", None, Some(sig), 1000),
            Err(UrlRefusal::Unsigned)
        );
        let again = UrlSigner::load_or_create(&path, Duration::from_secs(60)).expect("loads");
        assert_eq!(
            again.check("app", "1.0.0", Some(exp), Some(sig), 1000),
            Ok(())
        );
        std::fs::write(&path, b"short").expect("write");
        assert!(UrlSigner::load_or_create(&path, Duration::from_secs(1)).is_err());
    }
}
