//! The [`Executor`] that acts on this device: the agent database, the data directory, real
//! processes, and systemd units (through [`super::device_systemd`]). Downloads and installs run on blocking threads, processes and probes are
//! watched by tasks, and each reports back to the daemon as an [`Event`].

use super::device_systemd::SystemdDriver;
use super::executor::{
    DownloadJob, Executor, FoundUnit, InstallJob, LaunchJob, ProbeJob, Restored, UnitJob,
};
use super::{Event, FetchFailure, ADOPTED_POLL};
use crate::config::Config;
use crate::fetch::download::DownloadError;
use crate::fetch::refresh;
use crate::identity::enroll::Asker;
use crate::identity::record::EnrollmentRecord;
use crate::install;
use crate::layout;
use crate::runtime::{probe, raw, resource_limits};
use crate::store::{AppRecord, ProcRecord, Store};
use crate::telemetry::procfs::{self, DeviceSample, GroupSample};
use fleet_schema::{DesiredState, Inventory};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where cgroup v2 is mounted on the devices the agent writes limits for.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Carries out the daemon's effects on this device.
pub struct DeviceExecutor {
    store: Store,
    data: PathBuf,
    device_id: String,
    server: String,
    trust: crate::fetch::verify::TrustPolicy,
    /// This binary, re-executed as the limits launcher.
    launcher: Option<PathBuf>,
    events: mpsc::UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    systemd: SystemdDriver,
}

impl DeviceExecutor {
    /// An executor over `store` and the data directory of `cfg`, reporting to `events`.
    pub fn new(cfg: &Config, store: Store, events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            store,
            data: cfg.data_dir.clone(),
            device_id: cfg.device_id.to_string(),
            server: cfg.server.clone(),
            trust: cfg.artifacts.trust.clone(),
            launcher: std::env::current_exe().ok(),
            events,
            cancel: Arc::new(AtomicBool::new(false)),
            systemd: SystemdDriver::new(&cfg.systemd),
        }
    }
}

impl Executor for DeviceExecutor {
    fn load(&mut self) -> Restored {
        let desired = self.store.desired().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the accepted desired state");
            None
        });
        let apps = self.store.apps().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read installed apps");
            Default::default()
        });
        let procs = self.store.procs().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read recorded processes");
            Vec::new()
        });
        Restored {
            desired,
            apps,
            procs,
        }
    }

    fn save_desired(&mut self, desired: &DesiredState) -> Result<(), String> {
        self.store.set_desired(desired).map_err(|e| e.to_string())
    }

    fn save_app(&mut self, app: &str, record: &AppRecord) {
        if let Err(e) = self.store.set_app(app, record) {
            tracing::error!(app, error = %e, "cannot record app state");
        }
    }

    fn forget_app(&mut self, app: &str) {
        if let Err(e) = install::remove_app(&self.data, app) {
            tracing::warn!(%app, error = %e, "cannot delete app files");
        }
        if let Err(e) = self.store.remove_app(app) {
            tracing::error!(%app, error = %e, "cannot forget app");
        }
    }

    fn save_proc(&mut self, record: &ProcRecord) {
        if let Err(e) = self.store.set_proc(record) {
            tracing::error!(error = %e, "cannot record app process; it would not be adopted after an agent restart");
        }
    }

    fn forget_proc(&mut self, app: &str, version: &str) {
        if let Err(e) = self.store.remove_proc(app, version) {
            tracing::warn!(app, version, error = %e, "cannot forget process record");
        }
    }

    fn is_installed(&self, app: &str, version: &str) -> bool {
        layout::executable(&self.data, app, version).is_file()
    }

    fn download(&mut self, job: DownloadJob) {
        let partial = layout::partial(&self.data, &job.app, &job.version);
        let events = self.events.clone();
        let cancel = self.cancel.clone();
        let trust = self.trust.clone();
        let controller = refresh::Controller {
            base: Some(self.server.clone()),
            credential: Some(job.credential),
        };
        let DownloadJob {
            app,
            version,
            artifact,
            inventory,
            ..
        } = job;
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

    fn discard_download(&mut self, app: &str, version: &str) {
        let _ = std::fs::remove_file(layout::partial(&self.data, app, version));
    }

    fn install(&mut self, job: InstallJob) {
        let data = self.data.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let InstallJob {
                app,
                version,
                keep,
                plan,
            } = job;
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

    fn launch(&mut self, job: LaunchJob<'_>) -> Result<ProcRecord, String> {
        let mut limits = job.limits;
        limits.cgroup = resource_limits::prepare_cgroup(
            Path::new(CGROUP_ROOT),
            job.app,
            &job.app_spec.resources,
        );
        let launched = raw::launch(raw::LaunchSpec {
            data: &self.data,
            device_id: &self.device_id,
            app: job.app,
            version: job.version,
            app_spec: job.app_spec,
            limits,
            launcher: self.launcher.as_deref(),
            extra_env: job.extra_env,
        })
        .map_err(|e| e.to_string())?;
        let record = ProcRecord {
            app: job.app.to_string(),
            version: job.version.to_string(),
            pid: launched.pid,
            start_time: launched.start_time,
            exe: launched.exe.to_string_lossy().into_owned(),
        };
        let mut child = launched.child;
        let events = self.events.clone();
        let (app, version, pid) = (record.app.clone(), record.version.clone(), record.pid);
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
        Ok(record)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        raw::signal_group(pid, signal);
    }

    fn adopt(&mut self, record: &ProcRecord) -> bool {
        // pid plus start time identifies the process; the executable is only informative
        // (a script's /proc/<pid>/exe is its interpreter).
        if !raw::is_same_process(record.pid, record.start_time) {
            return false;
        }
        if !raw::runs_executable(record.pid, Path::new(&record.exe)) {
            tracing::debug!(pid = record.pid, exe = %record.exe, "adopted process runs another executable (a script?)");
        }
        let rec = record.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ADOPTED_POLL);
            loop {
                tick.tick().await;
                if !raw::is_same_process(rec.pid, rec.start_time) {
                    let _ = events.send(Event::Exited {
                        app: rec.app,
                        version: rec.version,
                        pid: rec.pid,
                        how: "adopted process ended (exit status unknown)".into(),
                    });
                    return;
                }
            }
        });
        true
    }

    fn probe(&mut self, job: ProbeJob) {
        let cwd = layout::version_dir(&self.data, &job.app, &job.version);
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = probe::run(&job.probe, job.timeout, &cwd).await;
            let _ = events.send(Event::Probed {
                app: job.app,
                version: job.version,
                pid: job.pid,
                result,
            });
        });
    }

    fn cancel_downloads(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn inventory(&mut self, labels: &BTreeMap<String, String>) -> Inventory {
        self.systemd.inventory(&self.data, labels)
    }

    fn start_unit(&mut self, job: UnitJob<'_>) -> Result<(), String> {
        self.systemd
            .start(&self.data, &self.device_id, job, &self.events)
    }

    fn stop_unit(&mut self, app: &str, version: &str) {
        self.systemd.stop(app, version);
    }

    fn remove_unit(&mut self, app: &str, version: &str, grace: Duration) {
        self.systemd.remove(app, version, grace);
    }

    fn found_units(&mut self) -> Vec<FoundUnit> {
        self.systemd.found()
    }

    fn follow_unit(&mut self, found: &FoundUnit, token: u64) {
        self.systemd.follow(found, token, &self.events);
    }

    fn reenroll(&mut self, asker: Asker, inventory: Inventory, at_ms: u64) {
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = crate::identity::enroll::attempt(&asker, inventory, at_ms);
            let _ = events.send(Event::Reenrolled(outcome));
        });
    }

    fn sample_groups(&mut self, pgids: &[u32]) -> (BTreeMap<u32, GroupSample>, u64) {
        (procfs::sample_groups(pgids), procfs::clock_ticks())
    }

    fn sample_device(&mut self) -> DeviceSample {
        procfs::sample_device(&self.data)
    }

    fn save_enrollment(&mut self, record: &EnrollmentRecord) -> Result<(), String> {
        record
            .save(&layout::enrollment(&self.data))
            .map_err(|e| e.to_string())
    }
}
