//! Reads process and device figures from `/proc` (no extra dependency, works the same on the
//! ARM boards). An app's figures are summed over its process group, which is every process the
//! supervisor would kill with it.

use std::collections::BTreeMap;
use std::path::Path;

/// Counters of one process group at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSample {
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u32,
    /// Threads.
    pub threads: u32,
    /// Bytes read from storage (`/proc/<pid>/io` read_bytes).
    pub read_bytes: u64,
    /// Bytes written to storage.
    pub write_bytes: u64,
    /// Processes in the group.
    pub processes: u32,
}

/// Parsed `/proc/<pid>/stat` fields after the command name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Process group.
    pub pgrp: u32,
    /// utime + stime, ticks.
    pub cpu_ticks: u64,
    /// Threads.
    pub threads: u32,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line (the command may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        pgrp: u32::try_from(n(2)?).ok()?,
        cpu_ticks: n(11)?.saturating_add(n(12)?),
        threads: u32::try_from(n(17)?).unwrap_or(u32::MAX),
        rss_pages: n(21)?,
    })
}

/// `read_bytes` and `write_bytes` of a `/proc/<pid>/io` file.
pub fn parse_io(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// Clock ticks per second.
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Samples every process group in `pgids` in one pass over `/proc`.
pub fn sample_groups(pgids: &[u32]) -> BTreeMap<u32, GroupSample> {
    let mut out: BTreeMap<u32, GroupSample> = BTreeMap::new();
    if pgids.is_empty() {
        return out;
    }
    let page = page_size();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        if !pgids.contains(&stat.pgrp) {
            continue;
        }
        let g = out.entry(stat.pgrp).or_default();
        g.processes += 1;
        g.cpu_ticks = g.cpu_ticks.saturating_add(stat.cpu_ticks);
        g.rss_bytes = g
            .rss_bytes
            .saturating_add(stat.rss_pages.saturating_mul(page));
        g.threads = g.threads.saturating_add(stat.threads);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        g.fds = g.fds.saturating_add(u32::try_from(fds).unwrap_or(u32::MAX));
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            let (r, w) = parse_io(&io);
            g.read_bytes = g.read_bytes.saturating_add(r);
            g.write_bytes = g.write_bytes.saturating_add(w);
        }
    }
    out
}

/// Whole-device counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceSample {
    /// Busy CPU ticks over all cores.
    pub cpu_busy: u64,
    /// All CPU ticks over all cores.
    pub cpu_total: u64,
    /// Memory total, bytes.
    pub mem_total: u64,
    /// Memory available, bytes.
    pub mem_available: u64,
    /// Load average, one minute.
    pub load1: f32,
    /// Network bytes received (all interfaces but loopback).
    pub net_rx: u64,
    /// Network bytes sent.
    pub net_tx: u64,
    /// Disk total and used of the data directory's filesystem, bytes.
    pub disk_total: u64,
    /// Disk used, bytes.
    pub disk_used: u64,
}

/// (busy, total) ticks of the `cpu` line of `/proc/stat`.
pub fn parse_cpu_line(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (total, available) bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let kb = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("MemTotal:"), kb("MemAvailable:"))
}

/// (rx, tx) bytes summed over the interfaces of `/proc/net/dev`, loopback excluded.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        rx = rx.saturating_add(v.first().copied().unwrap_or(0));
        tx = tx.saturating_add(v.get(8).copied().unwrap_or(0));
    }
    (rx, tx)
}

/// Samples the device; `data_dir` picks the filesystem whose disk use is reported.
pub fn sample_device(data_dir: &Path) -> DeviceSample {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (cpu_busy, cpu_total) = parse_cpu_line(&read("/proc/stat")).unwrap_or((0, 0));
    let (mem_total, mem_available) = parse_meminfo(&read("/proc/meminfo"));
    let load1 = read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let (net_rx, net_tx) = parse_net_dev(&read("/proc/net/dev"));
    let (disk_total, disk_used) = match nix::sys::statvfs::statvfs(data_dir) {
        #[allow(clippy::useless_conversion)] // field widths differ between targets
        Ok(s) => {
            let f = u64::from(s.fragment_size());
            let total = u64::from(s.blocks()).saturating_mul(f);
            let free = u64::from(s.blocks_free()).saturating_mul(f);
            (total, total.saturating_sub(free))
        }
        Err(_) => (0, 0),
    };
    DeviceSample {
        cpu_busy,
        cpu_total,
        mem_total,
        mem_available,
        load1,
        net_rx,
        net_tx,
        disk_total,
        disk_used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn parses_proc_files() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 0 0 0 0 0 150 50 0 0 20 0 3 0 1000 10000 25 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                pgrp: 42,
                cpu_ticks: 200,
                threads: 3,
                rss_pages: 25
            })
        );
        assert_eq!(
            parse_io("rchar: 1\nread_bytes: 4096\nwrite_bytes: 8192\n"),
            (4096, 8192)
        );
        assert_eq!(
            parse_cpu_line("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 1 1 1"),
            Some((20, 100))
        );
        assert_eq!(
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 500 kB\n"),
            (1_024_000, 512_000)
        );
        let net = "h1\nh2\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 300 2 0 0 0 0 0 0 400 3 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), (300, 400));
    }

    #[test]
    fn samples_a_real_process_group() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let pgid = child.id();
        let got = sample_groups(&[pgid]);
        let g = got.get(&pgid).copied().expect("group sampled");
        assert_eq!(g.processes, 1);
        assert!(g.rss_bytes > 0 && g.threads >= 1 && g.fds >= 1, "{g:?}");
        let _ = child.kill();
        let _ = child.wait();
        let dev = sample_device(Path::new("/"));
        assert!(
            dev.mem_total > 0 && dev.cpu_total > 0 && dev.disk_total > 0,
            "{dev:?}"
        );
    }
}
