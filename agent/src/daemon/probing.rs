//! Health checks in the event loop: start the probes that are due (the executor runs each in
//! its own task, so a slow probe never blocks the loop) and fold their verdicts into the trackers. The first
//! healthy verdict ends an app's startup phase; every change of verdict changes the published
//! status.

use super::executor::ProbeJob;
use super::Daemon;
use crate::supervisor::SupEvent;
use fleet_schema::HealthState;
use std::time::Instant;

impl Daemon {
    /// Starts every probe that is due.
    pub(super) fn start_probes(&mut self, now: Instant) {
        for ((app, version), entry) in self.sups.iter_mut() {
            let (Some(h), Some(pid)) = (entry.health.as_mut(), entry.sup.pid()) else {
                continue;
            };
            if entry.sup.is_stopping() || !h.begin(now) {
                continue;
            }
            self.exec.probe(ProbeJob {
                app: app.clone(),
                version: version.clone(),
                pid,
                probe: h.check().probe.clone(),
                timeout: h.timeout(),
            });
        }
    }

    /// Folds a probe's verdict into the tracker of the process it probed.
    pub(super) fn on_probed(
        &mut self,
        app: &str,
        version: &str,
        pid: u32,
        result: Result<(), String>,
        now: Instant,
    ) {
        let key = (app.to_string(), version.to_string());
        let Some(entry) = self.sups.get_mut(&key) else {
            return;
        };
        if entry.sup.pid() != Some(pid) {
            return;
        }
        let Some(h) = entry.health.as_mut() else {
            return;
        };
        if h.on_result(result, now) {
            tracing::info!(app, version, health = %h.state(), message = h.message().unwrap_or(""), "health changed");
        }
        if *h.state() == HealthState::Healthy {
            self.sup_event(&key, SupEvent::Healthy, now);
        }
    }
}
