//! Can a device run an artifact? One pure check of an artifact's platforms, type and
//! requirements against a device's reported [`Inventory`], shared by fleetd (which refuses a
//! deployment target that cannot run it) and the agent (which re-checks before installing), so
//! both give the same reasons.

use crate::artifact::{ArtifactType, Platform, Requirements};
use crate::status::Inventory;

/// The capability an inventory must list to install an artifact of `kind`; `None` for types
/// every agent handles itself (binary, archive).
pub fn capability_for(kind: &ArtifactType) -> Option<&'static str> {
    match kind {
        ArtifactType::Binary | ArtifactType::Archive => None,
        ArtifactType::Deb => Some("deb"),
        ArtifactType::Rpm => Some("rpm"),
        ArtifactType::Apk => Some("apk"),
        ArtifactType::Nixpack => Some("nix"),
        ArtifactType::OciImage => Some("oci"),
        ArtifactType::Other(_) => Some("unknown-artifact-type"),
    }
}

/// Every requirement the device does not meet, each as a short sentence naming the
/// requirement and what the device has; empty when it can run the artifact.
pub fn unmet(
    kind: &ArtifactType,
    platforms: &[Platform],
    req: &Requirements,
    inv: &Inventory,
) -> Vec<String> {
    let mut out = Vec::new();
    if !platforms.is_empty()
        && !platforms
            .iter()
            .any(|p| p.os == inv.os && same_arch(&p.arch, &inv.arch))
    {
        let list: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        out.push(format!(
            "platform {}/{} is not among the artifact's platforms ({})",
            inv.os,
            inv.arch,
            list.join(", ")
        ));
    }
    if let Some(cap) = capability_for(kind) {
        if !inv.capabilities.iter().any(|c| c == cap) {
            out.push(format!(
                "artifact type {} needs capability {cap:?}, which the device lacks",
                kind.as_str()
            ));
        }
    }
    if req.min_memory > inv.total_memory {
        out.push(format!(
            "needs {} bytes of memory, device has {}",
            req.min_memory, inv.total_memory
        ));
    }
    if req.min_storage > inv.free_storage {
        out.push(format!(
            "needs {} bytes of free storage, device has {}",
            req.min_storage, inv.free_storage
        ));
    }
    if req.min_cpu_mhz > inv.cpu_mhz {
        out.push(format!(
            "needs a {} MHz CPU, device reports {} MHz",
            req.min_cpu_mhz, inv.cpu_mhz
        ));
    }
    for cap in &req.capabilities {
        if !inv.capabilities.contains(cap) {
            out.push(format!("needs capability {cap:?}, which the device lacks"));
        }
    }
    if !req.os_family.is_empty() && req.os_family != inv.os {
        out.push(format!(
            "needs OS family {:?}, device runs {:?}",
            req.os_family, inv.os
        ));
    }
    if !req.min_kernel.is_empty() && kernel_lt(&inv.kernel, &req.min_kernel) {
        out.push(format!(
            "needs kernel {} or newer, device runs {:?}",
            req.min_kernel, inv.kernel
        ));
    }
    if !req.arch.is_empty() && !req.arch.iter().any(|a| same_arch(a, &inv.arch)) {
        out.push(format!(
            "needs architecture {}, device is {}",
            req.arch.join(" or "),
            inv.arch
        ));
    }
    out
}

/// Architecture names compare in platform spelling, accepting the common aliases.
fn same_arch(a: &str, b: &str) -> bool {
    let norm = |s: &str| match s {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_ascii_lowercase(),
    };
    norm(a) == norm(b)
}

/// True when kernel release `have` (e.g. "6.1.0-18-amd64") is older than `min` ("5.10"),
/// comparing the leading numeric components.
fn kernel_lt(have: &str, min: &str) -> bool {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .take_while(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    nums(have) < nums(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory {
            arch: "arm64".into(),
            os: "linux".into(),
            kernel: "5.4.0-rpi".into(),
            total_memory: 1 << 30,
            free_storage: 1 << 20,
            cpu_mhz: 1200,
            capabilities: vec!["binary".into()],
            labels: Default::default(),
        }
    }

    #[test]
    fn reports_each_unmet_requirement() {
        let ok = unmet(
            &ArtifactType::Binary,
            &[Platform::parse("linux/aarch64").expect("valid")],
            &Requirements::default(),
            &inv(),
        );
        assert!(ok.is_empty(), "{ok:?}");
        let req = Requirements {
            min_memory: 2 << 30,
            min_storage: 1,
            min_cpu_mhz: 1000,
            capabilities: vec!["gpu".into()],
            os_family: "linux".into(),
            min_kernel: "5.10".into(),
            arch: vec!["amd64".into()],
        };
        let bad = unmet(
            &ArtifactType::Deb,
            &[Platform::parse("linux/amd64").expect("valid")],
            &req,
            &inv(),
        );
        let text = bad.join("; ");
        assert_eq!(bad.len(), 6, "{text}");
        for needle in [
            "platform linux/arm64",
            "capability \"deb\"",
            "memory",
            "\"gpu\"",
            "kernel 5.10",
            "architecture amd64",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(!kernel_lt("6.1.0-18-amd64", "5.10"));
        assert!(kernel_lt("5.4", "5.10"));
    }
}
