//! Process helpers shared by the end-to-end tests: finding the workspace's binaries, finding
//! processes by the executable they run, and killing what a test left behind.

use std::path::{Path, PathBuf};

/// The directory holding the workspace's binaries for this profile (target/debug).
pub fn bin_dir() -> PathBuf {
    let fleetd = PathBuf::from(env!("CARGO_BIN_EXE_fleetd"));
    fleetd
        .parent()
        .expect("fleetd binary has a parent directory")
        .to_path_buf()
}

/// A workspace binary built next to fleetd; fails with the command to run when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before `cargo test` (see README)",
        p.display()
    );
    p
}

/// Every live process whose executable lies under `dir`, as (pid, exe path).
pub fn processes_under(dir: &Path) -> Vec<(i32, PathBuf)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            if exe.starts_with(&dir) && !is_zombie(pid) {
                found.push((pid, exe));
            }
        }
    }
    found
}

/// True when the process exists but has exited and waits to be reaped.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGKILLs every process whose executable lies under `dir`.
pub fn kill_processes_under(dir: &Path) {
    for (pid, _) in processes_under(dir) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

/// Sends a signal by name ("TERM", "KILL") to one pid.
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
