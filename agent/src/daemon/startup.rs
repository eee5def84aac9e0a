//! Rebuilding state at agent start from redb and the disk: the accepted desired state, the
//! installed versions that are still present, and the processes still running from before,
//! which are adopted (watched) instead of started a second time.

use super::{AppState, Daemon, Event, SupEntry, ADOPTED_POLL};
use crate::layout;
use crate::runtime::raw;
use crate::store::ProcRecord;
use crate::supervisor::Supervisor;
use std::path::Path;
use std::time::Instant;
use tokio::sync::mpsc;

impl Daemon {
    /// Loads the durable state and adopts processes that are still ours.
    pub(super) fn restore(&mut self, now: Instant) {
        match self.store.desired() {
            Ok(d) => self.accept(d),
            Err(e) => tracing::error!(error = %e, "cannot read the accepted desired state"),
        }
        match self.store.apps() {
            Ok(apps) => {
                for (name, rec) in apps {
                    let mut st = AppState::default();
                    st.obs.installed = rec
                        .installed
                        .into_iter()
                        .filter(|v| layout::executable(&self.cfg.data_dir, &name, v).is_file())
                        .collect();
                    st.obs.current = rec.current;
                    self.apps.insert(name, st);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read installed apps"),
        }
        let procs = match self.store.procs() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read recorded processes");
                Vec::new()
            }
        };
        for rec in procs {
            // pid plus start time identifies the process; the executable is only informative
            // (a script's /proc/<pid>/exe is its interpreter).
            if raw::is_same_process(rec.pid, rec.start_time) {
                if !raw::runs_executable(rec.pid, Path::new(&rec.exe)) {
                    tracing::debug!(pid = rec.pid, exe = %rec.exe, "adopted process runs another executable (a script?)");
                }
                tracing::info!(app = %rec.app, version = %rec.version, pid = rec.pid, "adopting running app");
                watch_adopted(self.events.clone(), &rec);
                self.apps.entry(rec.app.clone()).or_default();
                self.ensure_tailer(&rec.app);
                let mut entry =
                    SupEntry::new(Supervisor::adopt(rec.pid, now, self.policy_for(&rec.app)));
                entry.health = self
                    .spec_for(&rec.app)
                    .healthcheck
                    .map(|c| crate::runtime::health::HealthTracker::new(c, now));
                entry.started = Some(now);
                entry.record = Some(rec.clone());
                self.sups
                    .insert((rec.app.clone(), rec.version.clone()), entry);
            } else {
                tracing::info!(app = %rec.app, version = %rec.version, pid = rec.pid, "recorded app process is gone");
                if let Err(e) = self.store.remove_proc(&rec.app, &rec.version) {
                    tracing::warn!(error = %e, "cannot forget stale process record");
                }
            }
        }
        self.adopt_units(now);
    }
}

/// Polls an adopted process (not our child, so it cannot be waited for) until it is gone.
pub(super) fn watch_adopted(events: mpsc::UnboundedSender<Event>, rec: &ProcRecord) {
    let rec = rec.clone();
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
}
