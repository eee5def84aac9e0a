//! Rebuilding state at agent start from what was persisted and what the disk and process table
//! show: the accepted desired state, the installed versions that are still present, and the
//! processes still running from before, which are adopted (watched) instead of started a second
//! time.

use super::{AppState, Daemon, SupEntry};
use crate::supervisor::Supervisor;
use std::time::Instant;

impl Daemon {
    /// Loads the durable state and adopts processes that are still ours.
    pub(super) fn restore(&mut self, now: Instant) {
        let restored = self.exec.load();
        self.accept(restored.desired);
        for (name, rec) in restored.apps {
            let mut st = AppState::default();
            st.obs.installed = rec
                .installed
                .into_iter()
                .filter(|v| self.exec.is_installed(&name, v))
                .collect();
            st.obs.current = rec.current;
            self.apps.insert(name, st);
        }
        for rec in restored.procs {
            if self.exec.adopt(&rec) {
                tracing::info!(app = %rec.app, version = %rec.version, pid = rec.pid, "adopting running app");
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
                self.exec.forget_proc(&rec.app, &rec.version);
            }
        }
        self.adopt_units(now);
    }
}
