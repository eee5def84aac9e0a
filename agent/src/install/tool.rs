//! What the installers that drive a system tool share: running the tool (dpkg, rpm, apk,
//! nix-store, docker/podman) with its failure turned into an install error that carries the
//! tool's stderr, and writing the executable launcher `<app>` a version directory holds.

use crate::install::InstallError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs a tool and returns its trimmed stdout; a failure to start it or a non-zero exit is an
/// install error naming the tool (`what`) and carrying its stderr. Stdin is closed unless the
/// caller gave the command one.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<String, InstallError> {
    let out = cmd
        .output()
        .map_err(|e| InstallError::Package(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Package(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `script` as the executable launcher at `path` (mode 0755).
pub(crate) fn write_launcher(path: &Path, script: &str) -> Result<(), InstallError> {
    fs::write(path, script)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|source| InstallError::Io {
            context: format!("cannot write launcher {}", path.display()),
            source,
        })
}
