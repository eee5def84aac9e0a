//! This device's identity (see "Security model" in `docs/architecture.md`):
//! - its ed25519 key pair, generated at first start in `<data>/device.key` (0600) and never
//!   sent anywhere; it signs everything the agent publishes ([`signer`]);
//! - its enrollment ([`enroll`], [`record`]): the controller key it pinned, the bus key it shares
//!   with the controller (desired states arrive encrypted under it) and its MQTT credentials,
//!   kept in `<data>/enrollment.json` (0600).

pub mod enroll;
pub mod files;
pub mod record;
pub mod signer;

use fleet_schema::trust::SigningKey;
use record::EnrollmentRecord;
use std::path::Path;
use std::time::Duration;

/// Loads the device key, or creates it (0600) at first start.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, String> {
    match files::read_private(path).map_err(|e| format!("device key: {e}"))? {
        Some(bytes) => SigningKey::from_pkcs8(&bytes)
            .map_err(|e| format!("device key {}: {e}", path.display())),
        None => {
            let (key, pkcs8) = SigningKey::generate().map_err(|e| e.to_string())?;
            files::write_private(path, &pkcs8)
                .map_err(|e| format!("device key {}: {e}", path.display()))?;
            tracing::info!(key_id = key.id(), path = %path.display(), "created the device key");
            Ok(key)
        }
    }
}

/// Loads a 32-byte secret kept in `path` (0600), or creates it.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], String> {
    if let Some(bytes) = files::read_private(path).map_err(|e| e.to_string())? {
        if let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(arr);
        }
        tracing::warn!(path = %path.display(), "secret file has the wrong length; making a new one");
    }
    let secret: [u8; 32] = fleet_schema::trust::keys::random_bytes().map_err(|e| e.to_string())?;
    files::write_private(path, &secret).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret)
}

/// Asks to enroll until accepted (or until `stop` completes: `None`). Pending requests are
/// asked again every 10 to 60 s; refused ones every 5 minutes (an operator may reset the
/// device or make a new token meanwhile); unreachable controllers with growing delays.
pub async fn enroll_until_accepted(
    mut asker: enroll::Asker,
    inventory: fleet_schema::Inventory,
    stop: impl std::future::Future<Output = ()>,
) -> Option<EnrollmentRecord> {
    tokio::pin!(stop);
    let mut pending =
        fleet_schema::backoff::Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
    let mut failing =
        fleet_schema::backoff::Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    loop {
        let now = crate::bus::now_millis();
        let (a, inv) = (asker.clone(), inventory.clone());
        // The request blocks on the network: run it off the event loop, bounded by `stop`.
        let outcome = tokio::select! {
            _ = &mut stop => return None,
            o = tokio::task::spawn_blocking(move || enroll::attempt(&a, inv, now)) => match o {
                Ok(o) => o,
                Err(e) => enroll::Attempt::Failed(e.to_string()),
            },
        };
        asker.last_at = now.max(asker.last_at + 1);
        let delay = match outcome {
            enroll::Attempt::Enrolled(rec) => {
                tracing::info!(device = %asker.device, user = %rec.mqtt_username, "enrolled; controller key pinned");
                return Some(rec);
            }
            enroll::Attempt::Pending(msg) => {
                failing.reset();
                let d = pending.next_delay();
                tracing::warn!(device = %asker.device, retry_in_s = d.as_secs(), "enrollment pending: {msg}");
                d
            }
            enroll::Attempt::Refused(msg) => {
                tracing::error!(device = %asker.device, "enrollment refused: {msg}; asking again in 5 minutes");
                Duration::from_secs(300)
            }
            enroll::Attempt::Failed(msg) => {
                let d = failing.next_delay();
                tracing::warn!(device = %asker.device, retry_in_s = d.as_secs(), "enrollment failed: {msg}");
                d
            }
        };
        tokio::select! {
            _ = &mut stop => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
