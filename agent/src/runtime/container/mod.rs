//! Containers through the Docker or Podman command line (no client library): which engine is
//! usable (its `info` answers, not merely a binary on PATH), which installed versions are
//! images, and removing an app's containers and images (the `run` arguments and mounted files
//! of one start are in [`crate::runtime::container::run`]). The container runs in the foreground under
//! the agent's supervisor through the version's launcher script (see [`crate::install::oci`]),
//! so restart policy, health checks and logs work as for any other app.

pub mod run;

use fleet_schema::app_spec::RuntimeKind;
use fleet_schema::{AppSpec, ArtifactType, DesiredState};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// File in a version directory recording the engine and image of an `oci-image` install.
pub const IMAGE_FILE: &str = "oci-image";

/// How long `<engine> info` may take before the engine counts as unusable.
const INFO_TIMEOUT: Duration = Duration::from_secs(3);

/// A container engine driven through its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `docker` (with a reachable daemon).
    Docker,
    /// `podman`.
    Podman,
}

impl Engine {
    /// The command (and capability) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }

    /// Parses a recorded engine name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "docker" => Some(Self::Docker),
            "podman" => Some(Self::Podman),
            _ => None,
        }
    }

    /// True when `<engine> info` succeeds within a bounded time. The answer is cached: only
    /// the first call (at agent start, before any app runs) waits for the probe; after
    /// [`INFO_TTL`] the next call returns the cached answer and refreshes it on a background
    /// thread, so the agent's event loop (which asks on every broker connect) never blocks on
    /// a slow `docker info`.
    pub fn usable(self) -> bool {
        let now = Instant::now();
        let cached = lock_cache().get(&self).copied();
        match cached {
            Some((ok, at)) if now.duration_since(at) < INFO_TTL => ok,
            Some((ok, _)) => {
                // Stale: keep answering with it, refresh once in the background.
                lock_cache().insert(self, (ok, now));
                std::thread::spawn(move || {
                    let fresh = self.probe();
                    lock_cache().insert(self, (fresh, Instant::now()));
                });
                ok
            }
            None => {
                let ok = self.probe();
                lock_cache().insert(self, (ok, Instant::now()));
                ok
            }
        }
    }

    fn probe(self) -> bool {
        run_bounded(Command::new(self.as_str()).arg("info"), INFO_TIMEOUT)
    }
}

/// How long a container-engine probe result is trusted before it is refreshed.
pub const INFO_TTL: Duration = Duration::from_secs(60);

type ProbeCache = std::collections::HashMap<Engine, (bool, Instant)>;

fn lock_cache() -> std::sync::MutexGuard<'static, ProbeCache> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<ProbeCache>> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `cmd` with its output discarded; true when it exits 0 within `timeout` (killed after).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The engine to run an app with: the one its runtime names, or for `raw` the first usable of
/// Docker and Podman. The error names what is missing.
pub fn choose(runtime: &RuntimeKind) -> Result<Engine, String> {
    let candidates: &[Engine] = match runtime {
        RuntimeKind::Docker => &[Engine::Docker],
        RuntimeKind::Podman => &[Engine::Podman],
        _ => &[Engine::Docker, Engine::Podman],
    };
    candidates
        .iter()
        .copied()
        .find(|e| e.usable())
        .ok_or_else(|| {
            let names: Vec<&str> = candidates.iter().map(|e| e.as_str()).collect();
            format!(
                "no usable container engine ({} info failed or is not installed)",
                names.join(", ")
            )
        })
}

/// Why the agent will not run this combination of runtime and artifact type, if it will not:
/// containers run `oci-image` artifacts only, and systemd units run anything but images.
pub fn runtime_refusal(runtime: &RuntimeKind, artifact: &ArtifactType) -> Option<String> {
    match runtime {
        RuntimeKind::Raw | RuntimeKind::Supervisor => None,
        RuntimeKind::Docker | RuntimeKind::Podman if *artifact == ArtifactType::OciImage => None,
        RuntimeKind::Docker | RuntimeKind::Podman => Some(format!(
            "runtime {runtime} runs oci-image artifacts only, not {artifact} (use runtime raw)"
        )),
        RuntimeKind::Systemd if *artifact != ArtifactType::OciImage => None,
        RuntimeKind::Systemd => Some(format!(
            "runtime systemd runs executables, not {artifact} (use runtime docker or podman)"
        )),
        other => Some(format!(
            "runtime {other} is not supported by this agent yet (raw, docker, podman)"
        )),
    }
}

/// True when the desired app `app` runs as a container (its process is the engine's CLI, so
/// the agent's own resident-memory check must not apply to it).
pub fn runs_in_container(desired: Option<&DesiredState>, app: &str) -> bool {
    desired
        .and_then(|d| d.apps.iter().find(|a| a.name == app))
        .is_some_and(|a| a.artifact.kind == ArtifactType::OciImage)
}

/// True when versions of the app cannot overlap: a container publishing host ports (the old
/// version is stopped before the new one starts).
pub fn exclusive_ports(kind: &ArtifactType, spec: &AppSpec) -> bool {
    *kind == ArtifactType::OciImage && !spec.runtime.ports.is_empty()
}

/// The container name of one version: `fleet-<app>-<version>`, with characters engines refuse
/// in names (e.g. `+` of build metadata) replaced by `_`.
pub fn container_name(app: &str, version: &str) -> String {
    format!("fleet-{app}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An installed `oci-image` version: which engine loaded it and the image id to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The engine holding the image.
    pub engine: Engine,
    /// Image id (or reference) passed to `run`.
    pub image: String,
}

impl Installed {
    /// The record's file content.
    pub fn to_record(&self) -> String {
        format!("{}\n{}\n", self.engine.as_str(), self.image)
    }

    /// Reads the record of the version in `vdir`; `None` when it is not an image install.
    pub fn read(vdir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(vdir.join(IMAGE_FILE)).ok()?;
        let mut lines = text.lines();
        let engine = Engine::parse(lines.next()?.trim())?;
        let image = lines.next()?.trim().to_string();
        (!image.is_empty()).then_some(Self { engine, image })
    }
}

/// Removes the containers of `app` (any version, running or not); errors are logged only.
pub fn remove_containers(engine: Engine, app: &str) {
    let out = Command::new(engine.as_str())
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=fleet.app={app}"))
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = run_bounded(
        Command::new(engine.as_str()).args(["rm", "-f"]).args(&ids),
        Duration::from_secs(60),
    );
}

/// Deletes an image that no kept version uses any more; a failure is logged, not fatal.
pub fn remove_image(installed: &Installed) {
    let ok = run_bounded(
        Command::new(installed.engine.as_str()).args(["rmi", "-f", &installed.image]),
        Duration::from_secs(60),
    );
    if ok {
        tracing::info!(image = %installed.image, "removed old image");
    } else {
        tracing::warn!(image = %installed.image, "cannot remove old image");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_for_engines() {
        assert_eq!(container_name("web", "1.2.3"), "fleet-web-1.2.3");
        assert_eq!(
            container_name("web", "1.0.0-rc.1+b5"),
            "fleet-web-1.0.0-rc.1_b5"
        );
    }

    #[test]
    fn runtimes_and_types_combine_as_documented() {
        assert!(runtime_refusal(&RuntimeKind::Raw, &ArtifactType::OciImage).is_none());
        assert!(runtime_refusal(&RuntimeKind::Docker, &ArtifactType::OciImage).is_none());
        assert!(runtime_refusal(&RuntimeKind::Podman, &ArtifactType::OciImage).is_none());
        let e = runtime_refusal(&RuntimeKind::Docker, &ArtifactType::Binary).expect("refused");
        assert!(e.contains("runtime docker") && e.contains("binary"), "{e}");
        assert!(runtime_refusal(&RuntimeKind::Systemd, &ArtifactType::Binary).is_none());
        let e = runtime_refusal(&RuntimeKind::Systemd, &ArtifactType::OciImage).expect("refused");
        assert!(e.contains("runtime systemd"), "{e}");
    }

    #[test]
    fn records_round_trip_and_garbage_is_not_an_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Installed::read(dir.path()), None);
        let inst = Installed {
            engine: Engine::Podman,
            image: "sha256:def".into(),
        };
        std::fs::write(dir.path().join(IMAGE_FILE), inst.to_record()).expect("write");
        assert_eq!(Installed::read(dir.path()), Some(inst));
        std::fs::write(dir.path().join(IMAGE_FILE), "lxc\nx\n").expect("write");
        assert_eq!(Installed::read(dir.path()), None);
    }

    #[test]
    fn a_missing_engine_is_not_usable() {
        assert!(!run_bounded(
            &mut Command::new("/nonexistent/docker"),
            Duration::from_secs(1)
        ));
        assert!(!run_bounded(
            Command::new("sleep").arg("5"),
            Duration::from_millis(100)
        ));
    }
}
