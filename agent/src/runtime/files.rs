//! The configuration files of an app's spec, written before every start. Each is written to a
//! temporary file in the same directory, given its mode, fsynced and renamed over the target,
//! so after a power loss a file is either the old or the new content, never a torn mix.

use crate::confine::{self, ConfineError, Links, Missing};
use fleet_schema::app_spec::ConfigFile;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{Mode, SFlag};
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
    /// A relative path reaches outside the version directory through links (or is refused
    /// for another reason on the way).
    #[error("{what}: {source}")]
    Confined {
        /// What the path is for ("config file \"a/b\"", "entry point ...").
        what: String,
        /// What the walk met.
        source: ConfineError,
    },
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

/// Writes every file atomically with its mode; relative paths are under `base`, reached
/// without following any link out of it (see [`write_confined`]).
pub fn write_all(base: &Path, files: &[ConfigFile]) -> Result<(), FileError> {
    for f in files {
        let target = resolve(base, &f.path)?;
        let mode = f.mode.unwrap_or(DEFAULT_MODE);
        match target.strip_prefix(base) {
            Ok(rel) if Path::new(&f.path).is_relative() => {
                write_confined(base, rel, f.content.as_bytes(), mode)?
            }
            _ => write_atomic(&target, f.content.as_bytes(), mode)?,
        }
    }
    Ok(())
}

/// Writes `bytes` to `rel` below `base` like [`write_atomic`], but every directory is walked
/// by descriptor (see [`crate::confine`]): links that stay inside are followed, one that leads
/// out is refused naming the file, and the temporary file and the rename never follow a link.
pub fn write_confined(base: &Path, rel: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let what = format!("config file {:?}", rel.display().to_string());
    let found = confine::walk(base, rel, Links::Follow, Missing::Create).map_err(|source| {
        FileError::Confined {
            what: what.clone(),
            source,
        }
    })?;
    let target = base.join(&found.rel);
    let io = |e: nix::errno::Errno| FileError::Io {
        path: target.clone(),
        source: std::io::Error::from_raw_os_error(e as i32),
    };
    let name = match (&found.name, found.kind) {
        (Some(n), None | Some(SFlag::S_IFREG)) => n.clone(),
        _ => return Err(io(nix::errno::Errno::EISDIR)),
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(&name);
    tmp.push(".fleet-tmp");
    let fd = openat(
        &found.dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io)?;
    let mut f = std::fs::File::from(fd);
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all());
    let renamed = written
        .map_err(|source| FileError::Io {
            path: target.clone(),
            source,
        })
        .and_then(|()| {
            renameat(&found.dir, tmp.as_os_str(), &found.dir, name.as_os_str()).map_err(io)
        });
    if renamed.is_err() {
        let _ = nix::unistd::unlinkat(
            &found.dir,
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    renamed?;
    let _ = std::fs::File::from(found.dir).sync_all();
    Ok(())
}

/// The program to execute for a version: `entry` (the spec's entry point) or `<app>`, resolved
/// inside `vdir` to its physical path, so the exec cannot follow a link out of the version.
/// An absolute entry point, and an `<app>` the agent linked to an absolute path (a package's
/// or nix closure's program, never an archive's: extraction refuses absolute links), are taken
/// as they are.
pub fn program(vdir: &Path, entry: Option<&str>, app: &str) -> Result<PathBuf, FileError> {
    let rel = match entry {
        Some(e) if Path::new(e).is_absolute() => return Ok(PathBuf::from(e)),
        Some(e) => e,
        None => {
            let launcher = vdir.join(app);
            if std::fs::read_link(&launcher).is_ok_and(|t| t.is_absolute()) {
                return Ok(launcher);
            }
            app
        }
    };
    let path = resolve(vdir, rel)?;
    let rel = path.strip_prefix(vdir).unwrap_or(Path::new(rel));
    let what = format!("entry point {rel:?}");
    let (_, physical) = confine::open_file(vdir, rel, OFlag::O_RDONLY)
        .map_err(|source| FileError::Confined { what, source })?;
    Ok(vdir.join(physical))
}

/// The working directory `dir` (relative to `vdir`, or absolute as given), resolved inside
/// `vdir` without following a link out of it.
pub fn workdir(vdir: &Path, dir: &str) -> Result<PathBuf, FileError> {
    if Path::new(dir).is_absolute() {
        return Ok(PathBuf::from(dir));
    }
    let path = resolve(vdir, dir)?;
    let rel = path.strip_prefix(vdir).unwrap_or(Path::new(dir));
    let found = confine::walk(vdir, rel, Links::Follow, Missing::LastOnly).map_err(|source| {
        FileError::Confined {
            what: format!("working directory {dir:?}"),
            source,
        }
    })?;
    Ok(vdir.join(found.rel))
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
