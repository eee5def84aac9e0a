//! Keeps the idle agent's resident memory to what it uses while idle. Most of an idle agent's
//! resident set is its own code: start-up (settings, database, enrollment, TLS setup) and
//! every install touch code pages that then stay mapped, and the kernel maps code in 64 KiB
//! windows around each page fault. Every [`INTERVAL`] (first [`FIRST_AFTER`] after start)
//! the agent asks the kernel to reclaim the pages of its own executable (`MADV_PAGEOUT`, read
//! back on demand, `MADV_RANDOM` so only the page faulted is read) and glibc to return freed
//! heap pages (`malloc_trim`). The code an idle agent runs comes back within a second; what
//! only start-up needed stays out until it is needed again. On a kernel older than 5.4 (no
//! `MADV_PAGEOUT`) this does nothing.
#![allow(unsafe_code)]

use nix::sys::mman::{madvise, MmapAdvise};
use std::time::Duration;

/// When the first trim runs (start-up is over by then on an enrolled device).
pub const FIRST_AFTER: Duration = Duration::from_secs(10);
/// How often it runs again (code an install or a deployment touched goes out again).
pub const INTERVAL: Duration = Duration::from_secs(600);

/// A read-only mapping of a file: start address, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First byte.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The read-only (code and constant data) mappings of `path` in a `/proc/PID/maps` listing.
/// Writable mappings are left alone: their private pages are the program's data.
pub fn read_only_mappings(maps: &str, path: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset device inode path
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let file = f.skip(3).collect::<Vec<_>>().join(" ");
            if file != path || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let start = usize::from_str_radix(a, 16).ok()?;
            let end = usize::from_str_radix(b, 16).ok()?;
            (end > start).then_some(Mapping {
                start,
                len: end - start,
            })
        })
        .collect()
}

/// Reclaims the pages of this process's own executable and trims the heap; returns how many
/// bytes of mappings it advised. An error names the step that failed (the caller logs it).
pub fn trim() -> Result<usize, String> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let exe = exe.to_string_lossy();
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let mut advised = 0;
    for m in read_only_mappings(&maps, &exe) {
        let Some(addr) = std::ptr::NonNull::new(m.start as *mut std::ffi::c_void) else {
            continue;
        };
        for advice in [MmapAdvise::MADV_RANDOM, MmapAdvise::MADV_PAGEOUT] {
            // SAFETY: the range is a whole read-only file mapping of this process (from its
            // maps), which stays mapped for the life of the process. RANDOM and PAGEOUT change
            // no contents: reclaimed file pages are read back from the file on the next access.
            unsafe { madvise(addr, m.len, advice) }
                .map_err(|e| format!("madvise({advice:?}) of {exe}: {e}"))?;
        }
        advised += m.len;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no live allocation moves.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    Ok(advised)
}

/// Runs [`trim`] after [`FIRST_AFTER`] and then every [`INTERVAL`], for the life of the agent.
pub async fn trim_periodically() {
    tokio::time::sleep(FIRST_AFTER).await;
    loop {
        match trim() {
            Ok(bytes) => tracing::debug!(bytes, "returned idle code pages and free heap"),
            Err(e) => tracing::debug!("cannot trim the resident set: {e}"),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55bc1cfd8000-55bc1d103000 r--p 00000000 fe:00 5931915                    /opt/fleet agent/fleet-agent
55bc1d103000-55bc1d497000 r-xp 0012a000 fe:00 5931915                    /opt/fleet agent/fleet-agent
55bc1d4b3000-55bc1d4b5000 rw-p 004d8000 fe:00 5931915                    /opt/fleet agent/fleet-agent
55bc5587b000-55bc55920000 rw-p 00000000 00:00 0                          [heap]
7f3c98415000-7f3c9856b000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn only_the_read_only_mappings_of_the_executable_are_picked() {
        let m = read_only_mappings(MAPS, "/opt/fleet agent/fleet-agent");
        assert_eq!(
            m,
            [
                Mapping {
                    start: 0x55bc1cfd8000,
                    len: 0x55bc1d103000 - 0x55bc1cfd8000
                },
                Mapping {
                    start: 0x55bc1d103000,
                    len: 0x55bc1d497000 - 0x55bc1d103000
                },
            ]
        );
        assert!(read_only_mappings(MAPS, "/opt/fleet").is_empty());
    }

    #[test]
    fn trimming_this_process_advises_its_own_code() {
        let advised = trim().expect("trim works on Linux >= 5.4");
        assert!(
            advised > 0,
            "the test binary's code was not found in its maps"
        );
    }
}
