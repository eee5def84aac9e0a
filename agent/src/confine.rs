//! Paths confined to one directory (an app's version directory): every component is looked up
//! with `openat`/`fstatat` on the directory descriptor reached so far, never by a path string,
//! so a symbolic link is only ever followed by this code, which splices its (relative) target
//! into the walk and refuses whatever climbs above the root. The installer and the runtime use
//! it for everything they create, chmod, write or execute inside a version directory, so a link
//! in an archive (or made by the app) cannot send them to a host file.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many links one lookup may follow (the kernel's own bound, `MAXSYMLINKS`).
pub const MAX_LINKS: u32 = 40;

/// Why a path could not be resolved inside its root.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path, or a link on its way, leads outside the root.
    #[error("{path:?} leads outside the directory{}", via.as_ref().map(|v| format!(" (through the link {v:?})")).unwrap_or_default())]
    Escapes {
        /// The path asked for.
        path: String,
        /// The link (relative to the root) whose target climbed out, if one did.
        via: Option<String>,
    },
    /// A link was met where links are refused.
    #[error("{path:?} goes through the symbolic link {link:?}")]
    ThroughLink {
        /// The path asked for.
        path: String,
        /// The link met (relative to the root).
        link: String,
    },
    /// Links chain too deep (or loop).
    #[error("{0:?} follows more than {MAX_LINKS} symbolic links (a loop?)")]
    TooManyLinks(String),
    /// A component on the way is a file, not a directory.
    #[error("{path:?}: {component:?} is not a directory")]
    NotADirectory {
        /// The path asked for.
        path: String,
        /// The component that is not a directory.
        component: String,
    },
    /// A component on the way does not exist.
    #[error("{0:?} does not exist")]
    Missing(String),
    /// A system call failed.
    #[error("{path:?}: {source}")]
    Io {
        /// The path asked for.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What to do with symbolic links met on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow them (relative targets only), as long as they stay inside.
    Follow,
    /// Refuse any link, the last component included.
    Refuse,
}

/// What to do with components that do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create missing directories on the way (mode 0755); the last component may be missing.
    Create,
    /// An error, unless it is the last component.
    LastOnly,
    /// Go on lexically (used to check where a dangling link would point).
    Lexical,
}

/// Where a confined path ended: the directory holding the last component, and that component
/// (`None` when the path is the root itself). The last component is never a link when links
/// were followed.
#[derive(Debug)]
pub struct Found {
    /// The directory holding `name`, opened without following links.
    pub dir: OwnedFd,
    /// The last component; `None` for the root.
    pub name: Option<OsString>,
    /// The physical path below the root (no links in it).
    pub rel: PathBuf,
    /// The last component's type, when it exists.
    pub kind: Option<SFlag>,
}

fn os(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Opens a directory for walking (the root may itself be reached through links).
pub fn open_root(root: &Path) -> Result<OwnedFd, ConfineError> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ConfineError::Io {
        path: root.display().to_string(),
        source: os(e),
    })
}

fn open_dir(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn components(p: &Path) -> impl Iterator<Item = Option<OsString>> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(Some(n.to_os_string())),
        Component::ParentDir => Some(None),
        _ => None,
    })
}

/// Resolves `rel` below `root` (see the module comment). `rel` must be relative.
pub fn walk(
    root: &Path,
    rel: &Path,
    links: Links,
    missing: Missing,
) -> Result<Found, ConfineError> {
    let asked = rel.display().to_string();
    if rel.is_absolute() {
        return Err(ConfineError::Escapes {
            path: asked,
            via: None,
        });
    }
    let io = |e: Errno| ConfineError::Io {
        path: asked.clone(),
        source: os(e),
    };
    // Open directories from the root down, with their names; `None` in the queue is `..`.
    let mut stack: Vec<(OwnedFd, OsString)> = vec![(open_root(root)?, OsString::new())];
    let mut queue: VecDeque<Option<OsString>> = components(rel).collect();
    // Components below the deepest existing directory (lexical mode only).
    let mut lexical: Vec<OsString> = Vec::new();
    let mut hops = 0;
    let mut via: Option<String> = None;
    let here = |stack: &[(OwnedFd, OsString)], extra: &[OsString]| -> PathBuf {
        stack[1..]
            .iter()
            .map(|(_, n)| n.as_os_str())
            .chain(extra.iter().map(OsString::as_os_str))
            .collect()
    };
    let mut last: Option<(OsString, Option<SFlag>)> = None;
    while let Some(c) = queue.pop_front() {
        last = None;
        let Some(name) = c else {
            if lexical.pop().is_none() {
                if stack.len() == 1 {
                    return Err(ConfineError::Escapes { path: asked, via });
                }
                stack.pop();
            }
            continue;
        };
        if !lexical.is_empty() {
            lexical.push(name);
            continue;
        }
        let is_last = queue.is_empty();
        let (top, _) = stack.last().expect("the root is never popped");
        let st = match fstatat(top, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                match missing {
                    _ if is_last => last = Some((name, None)),
                    Missing::Create => {
                        mkdirat(top, name.as_os_str(), Mode::from_bits_truncate(0o755))
                            .map_err(io)?;
                        let fd = open_dir(top, &name).map_err(io)?;
                        stack.push((fd, name));
                    }
                    Missing::LastOnly => {
                        return Err(ConfineError::Missing(
                            here(&stack, &[name]).display().to_string(),
                        ))
                    }
                    Missing::Lexical => lexical.push(name),
                }
                continue;
            }
            Err(e) => return Err(io(e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            let link = here(&stack, std::slice::from_ref(&name))
                .display()
                .to_string();
            if links == Links::Refuse {
                return Err(ConfineError::ThroughLink { path: asked, link });
            }
            hops += 1;
            if hops > MAX_LINKS {
                return Err(ConfineError::TooManyLinks(asked));
            }
            let target = readlinkat(top, name.as_os_str()).map_err(io)?;
            let target = Path::new(&target);
            if target.is_absolute() || target.as_os_str().is_empty() {
                return Err(ConfineError::Escapes {
                    path: asked,
                    via: Some(link),
                });
            }
            via = Some(link);
            for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                queue.push_front(c);
            }
            continue;
        }
        if is_last {
            last = Some((name, Some(kind)));
            continue;
        }
        if kind != SFlag::S_IFDIR {
            return Err(ConfineError::NotADirectory {
                path: asked,
                component: here(&stack, &[name]).display().to_string(),
            });
        }
        let fd = open_dir(top, &name).map_err(io)?;
        stack.push((fd, name));
    }
    let rel = here(&stack, &lexical);
    let (dir, _) = stack.pop().expect("the root is never popped");
    Ok(match last {
        Some((name, kind)) if lexical.is_empty() => Found {
            dir,
            rel: rel.join(&name),
            name: Some(name),
            kind,
        },
        _ => Found {
            dir,
            name: None,
            rel,
            kind: Some(SFlag::S_IFDIR),
        },
    })
}

/// Opens the regular file `rel` below `root` (following links that stay inside) and returns it
/// with its physical path below the root (so whoever uses that path meets no link).
pub fn open_file(
    root: &Path,
    rel: &Path,
    flags: OFlag,
) -> Result<(OwnedFd, PathBuf), ConfineError> {
    let found = walk(root, rel, Links::Follow, Missing::LastOnly)?;
    let asked = rel.display().to_string();
    let name = match (&found.name, found.kind) {
        (Some(n), Some(SFlag::S_IFREG)) => n,
        (_, None) => return Err(ConfineError::Missing(asked)),
        _ => {
            return Err(ConfineError::Io {
                path: asked,
                source: std::io::Error::other("not a regular file"),
            })
        }
    };
    let fd = openat(
        &found.dir,
        name.as_os_str(),
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ConfineError::Io {
        path: asked,
        source: os(e),
    })?;
    Ok((fd, found.rel))
}

/// Checks that a link at `link` (below the root) pointing at `target` resolves inside the root,
/// through the links already there; a part that does not exist yet is taken lexically.
pub fn check_link(root: &Path, link: &Path, target: &OsStr) -> Result<(), ConfineError> {
    let t = Path::new(target);
    if t.is_absolute() || target.as_bytes().is_empty() {
        return Err(ConfineError::Escapes {
            path: link.display().to_string(),
            via: None,
        });
    }
    let from = link.parent().unwrap_or(Path::new(""));
    walk(root, &from.join(t), Links::Follow, Missing::Lexical).map(drop)
}

#[cfg(test)]
#[path = "confine_tests.rs"]
mod tests;
