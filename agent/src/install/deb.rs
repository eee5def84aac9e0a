//! Debian packages: installed with the system's `dpkg`. The `.deb` is kept in the version
//! directory, and `<app>` there is a small launcher that reinstalls that exact package when the
//! system holds another version of it (a rollback to the kept previous version reinstalls it,
//! with no download) and then executes the entry point (`runtime.entrypoint`, default
//! `/usr/bin/<app>`). A device without dpkg lacks the `deb` capability and refuses the
//! artifact before downloading it.

use crate::install::tool::{run, write_launcher};
use crate::install::InstallError;
use std::fs;
use std::path::Path;
use std::process::Command;

/// File name of the kept package inside the version directory.
pub const PACKAGE_FILE: &str = "package.deb";

/// Quotes a string for a POSIX shell script.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Installs the package and writes the launcher into `staging`.
pub fn stage_deb(
    app: &str,
    downloaded: &Path,
    staging: &Path,
    entrypoint: Option<&str>,
) -> Result<(), InstallError> {
    let kept = staging.join(PACKAGE_FILE);
    fs::rename(downloaded, &kept).map_err(|source| InstallError::Io {
        context: format!("cannot move {} into place", downloaded.display()),
        source,
    })?;
    let package = run(
        Command::new("dpkg-deb").arg("-f").arg(&kept).arg("Package"),
        "dpkg-deb -f (reading the package name)",
    )?;
    if package.is_empty() {
        return Err(InstallError::Package(
            "the .deb has no Package field".into(),
        ));
    }
    run(
        Command::new("dpkg")
            .arg("-i")
            .arg(&kept)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "dpkg -i",
    )?;
    let entry = entrypoint
        .map(str::to_string)
        .unwrap_or_else(|| format!("/usr/bin/{app}"));
    if !Path::new(&entry).is_absolute() || !Path::new(&entry).is_file() {
        return Err(InstallError::Entrypoint(format!(
            "entry point {entry:?} of package {package} is not an installed file (set runtime.entrypoint to its absolute path)"
        )));
    }
    let script = format!(
        "#!/bin/sh\n# Written by fleet-agent: make sure this version's package is the installed one, then run it.\nset -e\ndir=$(dirname \"$0\")\nwant=$(dpkg-deb -f \"$dir/{PACKAGE_FILE}\" Version)\nhave=$(dpkg-query -W -f '${{Version}}' {pkg} 2>/dev/null || true)\nif [ \"$have\" != \"$want\" ]; then DEBIAN_FRONTEND=noninteractive dpkg -i \"$dir/{PACKAGE_FILE}\" >&2; fi\nexec {entry} \"$@\"\n",
        pkg = sh_quote(&package),
        entry = sh_quote(&entry),
    );
    write_launcher(&staging.join(app), &script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn a_file_that_is_not_a_package_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("x.deb");
        std::fs::write(&dl, b"not a deb").expect("write");
        let staging = dir.path().join("s");
        std::fs::create_dir(&staging).expect("mkdir");
        let err = stage_deb("x", &dl, &staging, None).expect_err("refused");
        assert!(matches!(err, InstallError::Package(_)), "{err}");
    }
}
