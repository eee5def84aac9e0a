//! Keeps an external Mosquitto's password and ACL files in step with the identities and
//! tokens (`fleetd --mosquitto-dir DIR`): after every change (coalesced over half a second) it
//! rewrites `DIR/fleet.passwd` and `DIR/fleet.acl` atomically and runs the reload command
//! (`--mosquitto-reload`, e.g. `kill -HUP $(cat /run/mosquitto.pid)`), so a new device can
//! connect and a revoked one cannot.

use super::mosquitto::{render, Files, User};
use super::Trust;
use crate::db::{Db, DbError};
use fleet_schema::trust::tokens::{token_username, CONTROLLER_USERNAME};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// File names inside the directory.
pub const PASSWD_FILE: &str = "fleet.passwd";
/// ACL file name.
pub const ACL_FILE: &str = "fleet.acl";

/// Pause after a change before writing, so a burst of enrollments is one rewrite and reload.
const COALESCE: Duration = Duration::from_millis(500);

/// Where the files go and how Mosquitto is told.
#[derive(Debug, Clone)]
pub struct BrokerFiles {
    /// Directory of `fleet.passwd` and `fleet.acl`.
    pub dir: PathBuf,
    /// Shell command run after each rewrite.
    pub reload: Option<String>,
}

/// The controller's password-file entry, from its MQTT password.
pub fn controller_user(password: &str) -> Result<User, String> {
    Ok(User {
        name: CONTROLLER_USERNAME.to_string(),
        hash: super::mosquitto::hash_password(password).map_err(|e| e.to_string())?,
    })
}

/// Renders the files from the database.
pub fn current(db: &Db, controller: &User) -> Result<Files, DbError> {
    let now = crate::clock::now_ms();
    let tokens: Vec<User> = db
        .tokens()?
        .into_iter()
        .filter(|t| t.is_valid(now))
        .filter_map(|t| {
            Some(User {
                name: token_username(&t.id),
                hash: t.mosquitto_hash?,
            })
        })
        .collect();
    let devices: Vec<User> = db
        .identities()?
        .into_iter()
        .filter(|r| r.is_active())
        .filter_map(|r| {
            Some(User {
                name: r.device_id,
                hash: r.mosquitto_hash?,
            })
        })
        .collect();
    Ok(render(controller, &tokens, &devices))
}

/// Both files are world-readable (0644): Mosquitto may run as its own user, the password file
/// holds only salted hashes of 256-bit random secrets, and the ACL holds no secret.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    super::controller_key::write_atomic(path, text.as_bytes(), 0o644)
}

/// Writes both files and runs the reload command.
async fn write_and_reload(cfg: &BrokerFiles, files: Files) -> Result<(), String> {
    let dir = cfg.dir.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join(PASSWD_FILE), &files.passwd)?;
        write_atomic(&dir.join(ACL_FILE), &files.acl)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| {
        format!(
            "cannot write the Mosquitto files in {}: {e}",
            cfg.dir.display()
        )
    })?;
    if let Some(cmd) = &cfg.reload {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .output(),
        )
        .await
        .map_err(|_| format!("reload command {cmd:?} did not finish within 30 s"))?
        .map_err(|e| format!("cannot run reload command {cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "reload command {cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Writes the files at start and after every change until shutdown.
pub async fn run(cfg: BrokerFiles, db: Db, trust: Arc<Trust>, shutdown: CancellationToken) {
    let controller = match controller_user(trust.mqtt_password()) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot hash the controller's MQTT password; Mosquitto files not written");
            return;
        }
    };
    loop {
        let c = controller.clone();
        match db.call(move |db| current(db, &c)).await {
            Ok(files) => match write_and_reload(&cfg, files).await {
                Ok(()) => {
                    tracing::info!(dir = %cfg.dir.display(), "Mosquitto password and ACL files written")
                }
                Err(e) => tracing::error!(error = %e, "Mosquitto files not updated"),
            },
            Err(e) => tracing::error!(error = %e, "cannot read identities for the Mosquitto files"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = trust.changed.notified() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(COALESCE) => {}
        }
    }
}
