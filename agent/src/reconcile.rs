//! The reconciler: a pure function of (desired state, observed state, now) that says what to do
//! next. It never performs I/O; the agent's executor carries out the [`Action`]s and feeds the
//! results back into the observed state, then asks again. Calling it repeatedly with unchanged
//! inputs is safe: actions already in progress are visible in the observed state and not
//! repeated.

use fleet_schema::{AppPhase, ArtifactRef, DesiredApp, DesiredState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Which step of fetching a version is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Downloading and verifying.
    Download,
    /// Moving into place.
    Install,
}

/// A download or install running for one version of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Version being fetched.
    pub version: String,
    /// Which step.
    pub kind: JobKind,
}

/// The last failed attempt to fetch or install a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Version that failed.
    pub version: String,
    /// Why, as reported in `last_error`.
    pub error: String,
    /// When to try again; `None` means only a new generation retries.
    pub retry_at: Option<Instant>,
    /// The failure was the network's or the server's, not the artifact's: reported as still
    /// downloading (with the error), not as failed.
    pub transient: bool,
}

/// What the supervisor of one version reports, as the reconciler and status need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcView {
    /// Phase of this version's process.
    pub phase: AppPhase,
    /// Has or will have a process (not stopped or failed).
    pub live: bool,
    /// Past its startup window.
    pub running: bool,
    /// A stop was requested.
    pub stopping: bool,
    /// Gave up after a failed upgrade start.
    pub failed: bool,
    /// Restarts so far.
    pub restart_count: u32,
    /// Why it last ended.
    pub last_error: Option<String>,
    /// Verdict of its health check (unknown without one).
    pub health: fleet_schema::HealthState,
    /// Detail of the health verdict.
    pub health_message: Option<String>,
    /// Since when it has been running without interruption (blue-green validation).
    pub running_since: Option<Instant>,
}

/// Everything the agent knows about one app on the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppObserved {
    /// Versions installed and verified under `apps/<app>/<version>/`.
    pub installed: BTreeSet<String>,
    /// The version that last reached running (kept with the new one for rollback).
    pub current: Option<String>,
    /// A version downloaded and verified, waiting to be installed.
    pub downloaded: Option<String>,
    /// Download or install in flight.
    pub job: Option<Job>,
    /// Last failure to fetch or install.
    pub failure: Option<Failure>,
    /// Supervised processes by version.
    pub procs: BTreeMap<String, ProcView>,
}

/// The device as observed, by app name.
pub type Observed = BTreeMap<String, AppObserved>;

/// One step towards the desired state.
// Actions live for one reconcile step and there are a handful of them: boxing the artifact
// reference would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Download and verify the artifact of an app version.
    Download {
        /// App name.
        app: String,
        /// The app version it is for: the download is recorded under it (an app version may
        /// reuse an artifact of another version, e.g. a configuration-only release).
        version: String,
        /// What to fetch.
        artifact: ArtifactRef,
    },
    /// Install a downloaded version, deleting versions other than it and `keep`.
    Install {
        /// App name.
        app: String,
        /// Version to install.
        version: String,
        /// Other versions whose directories must survive (current, running).
        keep: BTreeSet<String>,
    },
    /// Start a supervised process for an installed version.
    Start {
        /// App name.
        app: String,
        /// Version to run.
        version: String,
        /// Another version keeps serving, so a failed start is final.
        fallback: bool,
    },
    /// Stop a version's process.
    Stop {
        /// App name.
        app: String,
        /// Version to stop.
        version: String,
    },
    /// Forget an app no longer desired (its processes are gone): delete its files and record.
    Remove {
        /// App name.
        app: String,
    },
    /// Mark a version as failed without trying (e.g. unsupported artifact type).
    Refuse {
        /// App name.
        app: String,
        /// Version refused.
        version: String,
        /// Why.
        error: String,
    },
}

/// Computes the next actions. `desired` is `None` until a desired state was accepted.
pub fn reconcile(desired: Option<&DesiredState>, observed: &Observed, now: Instant) -> Vec<Action> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    let empty = AppObserved::default();
    let mut actions = Vec::new();
    let groups = crate::components::group_refusals(desired, refusal);
    let group_states = crate::components::groups(desired, observed);
    for want in &desired.apps {
        let app = want.name.clone();
        let obs = observed.get(&app).unwrap_or(&empty);
        let version = &want.version;
        let others_live: Vec<&String> = obs
            .procs
            .iter()
            .filter(|(v, p)| *v != version && p.live && !p.stopping)
            .map(|(v, _)| v)
            .collect();
        let group = crate::components::group_of(&group_states, &want.name);
        let mine = obs.procs.get(version);
        if group.is_some_and(|g| g.upgrade_failed)
            && !mine.is_some_and(|p| p.failed)
            && !others_live.is_empty()
        {
            // Another component's upgrade failed: this one stays on its old version too.
            if mine.is_some_and(|p| p.live && !p.stopping) {
                actions.push(Action::Stop {
                    app,
                    version: version.clone(),
                });
            }
            continue;
        }
        if let Some(mine) = mine {
            let may_stop_old = crate::traffic::bluegreen::old_may_stop(
                want.rollout.as_ref(),
                !want.spec.runtime.ports.is_empty(),
                mine.running_since,
                now,
            ) && group.is_none_or(|g| g.all_running);
            if mine.live && !mine.stopping && mine.running && may_stop_old {
                actions.extend(others_live.iter().map(|v| Action::Stop {
                    app: app.clone(),
                    version: (*v).clone(),
                }));
            }
            if mine.live || mine.failed {
                // Starting, running, being stopped (start again once stopped), or a failed
                // upgrade that only a new generation retries.
                continue;
            }
        }
        // A component that cannot run refuses its whole app (every unit with the same reason,
        // naming the component): half an app is not a version.
        let refused = groups
            .get(crate::components::app_of(&want.name))
            .cloned()
            .or_else(|| refusal(want));
        if let Some(error) = refused {
            if obs.failure.as_ref().is_none_or(|f| &f.version != version) {
                actions.push(Action::Refuse {
                    app,
                    version: version.clone(),
                    error,
                });
            }
            continue;
        }
        if obs.installed.contains(version) {
            if crate::runtime::container::exclusive_ports(&want.artifact.kind, &want.spec)
                && obs.procs.iter().any(|(v, p)| v != version && p.live)
            {
                // Two containers cannot publish the same host port: stop first, then start.
                actions.extend(others_live.iter().map(|v| Action::Stop {
                    app: app.clone(),
                    version: (*v).clone(),
                }));
                continue;
            }
            actions.push(Action::Start {
                app,
                version: version.clone(),
                fallback: !others_live.is_empty(),
            });
            continue;
        }
        if obs.job.is_some() {
            continue;
        }
        if let Some(f) = &obs.failure {
            if &f.version == version && f.retry_at.is_none_or(|t| now < t) {
                continue;
            }
        }
        if obs.downloaded.as_ref() == Some(version) {
            let mut keep: BTreeSet<String> = obs.current.iter().cloned().collect();
            keep.extend(
                obs.procs
                    .iter()
                    .filter(|(_, p)| p.live)
                    .map(|(v, _)| v.clone()),
            );
            keep.remove(version);
            actions.push(Action::Install {
                app,
                version: version.clone(),
                keep,
            });
        } else {
            actions.push(Action::Download {
                app,
                version: version.clone(),
                artifact: want.artifact.clone(),
            });
        }
    }
    for (app, obs) in observed {
        if desired.apps.iter().any(|a| &a.name == app) {
            continue;
        }
        let mut any_live = false;
        for (version, p) in &obs.procs {
            any_live |= p.live;
            if p.live && !p.stopping {
                actions.push(Action::Stop {
                    app: app.clone(),
                    version: version.clone(),
                });
            }
        }
        if !any_live && obs.job.is_none() {
            actions.push(Action::Remove { app: app.clone() });
        }
    }
    actions
}

/// Why this agent will not run a desired app at all, if it will not: running an image as a
/// systemd unit, or a non-image as a container, would silently ignore what the manifest asked
/// for; an artifact type it cannot install (the marker of a multi-component app included, when
/// it reaches the reconciler unexpanded) is refused naming the type.
pub fn refusal(want: &DesiredApp) -> Option<String> {
    if let Some(error) =
        crate::runtime::container::runtime_refusal(&want.spec.runtime.kind, &want.artifact.kind)
    {
        return Some(error);
    }
    (!crate::install::supported(&want.artifact.kind)).then(|| {
        format!(
            "artifact type {} is not supported by this agent yet",
            want.artifact.kind
        )
    })
}

/// The earliest time at which [`reconcile`] may answer differently without any new event
/// (a failed download becoming due for retry).
pub fn next_retry(observed: &Observed) -> Option<Instant> {
    observed
        .values()
        .filter_map(|o| o.failure.as_ref().and_then(|f| f.retry_at))
        .min()
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "reconcile_components_tests.rs"]
mod components_tests;
