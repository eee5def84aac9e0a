//! Moves a verified download into `apps/<app>/<version>/<app>` so that a power loss leaves
//! either the complete version directory or none (stage, fsync, atomic rename, fsync the
//! parent), and prunes versions other than the new, current and running ones.

use crate::layout;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
#[error("install failed: {context}: {source}")]
pub struct InstallError {
    context: String,
    source: std::io::Error,
}

fn err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError { context, source }
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(format!("cannot sync {}", dir.display())))
}

/// Installs `downloaded` as `version` of `app`, keeping only `version` and `keep` afterwards.
/// Returns the executable's path.
pub fn install(
    data: &Path,
    app: &str,
    version: &str,
    downloaded: &Path,
    keep: &BTreeSet<String>,
) -> Result<PathBuf, InstallError> {
    let app_dir = layout::app_dir(data, app);
    fs::create_dir_all(&app_dir).map_err(err(format!("cannot create {}", app_dir.display())))?;
    let staging = app_dir.join(format!(".{version}.staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(err("cannot clear staging directory"))?;
    }
    fs::create_dir(&staging).map_err(err("cannot create staging directory"))?;
    let staged_exe = staging.join(app);
    fs::rename(downloaded, &staged_exe).map_err(err(format!(
        "cannot move {} into place",
        downloaded.display()
    )))?;
    fs::set_permissions(&staged_exe, fs::Permissions::from_mode(0o755))
        .map_err(err("cannot make the binary executable"))?;
    File::open(&staged_exe)
        .and_then(|f| f.sync_all())
        .map_err(err("cannot sync the binary"))?;
    sync_dir(&staging)?;
    let target = layout::version_dir(data, app, version);
    if target.exists() {
        fs::remove_dir_all(&target).map_err(err(format!("cannot replace {}", target.display())))?;
    }
    fs::rename(&staging, &target)
        .map_err(err(format!("cannot rename into {}", target.display())))?;
    sync_dir(&app_dir)?;
    if let Some(downloads) = downloaded.parent() {
        let _ = sync_dir(downloads);
    }
    prune(&app_dir, version, keep);
    Ok(layout::executable(data, app, version))
}

/// Deletes version directories (and stale staging directories) other than `version` and `keep`.
fn prune(app_dir: &Path, version: &str, keep: &BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(app_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == version || keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed old version"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove old version")
            }
        }
    }
}

/// Deletes everything the agent keeps for an app that is no longer desired.
pub fn remove_app(data: &Path, app: &str) -> std::io::Result<()> {
    let dir = layout::app_dir(data, app);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_atomically_and_keeps_current_and_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        for (v, keep) in [
            ("1.0.0", vec![]),
            ("2.0.0", vec!["1.0.0"]),
            ("3.0.0", vec!["2.0.0"]),
        ] {
            let dl = layout::partial(data, "web", v);
            fs::create_dir_all(dl.parent().expect("parent")).expect("mkdir");
            fs::write(&dl, v.as_bytes()).expect("write");
            let keep = keep.into_iter().map(String::from).collect();
            let exe = install(data, "web", v, &dl, &keep).expect("installs");
            assert_eq!(exe, layout::executable(data, "web", v));
            let mode = fs::metadata(&exe).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
            assert!(!dl.exists());
        }
        let mut left: Vec<String> = fs::read_dir(layout::app_dir(data, "web"))
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.0.0", "3.0.0"]);
        remove_app(data, "web").expect("removes");
        assert!(!layout::app_dir(data, "web").exists());
        remove_app(data, "web").expect("idempotent");
    }
}
