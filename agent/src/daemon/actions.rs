//! Carrying out the reconciler's actions and the supervisors' effects through the
//! [`Executor`](super::executor::Executor), and folding the reported results back in.

use super::executor::{DownloadJob, InstallJob, LaunchJob};
use super::{Daemon, FetchFailure, SupEntry};
use crate::install;
use crate::reconcile::{Action, Failure, Job, JobKind};
use crate::runtime::health::HealthTracker;
use crate::runtime::resource_limits::Limits;
use crate::supervisor::{Effect, SupEvent, Supervisor};
use fleet_schema::ArtifactRef;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::Instant;

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
                self.exec.forget_app(&app);
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
            self.exec.discard_download(&app, &stale);
        }
        let credential = fleet_schema::trust::tokens::device_credential(
            self.cfg.device_id.as_str(),
            &self.trust.record.mqtt_password,
        );
        self.exec.download(DownloadJob {
            app,
            version,
            artifact,
            inventory: self.inventory.clone(),
            credential,
        });
    }

    fn start_install(&mut self, app: String, version: String, keep: BTreeSet<String>) {
        tracing::info!(%app, %version, "installing");
        self.apps.entry(app.clone()).or_default().obs.job = Some(Job {
            version: version.clone(),
            kind: JobKind::Install,
        });
        let plan = install::InstallPlan::for_app(
            self.desired.as_ref(),
            &app,
            &version,
            self.cfg.artifacts.archive_limits,
        );
        self.exec.install(InstallJob {
            app,
            version,
            keep,
            plan,
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
                let exec = &self.exec;
                st.obs.installed.retain(|v| exec.is_installed(app, v));
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
        if let Some(reason) = self.oom_reason(app, now) {
            self.sup_event(&key, SupEvent::LimitExceeded(reason), now);
        }
        let Some(entry) = self.sups.get_mut(&key) else {
            return;
        };
        if entry.record.as_ref().is_some_and(|r| r.pid == pid) {
            entry.record = None;
            self.exec.forget_proc(app, version);
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
                Effect::Terminate(pid) => self.exec.signal(pid, Signal::SIGTERM),
                Effect::Kill(pid) => self.exec.signal(pid, Signal::SIGKILL),
                Effect::Spawn => {
                    let event = self.spawn(key, now);
                    self.sup_event(key, event, now);
                }
            }
        }
    }

    /// Launches the process for `key` (the executor waits for it); returns the supervisor
    /// event.
    fn spawn(&mut self, key: &Key, now: Instant) -> SupEvent {
        let (app, version) = key;
        let app_spec = self.spec_for(app);
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
        let launched = self.exec.launch(LaunchJob {
            app,
            version,
            app_spec: &app_spec,
            limits: Limits::from_resources(&app_spec.resources),
            extra_env: &extra_env,
        });
        let record = match launched {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%app, %version, error = %e, "cannot start app");
                return SupEvent::SpawnFailed(e);
            }
        };
        let pid = record.pid;
        self.exec.save_proc(&record);
        if let Some(entry) = self.sups.get_mut(key) {
            entry.record = Some(record);
            entry.started = Some(now);
            entry.health = app_spec
                .healthcheck
                .clone()
                .map(|c| HealthTracker::new(crate::traffic::ports::remap_probe(c, &ports), now));
            entry.running_since = None;
            entry.ports = ports;
        }
        tracing::info!(app = %key.0, version = %key.1, pid, "app process started");
        SupEvent::Spawned(pid)
    }
}
