//! The configuration files of an app's spec, written before every start. Each is written to a
//! temporary file in the same directory, given its mode, fsynced and renamed over the target,
//! so after a power loss a file is either the old or the new content, never a torn mix.

use fleet_schema::app_spec::ConfigFile;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Mode of a file whose spec gives none.
pub const DEFAULT_MODE: u32 = 0o644;

/// Why a configuration file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A relative path that climbs out of the app's directory.
    #[error("config file path {0:?} leaves the app directory")]
    Escapes(String),
    /// I/O failed.
    #[error("cannot write config file {path}: {source}")]
    Io {
        /// The target.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Where a spec path lands: absolute paths as given, relative ones under `base`.
pub fn resolve(base: &Path, path: &str) -> Result<PathBuf, FileError> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(FileError::Escapes(path.to_string()));
    }
    Ok(base.join(p))
}

/// Writes every file atomically with its mode; relative paths are under `base`.
pub fn write_all(base: &Path, files: &[ConfigFile]) -> Result<(), FileError> {
    for f in files {
        let target = resolve(base, &f.path)?;
        write_atomic(
            &target,
            f.content.as_bytes(),
            f.mode.unwrap_or(DEFAULT_MODE),
        )?;
    }
    Ok(())
}

/// Writes `bytes` to `target` through a temporary sibling and a rename.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: target.to_path_buf(),
        source,
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.fleet-tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_with_their_modes_and_replaces_old_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let abs = dir.path().join("etc").join("abs.conf");
        let files = vec![
            ConfigFile {
                path: "conf/app.toml".into(),
                content: "port = 1\n".into(),
                mode: Some(0o600),
                secret: false,
            },
            ConfigFile {
                path: abs.to_string_lossy().into_owned(),
                content: "x".into(),
                mode: None,
                secret: false,
            },
        ];
        write_all(dir.path(), &files).expect("writes");
        let rel = dir.path().join("conf/app.toml");
        assert_eq!(std::fs::read_to_string(&rel).expect("read"), "port = 1\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&rel), 0o600);
        assert_eq!(mode(&abs), DEFAULT_MODE);
        write_atomic(&rel, b"port = 2\n", 0o640).expect("rewrites");
        assert_eq!(std::fs::read_to_string(&rel).expect("read"), "port = 2\n");
        assert_eq!(mode(&rel), 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(rel.parent().expect("dir"))
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("fleet-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind");
    }

    #[test]
    fn relative_paths_cannot_escape() {
        let base = Path::new("/apps/a/1");
        assert!(matches!(
            resolve(base, "../../etc/passwd"),
            Err(FileError::Escapes(_))
        ));
        assert_eq!(resolve(base, "./x").expect("ok"), base.join("./x"));
    }
}
