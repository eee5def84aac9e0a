//! Nix packages (`nixpack`): realised with the device's own Nix tools. The artifact is either
//! an exported closure (`nix-store --export` output, imported with `nix-store --import`) or a
//! small text file naming one store path (`/nix/store/...`, realised from the device's
//! substituters with `nix-store --realise`). The store path is pinned against garbage
//! collection by an indirect root `<data>/nix-roots/<app>/<version>` (roots of versions the
//! agent no longer keeps are removed), and `<app>` in the version directory is a link to the
//! entry point, an absolute path inside the store path (`runtime.entrypoint`, default
//! `<store path>/bin/<app>`). A device without `nix-store` lacks the `nix` capability and the
//! install is refused naming it.

use crate::install::pkg::find_tool;
use crate::install::tool::run;
use crate::install::InstallError;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Longest artifact read as a store-path reference rather than a closure.
const MAX_REFERENCE: u64 = 4096;

/// What a nixpack artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NixSource {
    /// One store path to realise.
    StorePath(String),
    /// An exported closure to import.
    Closure,
}

/// Tells a store-path reference from an exported closure.
pub fn classify(bytes: &[u8]) -> Result<NixSource, InstallError> {
    if !bytes.starts_with(b"/nix/store/") {
        return Ok(NixSource::Closure);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| InstallError::Package("store path reference is not UTF-8".into()))?
        .trim();
    let valid = !text.contains(char::is_whitespace)
        && text.len() > "/nix/store/".len()
        && !text.split('/').any(|c| c == "..");
    if !valid {
        return Err(InstallError::Package(format!(
            "nixpack reference {text:?} is not a single /nix/store path"
        )));
    }
    Ok(NixSource::StorePath(text.to_string()))
}

/// Arguments of `nix-store` that make `path` present and pin it with the root `root`.
pub fn realise_args(path: &str, root: &Path) -> Vec<String> {
    vec![
        "--realise".into(),
        path.into(),
        "--add-root".into(),
        root.to_string_lossy().into_owned(),
        "--indirect".into(),
    ]
}

/// Arguments of `nix-store` that import a closure read from stdin.
pub fn import_args() -> Vec<String> {
    vec!["--import".into()]
}

/// The store path an import made available: the last path printed (the export's top path
/// comes last when exported with `nix-store --export $(nix-store -qR top)`) unless the entry
/// point names one.
pub fn imported_top(stdout: &str, entry: Option<&str>) -> Option<String> {
    let paths: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/nix/store/"))
        .collect();
    if let Some(e) = entry {
        if let Some(p) = paths.iter().find(|p| e.starts_with(&format!("{p}/"))) {
            return Some((*p).to_string());
        }
    }
    paths.last().map(|p| (*p).to_string())
}

/// One nixpack install.
#[derive(Debug, Clone)]
pub struct NixInstall<'a> {
    /// Data directory (for the GC roots).
    pub data: &'a Path,
    /// App name.
    pub app: &'a str,
    /// Version being installed.
    pub version: &'a str,
    /// Other versions kept (their roots stay).
    pub keep: &'a BTreeSet<String>,
    /// The verified download.
    pub downloaded: &'a Path,
    /// The staging directory (becomes the version directory).
    pub staging: &'a Path,
    /// Absolute entry point inside the store path.
    pub entrypoint: Option<&'a str>,
    /// `PATH` to find `nix-store` on.
    pub path: Option<&'a OsStr>,
}

/// Realises the artifact, pins it and links `<staging>/<app>` to the entry point.
pub fn stage_nix(n: &NixInstall<'_>) -> Result<(), InstallError> {
    let nix_store = find_tool("nix-store", n.path).ok_or_else(|| {
        InstallError::Package(
            "nix-store is not installed on this device, so it cannot install a nixpack".into(),
        )
    })?;
    if let Some(e) = n.entrypoint {
        if !e.starts_with("/nix/store/") {
            return Err(InstallError::Entrypoint(format!(
                "entry point {e:?} of a nixpack must be an absolute /nix/store path"
            )));
        }
    }
    let len = fs::metadata(n.downloaded).map_or(0, |m| m.len());
    let head = if len <= MAX_REFERENCE {
        fs::read(n.downloaded).map_err(|source| InstallError::Io {
            context: format!("cannot read {}", n.downloaded.display()),
            source,
        })?
    } else {
        Vec::new()
    };
    let path = match classify(&head)? {
        NixSource::StorePath(p) => p,
        NixSource::Closure => {
            let input = fs::File::open(n.downloaded).map_err(|source| InstallError::Io {
                context: format!("cannot open {}", n.downloaded.display()),
                source,
            })?;
            let out = run(
                Command::new(&nix_store)
                    .args(import_args())
                    .stdin(Stdio::from(input)),
                "nix-store --import",
            )?;
            imported_top(&out, n.entrypoint).ok_or_else(|| {
                InstallError::Package("nix-store --import imported no store path".into())
            })?
        }
    };
    let roots = n.data.join("nix-roots").join(n.app);
    fs::create_dir_all(&roots).map_err(|source| InstallError::Io {
        context: format!("cannot create {}", roots.display()),
        source,
    })?;
    let root = roots.join(n.version);
    run(
        Command::new(&nix_store).args(realise_args(&path, &root)),
        "nix-store --realise",
    )?;
    let entry = n
        .entrypoint
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&path).join("bin").join(n.app));
    if !entry.is_file() {
        return Err(InstallError::Entrypoint(format!(
            "entry point {} is not a file of {path} (set runtime.entrypoint)",
            entry.display()
        )));
    }
    std::os::unix::fs::symlink(&entry, n.staging.join(n.app)).map_err(|source| {
        InstallError::Io {
            context: "cannot link the entry point".into(),
            source,
        }
    })?;
    prune_roots(&roots, n.version, n.keep);
    Ok(())
}

/// Removes an app's roots (in `roots`) for versions other than `version` and `keep`.
fn prune_roots(roots: &Path, version: &str, keep: &BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(roots) else {
        return;
    };
    for e in entries.flatten() {
        let v = e.file_name().to_string_lossy().into_owned();
        if v != version && !keep.contains(&v) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_closures_are_told_apart() {
        assert_eq!(
            classify(b"/nix/store/abc-web-1.0\n").expect("reference"),
            NixSource::StorePath("/nix/store/abc-web-1.0".into())
        );
        assert_eq!(
            classify(b"\x01\x00\x00\x00nar").expect("closure"),
            NixSource::Closure
        );
        let e = classify(b"/nix/store/a b")
            .expect_err("two words")
            .to_string();
        assert!(e.contains("not a single /nix/store path"), "{e}");
        assert!(classify(b"/nix/store/../etc").is_err());
    }

    #[test]
    fn commands_are_the_documented_ones() {
        assert_eq!(
            realise_args("/nix/store/abc-web", Path::new("/d/nix-roots/web/1.0.0")),
            [
                "--realise",
                "/nix/store/abc-web",
                "--add-root",
                "/d/nix-roots/web/1.0.0",
                "--indirect"
            ]
        );
        assert_eq!(import_args(), ["--import"]);
    }

    #[test]
    fn the_top_path_is_the_entry_points_or_the_last_imported() {
        let out = "/nix/store/aaa-glibc\n/nix/store/bbb-web\n";
        assert_eq!(
            imported_top(out, None).as_deref(),
            Some("/nix/store/bbb-web")
        );
        assert_eq!(
            imported_top(out, Some("/nix/store/aaa-glibc/bin/ldd")).as_deref(),
            Some("/nix/store/aaa-glibc")
        );
        assert_eq!(imported_top("", None), None);
    }

    #[test]
    fn without_nix_store_the_install_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("web.nixpack");
        std::fs::write(&dl, b"/nix/store/abc-web\n").expect("write");
        let empty = dir.path().join("bin");
        std::fs::create_dir(&empty).expect("mkdir");
        let keep = BTreeSet::new();
        let n = NixInstall {
            data: dir.path(),
            app: "web",
            version: "1.0.0",
            keep: &keep,
            downloaded: &dl,
            staging: dir.path(),
            entrypoint: None,
            path: Some(empty.as_os_str()),
        };
        let e = stage_nix(&n).expect_err("refused").to_string();
        assert!(e.contains("nix-store is not installed"), "{e}");
        std::fs::write(empty.join("nix-store"), b"").expect("fake tool on PATH");
        let n = NixInstall {
            entrypoint: Some("/usr/bin/web"),
            ..n
        };
        let e = stage_nix(&n).expect_err("refused").to_string();
        assert!(e.contains("absolute /nix/store path"), "{e}");
    }

    #[test]
    fn roots_of_versions_no_longer_kept_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["1.0.0", "2.0.0", "3.0.0"] {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        let keep = BTreeSet::from(["2.0.0".to_string()]);
        prune_roots(dir.path(), "3.0.0", &keep);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.0.0", "3.0.0"]);
    }
}
