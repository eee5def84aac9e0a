//! Helpers of the container tests: which engine answers, a statically linked busybox, and a
//! busybox root filesystem with a start script to build images from without a registry or the
//! internet.

use super::Fleetd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first engine whose `info` succeeds (only the one `FLEET_OCI_ENGINE` names, when set).
pub fn engine() -> Option<&'static str> {
    let only = std::env::var("FLEET_OCI_ENGINE").ok();
    ["docker", "podman"]
        .into_iter()
        .filter(|e| only.as_deref().is_none_or(|o| o == *e))
        .find(|e| {
            Command::new(e)
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A statically linked busybox (a dynamic one would not run in a root filesystem without libc).
pub fn busybox_static() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF") && !has_interpreter(&b)))
}

/// True when an ELF file has a PT_INTERP program header (is dynamically linked).
pub fn has_interpreter(elf: &[u8]) -> bool {
    let num = |off: usize, len: usize| -> usize {
        elf.get(off..off + len).map_or(0, |b| {
            b.iter().rev().fold(0, |n, &x| n << 8 | usize::from(x))
        })
    };
    let (phoff, phentsize, phnum) = match elf.get(4) {
        Some(2) => (num(0x20, 8), num(0x36, 2), num(0x38, 2)),
        _ => (num(0x1c, 4), num(0x2a, 2), num(0x2c, 2)),
    };
    (0..phnum).any(|i| num(phoff + i * phentsize, 4) == 3)
}

pub use fleet_testkit::skip_or_fail;

/// Output of `engine args..`, asserting success.
pub fn sh(engine: &str, args: &[&str]) -> String {
    let out = Command::new(engine)
        .args(args)
        .output()
        .expect("run engine");
    assert!(
        out.status.success(),
        "{engine} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Output of a `fleetctl` command against `fleetd` that must succeed.
pub fn fleetctl(fleetd: &Fleetd, args: &[&str]) -> String {
    let (ok, text) = super::cli::fleetctl(fleetd, args);
    assert!(ok, "fleetctl {args:?}: {text}");
    text
}

/// A root filesystem in `dir/rootfs-<version>`: busybox with sh, httpd, echo, cat, sleep, wget,
/// `/www/index.html` saying "served by <version>", and the executable `/start` holding `start`.
pub fn rootfs(busybox: &Path, dir: &Path, version: &str, start: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join(format!("rootfs-{version}"));
    std::fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    std::fs::create_dir_all(root.join("www")).expect("mkdir www");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for tool in ["sh", "httpd", "echo", "cat", "sleep", "wget"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).expect("symlink");
    }
    std::fs::write(
        root.join("www/index.html"),
        format!("served by {version}\n"),
    )
    .expect("index");
    let path = root.join("start");
    std::fs::write(&path, start).expect("start script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    root
}

/// The engine to test with and a static busybox, or `None` after skipping loudly (failing
/// under FLEET_REQUIRE_EXTERNAL=1) when either is missing.
pub fn engine_and_busybox() -> Option<(&'static str, PathBuf)> {
    let Some(engine) = engine() else {
        skip_or_fail("no usable container engine (docker info / podman info failed; apt-get install docker.io and start dockerd)");
        return None;
    };
    let Some(busybox) = busybox_static() else {
        skip_or_fail("busybox-static is not installed (apt-get install busybox-static)");
        return None;
    };
    Some((engine, busybox))
}

/// Builds `tag:version` from a busybox root filesystem whose `/start` (the command) holds
/// `start`, saves it as a tarball in `dir` and removes the tag again, so that an agent's load is
/// what brings the image back. Returns the tarball.
pub fn build_image(
    engine: &str,
    busybox: &Path,
    dir: &Path,
    tag: &str,
    version: &str,
    start: &str,
) -> PathBuf {
    let root = rootfs(busybox, dir, version, start);
    let image = format!("{tag}:{version}");
    let cmd = format!(
        "tar -C '{}' -c . | {engine} import -c 'CMD [\"/start\"]' - '{image}' >/dev/null",
        root.display()
    );
    let ok = Command::new("sh").args(["-c", &cmd]).status().expect("sh");
    assert!(ok.success(), "{cmd}");
    let tarball = dir.join(format!("image-{version}.tar"));
    sh(engine, &["save", "-o", &tarball.to_string_lossy(), &image]);
    sh(engine, &["rmi", &image]);
    tarball
}

/// Removes, when dropped (so also when a test fails), the containers labelled
/// `fleet.app=<app>` and the images `<tag>:<version>` a container test made.
pub struct Cleanup {
    /// The engine they live in.
    pub engine: &'static str,
    /// The app (or unit) label of the containers.
    pub app: String,
    /// The image tag.
    pub tag: String,
    /// The versions built under the tag.
    pub versions: &'static [&'static str],
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new(self.engine)
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=fleet.app={}", self.app),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new(self.engine).args(["rm", "-f", id]).output();
        }
        for v in self.versions {
            let _ = Command::new(self.engine)
                .args(["rmi", "-f", &format!("{}:{v}", self.tag)])
                .output();
        }
    }
}
