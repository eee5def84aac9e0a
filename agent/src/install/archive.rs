//! Unpacks archive artifacts (tar.gz, plain tar, zip) into a staging directory, refusing
//! anything that could write outside it or exhaust the device: `..` components, absolute
//! paths, links pointing outside, entries written through a link, device files and FIFOs, and
//! archives whose entry count or unpacked size exceeds the configured limits. Sizes are counted
//! from the bytes actually written, not from headers, so a lying header does not help.

use crate::confine::{self, ConfineError, Found, Links, Missing};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Entries of any kind (files, directories, links).
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why an archive was refused; each names the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry path climbs out with `..`.
    #[error("archive entry {0:?} contains '..' (path traversal)")]
    Traversal(String),
    /// An entry path is absolute.
    #[error("archive entry {0:?} has an absolute path")]
    Absolute(String),
    /// A symbolic or hard link points outside the target directory.
    #[error("archive entry {entry:?} is a link to {target:?}, outside the install directory")]
    LinkOutside {
        /// The link entry.
        entry: String,
        /// Where it points.
        target: String,
    },
    /// An entry would be written through (or over) a symbolic link.
    #[error("archive entry {0:?} would be written through a symbolic link")]
    ThroughLink(String),
    /// A path of the archive leads outside the install directory through its links.
    #[error("archive entry {entry:?}: {source}")]
    Confined {
        /// The entry.
        entry: String,
        /// What the walk met.
        source: ConfineError,
    },
    /// A device file or FIFO.
    #[error("archive entry {0:?} is a device file or FIFO, which is refused")]
    Device(String),
    /// Too many entries.
    #[error("archive has more than {max} entries (the configured limit)")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// Too many unpacked bytes.
    #[error("archive unpacks to more than {max} bytes (the configured limit)")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// Neither gzip, tar nor zip.
    #[error("artifact is not a tar.gz, tar or zip archive")]
    UnknownFormat,
    /// The archive is corrupt.
    #[error("archive is malformed: {0}")]
    Malformed(String),
    /// Local file trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// Unpacks `archive` into the existing, empty directory `dest`.
pub fn extract(archive: &Path, dest: &Path, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
    let mut magic = [0u8; 262];
    let n = File::open(archive)
        .and_then(|mut f| read_up_to(&mut f, &mut magic))
        .map_err(io_err(format!("cannot read {}", archive.display())))?;
    let file = File::open(archive).map_err(io_err(format!("cannot open {}", archive.display())))?;
    let mut out = Unpacker {
        dest,
        limits,
        entries: 0,
        bytes: 0,
        links: Vec::new(),
    };
    let unpacked = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        out.tar(flate2::read::GzDecoder::new(io::BufReader::new(file)))
    } else if n >= 4 && (magic[..4] == *b"PK\x03\x04" || magic[..4] == *b"PK\x05\x06") {
        out.zip(file)
    } else if n >= 262 && &magic[257..262] == b"ustar" {
        out.tar(io::BufReader::new(file))
    } else {
        Err(ArchiveError::UnknownFormat)
    };
    unpacked?;
    out.recheck_links()
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Checks an entry name and returns it as a relative path (`None` for the archive root).
pub fn safe_relative(name: &str) -> Result<Option<PathBuf>, ArchiveError> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(ArchiveError::Traversal(name.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Absolute(name.to_string()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// What an entry is, independent of the archive format.
enum Kind {
    Dir,
    File(u32),
    Symlink(String),
    HardLink(String),
    Device,
    Skip,
}

struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a ArchiveLimits,
    entries: u64,
    bytes: u64,
    /// Every link created (entry name, path, target), checked again once all exist.
    links: Vec<(String, PathBuf, String)>,
}

impl Unpacker<'_> {
    fn tar(&mut self, reader: impl Read) -> Result<(), ArchiveError> {
        let mut archive = tar::Archive::new(reader);
        let malformed = |e: io::Error| ArchiveError::Malformed(e.to_string());
        for entry in archive.entries().map_err(malformed)? {
            let mut entry = entry.map_err(malformed)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let kind = match entry.header().entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    Kind::File(entry.header().mode().unwrap_or(0o644))
                }
                tar::EntryType::Symlink => Kind::Symlink(link()),
                tar::EntryType::Link => Kind::HardLink(link()),
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => Kind::Device,
                _ => Kind::Skip,
            };
            self.entry(&name, kind, &mut entry)?;
        }
        Ok(())
    }

    fn zip(&mut self, file: File) -> Result<(), ArchiveError> {
        let malformed = |e: zip::result::ZipError| ArchiveError::Malformed(e.to_string());
        let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).map_err(malformed)?;
        for i in 0..archive.len() {
            let mut f = archive.by_index(i).map_err(malformed)?;
            let name = f.name().to_string();
            let mode = f.unix_mode();
            let kind = match mode.map(|m| m & 0o170000) {
                _ if f.is_dir() => Kind::Dir,
                Some(0o120000) => {
                    let mut target = String::new();
                    (&mut f)
                        .take(4096)
                        .read_to_string(&mut target)
                        .map_err(|e| ArchiveError::Malformed(format!("{name}: {e}")))?;
                    Kind::Symlink(target)
                }
                Some(0o020000 | 0o060000 | 0o010000 | 0o140000) => Kind::Device,
                _ => Kind::File(mode.unwrap_or(0o644)),
            };
            self.entry(&name, kind, &mut f)?;
        }
        Ok(())
    }

    /// Walks to `rel` below the destination without following any link, creating missing
    /// parent directories; a link on the way (or at `rel` itself) is refused.
    fn prepare(&self, name: &str, rel: &Path) -> Result<Found, ArchiveError> {
        confine::walk(self.dest, rel, Links::Refuse, Missing::Create).map_err(|e| match e {
            ConfineError::ThroughLink { .. } => ArchiveError::ThroughLink(name.to_string()),
            ConfineError::NotADirectory { .. } => {
                ArchiveError::Malformed(format!("entry {name:?} is below a file"))
            }
            source => ArchiveError::Confined {
                entry: name.to_string(),
                source,
            },
        })
    }

    /// Every link again, now that the whole archive is there: a link checked when it was made
    /// may have been redirected out by a link made later (`e -> s/..`, then `s -> d/up/...`).
    fn recheck_links(&self) -> Result<(), ArchiveError> {
        for (entry, rel, target) in &self.links {
            confine::walk(self.dest, rel, Links::Follow, Missing::Lexical).map_err(
                |e| match e {
                    ConfineError::Escapes { .. } => ArchiveError::LinkOutside {
                        entry: entry.clone(),
                        target: target.clone(),
                    },
                    source => ArchiveError::Confined {
                        entry: entry.clone(),
                        source,
                    },
                },
            )?;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, kind: Kind, data: &mut dyn Read) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        let Some(rel) = safe_relative(name)? else {
            return Ok(());
        };
        let sys = |what: &str| {
            let context = format!("cannot {what} {name}");
            move |e: nix::errno::Errno| ArchiveError::Io {
                context,
                source: io::Error::from_raw_os_error(e as i32),
            }
        };
        match kind {
            Kind::Skip => Ok(()),
            Kind::Device => Err(ArchiveError::Device(name.to_string())),
            Kind::Dir => {
                let at = self.prepare(name, &rel)?;
                match (&at.name, at.kind) {
                    (_, Some(SFlag::S_IFDIR)) => Ok(()),
                    (Some(n), None) => nix::sys::stat::mkdirat(
                        &at.dir,
                        n.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                    .map_err(sys("create directory")),
                    _ => Err(ArchiveError::Malformed(format!(
                        "entry {name:?} is a directory over a file"
                    ))),
                }
            }
            Kind::Symlink(target) => {
                confine::check_link(self.dest, &rel, target.as_ref()).map_err(|_| {
                    ArchiveError::LinkOutside {
                        entry: name.to_string(),
                        target: target.clone(),
                    }
                })?;
                let at = self.prepare(name, &rel)?;
                let link = self.fresh_name(name, &at)?;
                symlinkat(target.as_str(), &at.dir, link.as_os_str())
                    .map_err(sys("create link"))?;
                self.links.push((name.to_string(), rel, target));
                Ok(())
            }
            Kind::HardLink(target) => {
                let source = match safe_relative(&target) {
                    Ok(Some(t)) => t,
                    _ => {
                        return Err(ArchiveError::LinkOutside {
                            entry: name.to_string(),
                            target,
                        })
                    }
                };
                let src = confine::walk(self.dest, &source, Links::Refuse, Missing::LastOnly)
                    .map_err(|_| ArchiveError::ThroughLink(name.to_string()))?;
                let (Some(src_name), Some(SFlag::S_IFREG)) = (&src.name, src.kind) else {
                    return Err(ArchiveError::Malformed(format!(
                        "entry {name:?} is a hard link to {target:?}, which is not a file of the archive"
                    )));
                };
                let at = self.prepare(name, &rel)?;
                let link = self.fresh_name(name, &at)?;
                linkat(
                    &src.dir,
                    src_name.as_os_str(),
                    &at.dir,
                    link.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(sys("create link"))
            }
            Kind::File(mode) => {
                let at = self.prepare(name, &rel)?;
                let file_name = self.fresh_name(name, &at)?;
                let fd = openat(
                    &at.dir,
                    file_name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(sys("create"))?;
                let mut file = File::from(fd);
                let room = self.limits.max_bytes - self.bytes;
                let n = io::copy(&mut data.take(room.saturating_add(1)), &mut file)
                    .map_err(io_err(format!("cannot unpack {name}")))?;
                if n > room {
                    return Err(ArchiveError::TooLarge {
                        max: self.limits.max_bytes,
                    });
                }
                self.bytes += n;
                // Keep permission bits only: no setuid, setgid or sticky from an archive. Set
                // on the open descriptor, so no path (and no link) is involved.
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o755 | 0o600))
                    .map_err(io_err(format!("cannot set mode of {name}")))?;
                Ok(())
            }
        }
    }

    /// The last component of `at`, removed first when an earlier entry of the same name (a
    /// file or link, never a directory) is there.
    fn fresh_name(&self, name: &str, at: &Found) -> Result<std::ffi::OsString, ArchiveError> {
        let Some(n) = at.name.clone() else {
            return Err(ArchiveError::Malformed(format!(
                "entry {name:?} names the archive root"
            )));
        };
        match at.kind {
            None => {}
            Some(SFlag::S_IFDIR) => {
                return Err(ArchiveError::Malformed(format!(
                    "entry {name:?} would replace a directory"
                )))
            }
            Some(_) => {
                unlinkat(&at.dir, n.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(|e| {
                    ArchiveError::Io {
                        context: format!("cannot replace {name}"),
                        source: io::Error::from_raw_os_error(e as i32),
                    }
                })?
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
