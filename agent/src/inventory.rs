//! What the device offers (architecture, kernel, memory, storage, CPU, capabilities, labels),
//! reported in every full status so the controller can target deployments and check
//! requirements.

use crate::runtime::container::Engine;
use fleet_schema::Inventory;
use std::collections::BTreeMap;
use std::path::Path;

/// Collects the inventory; `data_dir` decides whose filesystem's free space is reported.
pub fn collect(data_dir: &Path, labels: &BTreeMap<String, String>) -> Inventory {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_frequency();
    let cpu_mhz = sys.cpus().iter().map(|c| c.frequency()).max().unwrap_or(0);
    Inventory {
        arch: platform_arch(std::env::consts::ARCH).to_string(),
        os: "linux".to_string(),
        kernel: kernel_release(),
        total_memory: sys.total_memory(),
        free_storage: free_storage(data_dir),
        cpu_mhz: u32::try_from(cpu_mhz).unwrap_or(u32::MAX),
        capabilities: capabilities(),
        labels: labels.clone(),
    }
}

/// Rust's architecture name in platform spelling (the one artifacts are tagged with).
pub fn platform_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Free bytes (available to unprivileged users) on the filesystem holding `dir`.
pub fn free_storage(dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(dir) {
        #[allow(clippy::useless_conversion)] // field widths differ between targets
        Ok(s) => u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())),
        Err(_) => 0,
    }
}

fn capabilities() -> Vec<String> {
    // This agent runs applications of several artifacts (fleet_schema::components).
    let mut caps = vec![
        "binary".to_string(),
        fleet_schema::components::CAPABILITY.to_string(),
    ];
    // A container engine counts only when it answers (`docker info` needs its daemon).
    for engine in [Engine::Docker, Engine::Podman] {
        if engine.usable() {
            caps.push(engine.as_str().to_string());
        }
    }
    for (cap, tool) in [
        ("deb", "dpkg"),
        ("rpm", "rpm"),
        ("apk", "apk"),
        ("nix", "nix-store"),
    ] {
        if on_path(tool) {
            caps.push(cap.to_string());
        }
    }
    // Either container engine runs OCI images.
    if caps.iter().any(|c| c == "docker" || c == "podman") {
        caps.push("oci".to_string());
        // ... and this agent also pulls registry references (`docker pull` / `podman pull`).
        caps.push(fleet_schema::image_ref::PULL_CAPABILITY.to_string());
    }
    // "systemd" is added by the daemon, which knows the configured scope and asks that
    // manager (see daemon::units).
    caps.sort();
    caps
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(tool);
            p.is_file()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_use_platform_spelling() {
        assert_eq!(platform_arch("x86_64"), "amd64");
        assert_eq!(platform_arch("aarch64"), "arm64");
        assert_eq!(platform_arch("arm"), "arm");
        assert_eq!(platform_arch("riscv64"), "riscv64");
    }

    #[test]
    fn collects_something_plausible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = BTreeMap::from([("site".to_string(), "a".to_string())]);
        let inv = collect(dir.path(), &labels);
        assert_eq!(inv.os, "linux");
        assert!(inv.capabilities.contains(&"binary".to_string()));
        assert!(inv.capabilities.contains(&"components".to_string()));
        assert!(inv.total_memory > 0);
        assert!(inv.free_storage > 0);
        assert!(!inv.kernel.is_empty());
        assert_eq!(inv.labels, labels);
    }

    #[test]
    fn container_capabilities_follow_usable_engines() {
        let caps = capabilities();
        let has = |c: &str| caps.iter().any(|x| x == c);
        assert_eq!(has("docker"), Engine::Docker.usable());
        assert_eq!(has("podman"), Engine::Podman.usable());
        assert_eq!(has("oci"), has("docker") || has("podman"));
        assert_eq!(has("oci-pull"), has("oci"));
    }
}
