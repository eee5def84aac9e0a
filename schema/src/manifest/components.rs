//! An application with several runnable artifacts: how each one (a "component") runs.
//!
//! - The app's `spec.configuration` (environment, files) and `spec.resources` apply to every
//!   component (limits are per component).
//! - The app's `spec.runtime` and `spec.healthcheck` belong to its first runnable artifact (the
//!   primary), exactly as for an app with one artifact. Every other component takes the
//!   runtime's type, restart policy, startup timeout and stop grace, with a type that fits its
//!   artifact (an `oci-image` under `systemd` or `raw` runs on the first usable container
//!   engine, a non-image under `docker`/`podman` as a raw process), and no health check.
//! - An artifact entry may carry its own `runtime` and `healthcheck`, which replace what it
//!   would take from the app's (a `runtime` without `type` keeps the fitted type).

use super::raw::RawArtifact;
use super::validate::{healthcheck, runtime, Errors};
use super::{AppArtifact, Application, RUNNABLE_TYPES};
use crate::app_spec::{AppSpec, RuntimeKind, RuntimeSpec};

/// One runnable artifact of an application and the spec it runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The artifact (its name names the component).
    pub artifact: AppArtifact,
    /// How the device runs it.
    pub spec: AppSpec,
}

/// The runtime type that fits an artifact type, given the app's: containers run images only,
/// systemd anything but images; `raw` picks the first usable engine for an image.
pub fn fit(app: &RuntimeKind, kind: &str) -> RuntimeKind {
    let image = kind == "oci-image";
    match app {
        RuntimeKind::Docker | RuntimeKind::Podman if !image => RuntimeKind::Raw,
        RuntimeKind::Systemd if image => RuntimeKind::Raw,
        other => other.clone(),
    }
}

/// Parses each artifact's own `runtime` and `healthcheck` into `out` (same order), naming
/// `spec.artifacts[i]....` in errors.
pub(super) fn overrides(
    e: &mut Errors,
    raw: &[RawArtifact],
    app_kind: &RuntimeKind,
    out: &mut [AppArtifact],
) {
    for (i, (r, a)) in raw.iter().zip(out.iter_mut()).enumerate() {
        let at = format!("spec.artifacts[{i}]");
        if let Some(rt) = &r.runtime {
            let typed = rt.kind.is_some();
            let mut spec = runtime(e, &format!("{at}.runtime"), rt.clone());
            if !typed {
                spec.kind = fit(app_kind, &r.kind);
            }
            a.runtime = Some(spec);
        }
        if let Some(h) = &r.healthcheck {
            a.healthcheck = healthcheck(e, &format!("{at}.healthcheck"), h.clone());
        }
    }
}

impl Application {
    /// Every runnable artifact with the spec it runs with, primary first (manifest order).
    /// One entry for an app with one runnable artifact, whose spec is then the app's own
    /// (unless the artifact entry overrides it).
    pub fn components(&self) -> Vec<Component> {
        self.artifacts
            .iter()
            .filter(|a| RUNNABLE_TYPES.contains(&a.kind.as_str()))
            .enumerate()
            .map(|(i, a)| {
                let mut spec = self.spec.clone();
                if i > 0 {
                    let app = &self.spec.runtime;
                    spec.runtime = RuntimeSpec {
                        kind: fit(&app.kind, &a.kind),
                        restart: app.restart.clone(),
                        startup_timeout_ms: app.startup_timeout_ms,
                        stop_grace_ms: app.stop_grace_ms,
                        ..RuntimeSpec::default()
                    };
                    spec.healthcheck = None;
                }
                if let Some(rt) = &a.runtime {
                    spec.runtime = rt.clone();
                }
                if let Some(h) = &a.healthcheck {
                    spec.healthcheck = Some(h.clone());
                }
                Component {
                    artifact: a.clone(),
                    spec,
                }
            })
            .collect()
    }
}
