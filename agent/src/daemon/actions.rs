//! Executors: carry out the reconciler's actions and the supervisors' effects, and fold their
//! results back in. Downloads and installs run on blocking threads; processes are watched by
//! tasks; each reports back as an [`Event`].

use super::{Daemon, Event, FetchFailure, SupEntry};
use crate::fetch::download::DownloadError;
use crate::fetch::refresh;
use crate::install;
use crate::layout;
use crate::reconcile::{Action, Failure, Job, JobKind};
use crate::runtime::health::HealthTracker;
use crate::runtime::raw::{self, LaunchSpec};
use crate::runtime::resource_limits::{self, Limits};
use crate::store::ProcRecord;
use crate::supervisor::{Effect, SupEvent, Supervisor};
use fleet_schema::ArtifactRef;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

/// Where cgroup v2 is mounted on the devices the agent writes limits for.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

type Key = (String, String);

impl Daemon {
    pub(super) fn execute(&mut self, action: Action, now: Instant) {
        match action {
            Action::Download {
                app,
                version,
                artifact,
            } => self.start_download(app, version, artifact),
            Action::Install { app, version, keep } => self.start_install(app, version, keep),
            Action::Start {
                app,
                version,
                fallback,
            } => {
                tracing::info!(%app, %version, fallback, "starting app");
                let policy = self.policy_for(&app);
                let (sup, effects) = Supervisor::start_with(fallback, policy);
                let key = (app, version);
                if !self.sups.contains_key(&key) {
                    // A version starting afresh replaces the app's counter names: whatever the
                    // previous version posted (junk included) frees its slots; a version still
                    // running posts its own again.
                    self.telem.counters.forget(&key.0);
                }
                self.sups.insert(key.clone(), SupEntry::new(sup));
                self.run_effects(&key, effects, now);
            }
            Action::Stop { app, version } => {
                tracing::info!(%app, %version, "stopping app");
                self.sup_event(&(app, version), SupEvent::Stop, now);
            }
            Action::Remove { app } => {
                tracing::info!(%app, "removing app that is no longer desired");
                if let Err(e) = install::remove_app(&self.cfg.data_dir, &app) {
                    tracing::warn!(%app, error = %e, "cannot delete app files");
                }
                if let Err(e) = self.store.remove_app(&app) {
                    tracing::error!(%app, error = %e, "cannot forget app");
                }
                self.telem.counters.forget(&app);
                self.apps.remove(&app);
                // Failed (not live) supervisors of the app would otherwise bring it back.
                self.sups.retain(|(a, _), _| *a != app);
            }
            Action::Refuse {
                app,
                version,
                error,
            } => {
                tracing::warn!(%app, %version, %error, "refusing app");
                self.apps.entry(app).or_default().obs.failure = Some(Failure {
                    version,
                    error,
                    retry_at: None,
                    transient: false,
                });
            }
        }
    }

    fn start_download(&mut self, app: String, version: String, artifact: ArtifactRef) {
        // The query of a download URL is a credential (signature, presigned S3 parameters):
        // logged without it.
        let shown = artifact.url.split('?').next().unwrap_or_default();
        tracing::info!(%app, %version, url = %shown, "downloading");
        let st = self.apps.entry(app.clone()).or_default();
        st.obs.job = Some(Job {
            version: version.clone(),
            kind: JobKind::Download,
        });
        // A verified download of a version no longer wanted only takes space.
        if let Some(stale) = st.obs.downloaded.take().filter(|v| *v != version) {
            let _ = std::fs::remove_file(layout::partial(&self.cfg.data_dir, &app, &stale));
        }
        let partial = layout::partial(&self.cfg.data_dir, &app, &version);
        let events = self.events.clone();
        let cancel = self.cancel.clone();
        let trust = self.cfg.artifacts.trust.clone();
        let inventory = self.inventory.clone();
        let controller = refresh::Controller {
            base: Some(self.cfg.server.clone()),
            credential: Some(fleet_schema::trust::tokens::device_credential(
                self.cfg.device_id.as_str(),
                &self.trust.record.mqtt_password,
            )),
        };
        tokio::task::spawn_blocking(move || {
            // Refuse before downloading anything the device must not install.
            let result = match crate::fetch::verify::check(&artifact, &trust, &inventory) {
                Err(refusal) => Err(Some(FetchFailure {
                    error: refusal.to_string(),
                    transient: false,
                })),
                Ok(()) => {
                    match refresh::fetch_artifact(&artifact, &controller, &partial, &cancel) {
                        Ok(()) => Ok(()),
                        Err(DownloadError::Cancelled) => Err(None),
                        Err(e) => Err(Some(FetchFailure {
                            error: e.to_string(),
                            transient: e.is_transient(),
                        })),
                    }
                }
            };
            let _ = events.send(Event::Downloaded {
                app,
                version,
                result,
            });
        });
    }

    fn start_install(&mut self, app: String, version: String, keep: BTreeSet<String>) {
        tracing::info!(%app, %version, "installing");
        self.apps.entry(app.clone()).or_default().obs.job = Some(Job {
            version: version.clone(),
            kind: JobKind::Install,
        });
        let data = self.cfg.data_dir.clone();
        let events = self.events.clone();
        let plan = install::InstallPlan::for_app(
            self.desired.as_ref(),
            &app,
            &version,
            self.cfg.artifacts.archive_limits,
        );
        tokio::task::spawn_blocking(move || {
            let partial = layout::partial(&data, &app, &version);
            let result = install::install(&data, &app, &version, &partial, &keep, &plan)
                .map(|_| ())
                .map_err(|e| FetchFailure {
                    error: e.to_string(),
                    transient: e.is_transient(),
                });
            let _ = events.send(Event::Installed {
                app,
                version,
                result,
            });
        });
    }

    fn fail_fetch(&mut self, app: &str, version: &str, failure: FetchFailure, now: Instant) {
        let st = self.apps.entry(app.to_string()).or_default();
        let delay = st.retry.next_delay();
        let FetchFailure { error, transient } = failure;
        tracing::warn!(app, version, %error, transient, retry_in_s = delay.as_secs(), "fetching app failed");
        st.obs.failure = Some(Failure {
            version: version.to_string(),
            error,
            retry_at: Some(now + delay),
            transient,
        });
    }

    pub(super) fn on_downloaded(
        &mut self,
        app: &str,
        version: &str,
        result: Result<(), Option<FetchFailure>>,
        now: Instant,
    ) {
        if let Some(st) = self.apps.get_mut(app) {
            st.obs.job = None;
        }
        match result {
            Ok(()) => {
                tracing::info!(app, version, "download verified");
                self.apps.entry(app.to_string()).or_default().obs.downloaded =
                    Some(version.to_string());
            }
            Err(None) => {}
            Err(Some(error)) => self.fail_fetch(app, version, error, now),
        }
    }

    pub(super) fn on_installed(
        &mut self,
        app: &str,
        version: &str,
        result: Result<(), FetchFailure>,
        now: Instant,
    ) {
        let st = self.apps.entry(app.to_string()).or_default();
        st.obs.job = None;
        st.obs.downloaded = None;
        match result {
            Ok(()) => {
                tracing::info!(app, version, "installed");
                // Install pruned every version directory other than this one and the kept ones.
                let dir = layout::app_dir(&self.cfg.data_dir, app);
                st.obs.installed.retain(|v| dir.join(v).is_dir());
                st.obs.installed.insert(version.to_string());
                st.obs.failure = None;
                st.retry.reset();
                self.persist_app(app);
            }
            Err(failure) => self.fail_fetch(app, version, failure, now),
        }
    }

    pub(super) fn on_exited(
        &mut self,
        app: &str,
        version: &str,
        pid: u32,
        how: String,
        now: Instant,
    ) {
        let key = (app.to_string(), version.to_string());
        if !self.sups.contains_key(&key) {
            return;
        }
        if let Some(reason) = self.oom_reason(app) {
            self.sup_event(&key, SupEvent::LimitExceeded(reason), now);
        }
        let Some(entry) = self.sups.get_mut(&key) else {
            return;
        };
        if entry.record.as_ref().is_some_and(|r| r.pid == pid) {
            entry.record = None;
            if let Err(e) = self.store.remove_proc(app, version) {
                tracing::warn!(error = %e, "cannot forget process record");
            }
        }
        tracing::info!(app, version, pid, %how, "app process ended");
        self.sup_event(&key, SupEvent::Exited { pid, how }, now);
    }

    pub(super) fn sup_event(&mut self, key: &Key, event: SupEvent, now: Instant) {
        let effects = match self.sups.get_mut(key) {
            Some(e) => e.sup.on_event(event, now),
            None => return,
        };
        self.run_effects(key, effects, now);
    }

    pub(super) fn run_effects(&mut self, key: &Key, effects: Vec<Effect>, now: Instant) {
        for effect in effects {
            if self.unit_effect(key, &effect, now) {
                continue;
            }
            match effect {
                Effect::Terminate(pid) => raw::signal_group(pid, Signal::SIGTERM),
                Effect::Kill(pid) => raw::signal_group(pid, Signal::SIGKILL),
                Effect::Spawn => {
                    let event = self.spawn(key);
                    self.sup_event(key, event, now);
                }
            }
        }
    }

    /// Launches the process for `key` and starts waiting for it; returns the supervisor event.
    fn spawn(&mut self, key: &Key) -> SupEvent {
        let (app, version) = key;
        let app_spec = self.spec_for(app);
        let mut limits = Limits::from_resources(&app_spec.resources);
        limits.cgroup =
            resource_limits::prepare_cgroup(Path::new(CGROUP_ROOT), app, &app_spec.resources);
        let ports = self.instance_ports(app, &app_spec);
        let mut extra_env: Vec<(String, String)> = self
            .telem
            .metrics_base
            .as_ref()
            .map(|base| {
                (
                    "FLEET_METRICS_URL".to_string(),
                    self.telem.counters.url_for(base, app),
                )
            })
            .into_iter()
            .collect();
        extra_env.extend(crate::traffic::ports::port_env(
            &ports,
            &app_spec.runtime.ports,
        ));
        extra_env.extend(crate::components::identity_env(app));
        self.ensure_tailer(app);
        let spec = LaunchSpec {
            data: &self.cfg.data_dir,
            device_id: self.cfg.device_id.as_str(),
            app,
            version,
            app_spec: &app_spec,
            limits,
            launcher: self.launcher.as_deref(),
            extra_env: &extra_env,
        };
        let launched = match raw::launch(spec) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%app, %version, error = %e, "cannot start app");
                return SupEvent::SpawnFailed(e.to_string());
            }
        };
        let pid = launched.pid;
        let record = ProcRecord {
            app: app.clone(),
            version: version.clone(),
            pid,
            start_time: launched.start_time,
            exe: launched.exe.to_string_lossy().into_owned(),
        };
        if let Err(e) = self.store.set_proc(&record) {
            tracing::error!(error = %e, "cannot record app process; it would not be adopted after an agent restart");
        }
        if let Some(entry) = self.sups.get_mut(key) {
            entry.record = Some(record);
            let now = Instant::now();
            entry.started = Some(now);
            entry.health = app_spec
                .healthcheck
                .clone()
                .map(|c| HealthTracker::new(crate::traffic::ports::remap_probe(c, &ports), now));
            entry.running_since = None;
            entry.ports = ports;
        }
        let mut child = launched.child;
        let events = self.events.clone();
        let (app, version) = (app.clone(), version.clone());
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => raw::describe_exit(status),
                Err(e) => format!("cannot wait for process: {e}"),
            };
            let _ = events.send(Event::Exited {
                app,
                version,
                pid,
                how,
            });
        });
        tracing::info!(app = %key.0, version = %key.1, pid, "app process started");
        SupEvent::Spawned(pid)
    }
}
