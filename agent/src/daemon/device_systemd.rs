//! The systemd half of [`super::device::DeviceExecutor`]: rendering a version's unit (after
//! writing its configuration files), installing, starting, stopping and removing units through
//! `systemctl` in background tasks (one at a time, in the order asked), following their runs,
//! and finding the agent's units at start. Reports reach the daemon as [`Event::Unit`].

use super::executor::{FoundUnit, UnitJob};
use super::Event;
use crate::layout;
use crate::runtime::files;
use crate::runtime::systemd::{self, watch, Settings, Systemctl, UnitInput};
use crate::supervisor::SupEvent;
use fleet_schema::Inventory;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Time beyond an app's stop grace allowed for `systemctl stop` to return.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// The systemd driver, whether the manager answered when last asked, and the lock that keeps
/// changes to the manager in order.
#[derive(Debug)]
pub(super) struct SystemdDriver {
    ctl: Result<Systemctl, String>,
    ready: Result<(), String>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl SystemdDriver {
    /// The driver for the configured scope; the manager is asked by [`Self::inventory`].
    pub(super) fn new(settings: &Settings) -> Self {
        Self {
            ctl: Systemctl::new(settings).map_err(|e| e.to_string()),
            ready: Err("the systemd manager was not asked yet".into()),
            lock: Arc::default(),
        }
    }

    /// The device's inventory, with the `systemd` capability only when the chosen manager
    /// answers now.
    pub(super) fn inventory(
        &mut self,
        data_dir: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Inventory {
        self.ready = match &self.ctl {
            Ok(c) => c.probe(),
            Err(e) => Err(e.clone()),
        };
        if let Err(why) = &self.ready {
            tracing::debug!(%why, "no systemd capability");
        }
        let mut inv = crate::inventory::collect(data_dir, labels);
        inv.capabilities.retain(|c| c != "systemd");
        if self.ready.is_ok() {
            inv.capabilities.push("systemd".into());
            inv.capabilities.sort();
        }
        inv
    }

    fn usable(&self) -> Result<Systemctl, String> {
        self.ready
            .clone()
            .map_err(|e| systemd::SystemdError::Absent(e).to_string())?;
        self.ctl.clone()
    }

    /// Writes the version's files, renders its unit and starts the task that installs,
    /// starts and follows it.
    pub(super) fn start(
        &self,
        data: &Path,
        device_id: &str,
        job: UnitJob<'_>,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Result<(), String> {
        let UnitJob {
            app,
            version,
            spec,
            extra_env,
            token,
        } = job;
        let ctl = self.usable()?;
        let unit = systemd::unit_name(app, version).map_err(|e| e.to_string())?;
        let vdir = layout::version_dir(data, app, version);
        let rt = &spec.runtime;
        let exec = files::program(&vdir, rt.entrypoint.as_deref(), app)
            .map_err(|e| format!("bad entry point: {e}"))?;
        let workdir = match &rt.workdir {
            Some(w) => {
                files::workdir(&vdir, w).map_err(|e| format!("bad working directory: {e}"))?
            }
            None => vdir.clone(),
        };
        files::write_all(&vdir, &spec.files).map_err(|e| format!("configuration files: {e}"))?;
        let pre = match &rt.pre_start_script {
            Some(s) => Some(crate::runtime::prestart::resolve(&vdir, s)?),
            None => None,
        };
        let (out_log, err_log) = (layout::log_file(data, app), layout::err_log_file(data, app));
        if let Some(logs) = out_log.parent() {
            std::fs::create_dir_all(logs)
                .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        }
        let mut env: Vec<(String, String)> = vec![
            ("FLEET_DEVICE_ID".into(), device_id.to_string()),
            ("FLEET_APP_NAME".into(), app.to_string()),
            ("FLEET_APP_VERSION".into(), version.to_string()),
            ("FLEET_APP_DIR".into(), vdir.to_string_lossy().into_owned()),
        ];
        env.extend(extra_env.iter().cloned());
        let text = systemd::render_unit(&UnitInput {
            app,
            version,
            exec: &exec,
            workdir: &workdir,
            pre_start: pre.as_deref(),
            extra_env: &env,
            stdout_log: &out_log,
            stderr_log: &err_log,
            wanted_by: ctl.scope().wanted_by(),
            spec,
        })
        .map_err(|e| e.to_string())?;
        tracing::info!(%app, %version, %unit, "starting systemd unit");
        let job = watch::StartJob {
            ctl,
            lock: self.lock.clone(),
            unit,
            text,
        };
        let report = reporter(events, app, version, token);
        tokio::spawn(watch::start_and_follow(job, report));
        Ok(())
    }

    /// Asks systemd to stop the unit (SIGTERM, SIGKILL after its TimeoutStopSec); the
    /// follower task reports the exit.
    pub(super) fn stop(&self, app: &str, version: &str) {
        let (Ok(ctl), Ok(unit)) = (self.ctl.clone(), systemd::unit_name(app, version)) else {
            return;
        };
        tracing::info!(app, version, %unit, "stopping systemd unit");
        let lock = self.lock.clone();
        tokio::spawn(async move {
            let _order = lock.lock().await;
            if let Err(e) = ctl.stop_no_block(&unit).await {
                tracing::warn!(%unit, error = %e, "cannot stop unit");
            }
        });
    }

    /// Stops, disables and deletes a version's unit in the background.
    pub(super) fn remove(&self, app: &str, version: &str, grace: Duration) {
        let (Ok(ctl), Ok(unit)) = (self.ctl.clone(), systemd::unit_name(app, version)) else {
            return;
        };
        tracing::info!(app, version, %unit, "removing systemd unit");
        let lock = self.lock.clone();
        tokio::spawn(async move {
            let _order = lock.lock().await;
            if let Err(e) = ctl.remove(&unit, grace + STOP_SLACK).await {
                tracing::warn!(%unit, error = %e, "cannot remove unit");
            }
        });
    }

    /// The agent's units and whether their main process runs (none when systemd is not
    /// usable; a unit whose state cannot be read is left out).
    pub(super) fn found(&self) -> Vec<FoundUnit> {
        let Ok(ctl) = self.usable() else {
            return Vec::new();
        };
        ctl.installed()
            .into_iter()
            .filter_map(|(unit, app, version)| match ctl.show_sync(&unit) {
                Ok(state) => Some(FoundUnit {
                    app,
                    version,
                    run: watch::running(&state),
                }),
                Err(e) => {
                    tracing::warn!(%unit, error = %e, "cannot read unit state");
                    None
                }
            })
            .collect()
    }

    /// Follows the run of a unit found running, reporting its end.
    pub(super) fn follow(
        &self,
        found: &FoundUnit,
        token: u64,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let (Ok(ctl), Ok(unit), Some(run)) = (
            self.usable(),
            systemd::unit_name(&found.app, &found.version),
            found.run,
        ) else {
            return;
        };
        let report = reporter(events, &found.app, &found.version, token);
        tokio::spawn(async move { watch::follow(&ctl, &unit, run, report).await });
    }
}

/// Reports a unit task's events to the daemon, with the token of the start they belong to.
fn reporter(
    events: &mpsc::UnboundedSender<Event>,
    app: &str,
    version: &str,
    token: u64,
) -> impl Fn(SupEvent) + Send + 'static {
    let events = events.clone();
    let (app, version) = (app.to_string(), version.to_string());
    move |event| {
        let _ = events.send(Event::Unit {
            app: app.clone(),
            version: version.clone(),
            token,
            event,
        });
    }
}
