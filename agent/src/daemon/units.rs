//! `runtime.type: systemd` apps in the event loop. The app's supervisor stays the agent's own
//! state machine; only its effects differ: `Spawn` has the executor render the version's unit
//! and hand it to a task that installs, enables and starts it and follows its runs
//! ([`crate::runtime::systemd::watch`]), `Terminate` asks systemd to stop the unit, `Kill`
//! signals the main process group as for any app. Once a version's supervisor is no longer
//! live (stopped, failed, done) its unit is stopped, disabled, deleted and the manager
//! reloaded. Units keep running when the agent shuts down (systemd owns them) and are adopted,
//! never started twice, when it comes back.

use super::executor::UnitJob;
use super::{Daemon, SupEntry};
use crate::runtime::health::HealthTracker;
use crate::supervisor::{Effect, SupEvent, Supervisor, STOP_GRACE};
use fleet_schema::app_spec::RuntimeKind;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::Instant;

type Key = (String, String);

/// Which supervised versions run as units, with the token of their current follower task, so
/// a late report of an earlier start is ignored.
#[derive(Debug, Default)]
pub(super) struct Units {
    tracked: BTreeMap<Key, u64>,
    next_token: u64,
}

impl Units {
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
            Effect::Terminate(_) if tracked => self.exec.stop_unit(&key.0, &key.1),
            // The main process leads its own process group (systemd calls setsid).
            Effect::Kill(pid) if tracked => self.exec.signal(*pid, Signal::SIGKILL),
            _ => return false,
        }
        true
    }

    /// Starts the version's unit through the executor, which installs, starts and follows it.
    fn spawn_unit(&mut self, key: &Key, now: Instant) -> Result<(), String> {
        let (app, version) = key;
        let spec = self.spec_for(app);
        let ports = self.instance_ports(app, &spec);
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(base) = &self.telem.metrics_base {
            env.push((
                "FLEET_METRICS_URL".into(),
                self.telem.counters.url_for(base, app),
            ));
        }
        env.extend(crate::traffic::ports::port_env(&ports, &spec.runtime.ports));
        env.extend(crate::components::identity_env(app));
        self.ensure_tailer(app);
        let token = self.units.track(key);
        self.exec.start_unit(UnitJob {
            app,
            version,
            spec: &spec,
            extra_env: &env,
            token,
        })?;
        if let Some(entry) = self.sups.get_mut(key) {
            entry.started = Some(now);
            entry.health = spec
                .healthcheck
                .clone()
                .map(|c| HealthTracker::new(crate::traffic::ports::remap_probe(c, &ports), now));
            entry.running_since = None;
            entry.ports = ports;
        }
        Ok(())
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
            self.exec.remove_unit(&key.0, &key.1, grace);
        }
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
        for found in self.exec.found_units() {
            let key = (found.app.clone(), found.version.clone());
            let (app, version) = &key;
            let desired = self.desired.as_ref().is_some_and(|d| {
                d.apps
                    .iter()
                    .any(|a| a.name == *app && a.version == *version)
            });
            match found.run {
                Some(run) if !self.sups.contains_key(&key) => {
                    tracing::info!(%app, %version, pid = run.pid, "adopting running unit");
                    self.apps.entry(app.clone()).or_default();
                    self.ensure_tailer(app);
                    let mut entry =
                        SupEntry::new(Supervisor::adopt(run.pid, now, self.policy_for(app)));
                    entry.health = self
                        .spec_for(app)
                        .healthcheck
                        .map(|c| HealthTracker::new(c, now));
                    entry.started = Some(now);
                    self.sups.insert(key.clone(), entry);
                    let token = self.units.track(&key);
                    self.exec.follow_unit(&found, token);
                }
                _ if desired => {}
                _ => self.exec.remove_unit(app, version, STOP_GRACE),
            }
        }
    }
}
