//! `runtime.type: systemd` apps in the event loop. The app's supervisor stays the agent's own
//! state machine; only its effects differ: `Spawn` renders the version's unit and hands it to
//! a task that installs, enables and starts it and follows its runs
//! ([`crate::runtime::systemd::watch`]), `Terminate` asks systemd to stop the unit, `Kill`
//! signals the main process group as for any app. Once a version's supervisor is no longer
//! live (stopped, failed, done) its unit is stopped, disabled, deleted and the manager
//! reloaded. Units keep running when the agent shuts down (systemd owns them) and are adopted,
//! never started twice, when it comes back.

use super::{Daemon, Event, SupEntry};
use crate::layout;
use crate::runtime::files;
use crate::runtime::health::HealthTracker;
use crate::runtime::systemd::{self, watch, Settings, Systemctl, UnitInput};
use crate::supervisor::{Effect, SupEvent, Supervisor, STOP_GRACE};
use fleet_schema::app_spec::RuntimeKind;
use fleet_schema::Inventory;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Key = (String, String);

/// Time beyond an app's stop grace allowed for `systemctl stop` to return.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// The daemon's systemd state: the driver, whether the manager answers, and which supervised
/// versions run as units (with the token of their current follower task, so a late report
/// of an earlier start is ignored).
#[derive(Debug)]
pub(super) struct Units {
    ctl: Result<Systemctl, String>,
    ready: Result<(), String>,
    lock: Arc<tokio::sync::Mutex<()>>,
    tracked: BTreeMap<Key, u64>,
    next_token: u64,
}

impl Units {
    /// The driver for the configured scope; the manager is asked by [`Units::inventory`].
    pub(super) fn new(settings: &Settings) -> Self {
        Self {
            ctl: Systemctl::new(settings).map_err(|e| e.to_string()),
            ready: Err("the systemd manager was not asked yet".into()),
            lock: Arc::default(),
            tracked: BTreeMap::new(),
            next_token: 0,
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

    fn track(&mut self, key: &Key) -> u64 {
        self.next_token += 1;
        self.tracked.insert(key.clone(), self.next_token);
        self.next_token
    }
}

impl Daemon {
    fn wants_unit(&self, app: &str) -> bool {
        self.desired
            .as_ref()
            .and_then(|d| d.apps.iter().find(|a| a.name == app))
            .is_some_and(|a| a.spec.runtime.kind == RuntimeKind::Systemd)
    }

    /// Performs a supervisor effect of a systemd app; false when `key` is not one (the
    /// caller runs the effect on a process).
    pub(super) fn unit_effect(&mut self, key: &Key, effect: &Effect, now: Instant) -> bool {
        let tracked = self.units.tracked.contains_key(key);
        match effect {
            Effect::Spawn if tracked || self.wants_unit(&key.0) => {
                if let Err(e) = self.spawn_unit(key, now) {
                    tracing::warn!(app = %key.0, version = %key.1, error = %e, "cannot start unit");
                    self.units.tracked.remove(key);
                    self.sup_event(key, SupEvent::SpawnFailed(e), now);
                }
            }
            Effect::Terminate(_) if tracked => self.stop_unit(key),
            // The main process leads its own process group (systemd calls setsid).
            Effect::Kill(pid) if tracked => self.exec.signal(*pid, Signal::SIGKILL),
            _ => return false,
        }
        true
    }

    /// Renders the version's unit and starts the task that installs, starts and follows it.
    fn spawn_unit(&mut self, key: &Key, now: Instant) -> Result<(), String> {
        let (app, version) = key;
        let ctl = self.units.usable()?;
        let unit = systemd::unit_name(app, version).map_err(|e| e.to_string())?;
        let spec = self.spec_for(app);
        let data = self.cfg.data_dir.clone();
        let vdir = layout::version_dir(&data, app, version);
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
        let (out_log, err_log) = (
            layout::log_file(&data, app),
            layout::err_log_file(&data, app),
        );
        if let Some(logs) = out_log.parent() {
            std::fs::create_dir_all(logs)
                .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        }
        let ports = self.instance_ports(app, &spec);
        let mut env: Vec<(String, String)> = vec![
            ("FLEET_DEVICE_ID".into(), self.cfg.device_id.to_string()),
            ("FLEET_APP_NAME".into(), app.clone()),
            ("FLEET_APP_VERSION".into(), version.clone()),
            ("FLEET_APP_DIR".into(), vdir.to_string_lossy().into_owned()),
        ];
        if let Some(base) = &self.telem.metrics_base {
            env.push((
                "FLEET_METRICS_URL".into(),
                self.telem.counters.url_for(base, app),
            ));
        }
        env.extend(crate::traffic::ports::port_env(&ports, &rt.ports));
        env.extend(crate::components::identity_env(app));
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
            spec: &spec,
        })
        .map_err(|e| e.to_string())?;
        self.ensure_tailer(app);
        let token = self.units.track(key);
        if let Some(entry) = self.sups.get_mut(key) {
            entry.started = Some(now);
            entry.health = spec
                .healthcheck
                .clone()
                .map(|c| HealthTracker::new(crate::traffic::ports::remap_probe(c, &ports), now));
            entry.running_since = None;
            entry.ports = ports;
        }
        tracing::info!(%app, %version, %unit, "starting systemd unit");
        let job = watch::StartJob {
            ctl,
            lock: self.units.lock.clone(),
            unit,
            text,
        };
        let report = self.unit_reporter(key, token);
        tokio::spawn(watch::start_and_follow(job, report));
        Ok(())
    }

    fn unit_reporter(&self, key: &Key, token: u64) -> impl Fn(SupEvent) + Send + 'static {
        let events = self.events.clone();
        let (app, version) = key.clone();
        move |event| {
            let _ = events.send(Event::Unit {
                app: app.clone(),
                version: version.clone(),
                token,
                event,
            });
        }
    }

    /// Asks systemd to stop the unit (SIGTERM, SIGKILL after its TimeoutStopSec); the
    /// follower task reports the exit.
    fn stop_unit(&self, key: &Key) {
        let (Ok(ctl), Ok(unit)) = (self.units.ctl.clone(), systemd::unit_name(&key.0, &key.1))
        else {
            return;
        };
        tracing::info!(app = %key.0, version = %key.1, %unit, "stopping systemd unit");
        let lock = self.units.lock.clone();
        tokio::spawn(async move {
            let _order = lock.lock().await;
            if let Err(e) = ctl.stop_no_block(&unit).await {
                tracing::warn!(%unit, error = %e, "cannot stop unit");
            }
        });
    }

    /// Folds a follower task's report into the version's supervisor.
    pub(super) fn on_unit(
        &mut self,
        app: &str,
        version: &str,
        token: u64,
        event: SupEvent,
        now: Instant,
    ) {
        let key = (app.to_string(), version.to_string());
        if self.units.tracked.get(&key) != Some(&token) {
            return;
        }
        match event {
            SupEvent::Exited { pid, how } => self.on_exited(app, version, pid, how, now),
            SupEvent::Spawned(pid) => {
                tracing::info!(app, version, pid, "unit's main process runs");
                self.sup_event(&key, SupEvent::Spawned(pid), now);
            }
            other => {
                if let SupEvent::SpawnFailed(e) = &other {
                    tracing::warn!(app, version, error = %e, "unit did not start");
                }
                self.sup_event(&key, other, now);
            }
        }
    }

    /// Removes the unit of every version whose supervisor is no longer live.
    pub(super) fn settle_units(&mut self) {
        let done: Vec<Key> = self
            .units
            .tracked
            .keys()
            .filter(|k| self.sups.get(*k).is_none_or(|e| !e.sup.is_live()))
            .cloned()
            .collect();
        for key in done {
            self.units.tracked.remove(&key);
            let grace = self
                .sups
                .get(&key)
                .map_or(STOP_GRACE, |e| e.sup.policy().stop_grace);
            self.remove_unit(&key, grace);
        }
    }

    /// Stops, disables and deletes a version's unit in the background.
    fn remove_unit(&self, key: &Key, grace: Duration) {
        let (Ok(ctl), Ok(unit)) = (self.units.ctl.clone(), systemd::unit_name(&key.0, &key.1))
        else {
            return;
        };
        tracing::info!(app = %key.0, version = %key.1, %unit, "removing systemd unit");
        let lock = self.units.lock.clone();
        tokio::spawn(async move {
            let _order = lock.lock().await;
            if let Err(e) = ctl.remove(&unit, grace + STOP_SLACK).await {
                tracing::warn!(%unit, error = %e, "cannot remove unit");
            }
        });
    }

    /// At shutdown: units keep running under systemd; the agent only stops following them.
    pub(super) fn release_units(&mut self) {
        for key in std::mem::take(&mut self.units.tracked).into_keys() {
            if self.sups.remove(&key).is_some() {
                tracing::info!(app = %key.0, version = %key.1, "leaving the unit running under systemd");
            }
        }
    }

    /// At agent start: adopts every unit of ours whose main process runs, removes those of
    /// versions no longer desired, and leaves the rest to the reconciler's start (which
    /// takes over a restart systemd has pending instead of starting a second copy).
    pub(super) fn adopt_units(&mut self, now: Instant) {
        let Ok(ctl) = self.units.usable() else {
            return;
        };
        for (unit, app, version) in ctl.installed() {
            let key = (app.clone(), version.clone());
            let state = match ctl.show_sync(&unit) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%unit, error = %e, "cannot read unit state");
                    continue;
                }
            };
            let desired = self
                .desired
                .as_ref()
                .is_some_and(|d| d.apps.iter().any(|a| a.name == app && a.version == version));
            match watch::running(&state) {
                Some(run) if !self.sups.contains_key(&key) => {
                    tracing::info!(%app, %version, pid = run.pid, %unit, "adopting running unit");
                    self.apps.entry(app.clone()).or_default();
                    self.ensure_tailer(&app);
                    let mut entry =
                        SupEntry::new(Supervisor::adopt(run.pid, now, self.policy_for(&app)));
                    entry.health = self
                        .spec_for(&app)
                        .healthcheck
                        .map(|c| HealthTracker::new(c, now));
                    entry.started = Some(now);
                    self.sups.insert(key.clone(), entry);
                    let token = self.units.track(&key);
                    let report = self.unit_reporter(&key, token);
                    let ctl = ctl.clone();
                    tokio::spawn(async move { watch::follow(&ctl, &unit, run, report).await });
                }
                _ if desired => {}
                _ => self.remove_unit(&key, STOP_GRACE),
            }
        }
    }
}
