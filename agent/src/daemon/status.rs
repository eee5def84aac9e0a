//! What the agent reports and remembers: the observed state (as the reconciler and the status
//! see it), the device status sent to the bus, and the per-app record kept in the agent's
//! database so a restart knows what is installed and current.

use super::Daemon;
use crate::reconcile::{Observed, ProcView};
use crate::report;
use fleet_schema::DeviceStatus;

impl Daemon {
    /// The observed state as the reconciler and status builder see it.
    pub(super) fn observed(&self) -> Observed {
        let mut out: Observed = self
            .apps
            .iter()
            .map(|(name, st)| (name.clone(), st.obs.clone()))
            .collect();
        for ((app, version), entry) in &self.sups {
            let s = &entry.sup;
            out.entry(app.clone()).or_default().procs.insert(
                version.clone(),
                ProcView {
                    phase: s.phase(),
                    live: s.is_live(),
                    running: s.is_running(),
                    stopping: s.is_stopping(),
                    failed: s.is_failed(),
                    restart_count: s.restart_count(),
                    last_error: s.last_error().map(str::to_string),
                    health: entry
                        .health
                        .as_ref()
                        .map(|h| h.state().clone())
                        .unwrap_or_default(),
                    health_message: entry
                        .health
                        .as_ref()
                        .and_then(|h| h.message().map(str::to_string)),
                    running_since: entry.running_since,
                },
            );
        }
        out
    }

    /// Persists the version that reached running as the app's current one.
    pub(super) fn record_current(&mut self) {
        let Some(desired) = &self.desired else {
            return;
        };
        let mut changed = Vec::new();
        for want in &desired.apps {
            let key = (want.name.clone(), want.version.clone());
            let running = self.sups.get(&key).is_some_and(|e| e.sup.is_running());
            let st = self.apps.entry(want.name.clone()).or_default();
            if running && st.obs.current.as_ref() != Some(&want.version) {
                st.obs.current = Some(want.version.clone());
                changed.push(want.name.clone());
            }
        }
        for app in changed {
            self.persist_app(&app);
        }
    }

    /// Stores an app's installed and current versions, so a restarted agent knows them.
    pub(super) fn persist_app(&mut self, app: &str) {
        let Some(st) = self.apps.get(app) else {
            return;
        };
        let rec = crate::store::AppRecord {
            installed: st.obs.installed.clone(),
            current: st.obs.current.clone(),
        };
        self.exec.save_app(app, &rec);
    }

    /// The full status of the device, as published on every connect and change.
    pub(super) fn full_status(&self) -> DeviceStatus {
        DeviceStatus {
            device_id: self.cfg.device_id.to_string(),
            online: true,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            inventory: Some(self.inventory.clone()),
            observed_generation: self.desired.as_ref().map_or(0, |d| d.generation),
            apps: report::app_statuses(self.accepted.as_ref(), &self.observed()),
            reported_at: 0,
            refused: self.trust.refused.clone(),
        }
    }

    /// Hands the status to the bus task when it changed.
    pub(super) fn publish_status(&self) {
        let next = self.full_status();
        self.status.send_if_modified(|cur| {
            if *cur == next {
                false
            } else {
                *cur = next;
                true
            }
        });
    }
}
