//! Blue-green traffic in the event loop. For a blue-green app that lists `runtime.ports`, the
//! agent owns each service port (a [`Forwarder`]) and gives every instance its own internal
//! loopback port ([`crate::traffic::ports`]); [`crate::traffic::bluegreen::choose_active`]
//! decides which instance new connections reach.

use super::Daemon;
use crate::traffic::bluegreen::{self, Candidate};
use crate::traffic::forward::{self, Forwarder};
use fleet_schema::{AppSpec, BlueGreenHint};
use std::collections::BTreeMap;
use std::time::Instant;

/// The blue-green hint and service ports of an app whose traffic the agent switches.
fn switched(hint: Option<&BlueGreenHint>, spec: &AppSpec) -> Option<(BlueGreenHint, Vec<u16>)> {
    let hint = hint?;
    (!spec.runtime.ports.is_empty()).then(|| (*hint, spec.runtime.ports.clone()))
}

impl Daemon {
    /// The blue-green hint of an app as desired now.
    fn hint_for(&self, app: &str) -> Option<BlueGreenHint> {
        self.desired
            .as_ref()
            .and_then(|d| d.apps.iter().find(|a| a.name == app))
            .and_then(|a| a.rollout)
    }

    /// Internal ports for a new instance of `app`: one per service port when its traffic is
    /// switched by the agent, none otherwise.
    pub(super) fn instance_ports(&self, app: &str, spec: &AppSpec) -> BTreeMap<u16, u16> {
        let Some((_, service)) = switched(self.hint_for(app).as_ref(), spec) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for s in service {
            match forward::free_loopback_port() {
                Ok(p) => {
                    out.insert(s, p);
                }
                Err(e) => tracing::warn!(app, port = s, error = %e, "no internal port"),
            }
        }
        out
    }

    /// Notes when each instance started running, binds the service ports of blue-green apps and
    /// points each at the active instance; drops forwarders of apps no longer switched.
    pub(super) fn route_traffic(&mut self, now: Instant) {
        for entry in self.sups.values_mut() {
            if entry.sup.is_running() && !entry.sup.is_stopping() {
                entry.running_since.get_or_insert(now);
            } else {
                entry.running_since = None;
            }
        }
        let wanted: Vec<(String, String, BlueGreenHint, Vec<u16>)> = self
            .desired
            .iter()
            .flat_map(|d| d.apps.iter())
            .filter_map(|a| {
                switched(a.rollout.as_ref(), &a.spec)
                    .map(|(h, p)| (a.name.clone(), a.version.clone(), h, p))
            })
            .collect();
        self.traffic
            .retain(|app, _| wanted.iter().any(|(a, ..)| a == app));
        for (app, version, hint, service) in wanted {
            let instances: Vec<(&str, &super::SupEntry)> = self
                .sups
                .iter()
                .filter(|((a, _), e)| *a == app && !e.ports.is_empty())
                .map(|((_, v), e)| (v.as_str(), e))
                .collect();
            let candidates: Vec<Candidate<'_>> = instances
                .iter()
                .map(|(v, e)| Candidate {
                    version: v,
                    running_since: e.running_since,
                    stopping: e.sup.is_stopping(),
                })
                .collect();
            let active = bluegreen::choose_active(&hint, &version, &candidates, now)
                .and_then(|v| instances.iter().find(|(iv, _)| *iv == v))
                .map(|(v, e)| (v.to_string(), e.ports.clone()));
            let fwds = self.traffic.entry(app.clone()).or_default();
            for s in service {
                if let std::collections::btree_map::Entry::Vacant(slot) = fwds.entry(s) {
                    let bound = Forwarder::bind(
                        self.cfg.forward_listen,
                        s,
                        self.cfg.limits.forward_max_connections,
                        self.telem.limits.clone(),
                    );
                    match bound {
                        Ok(f) => {
                            let at = self.cfg.forward_listen;
                            tracing::info!(%app, port = s, %at, "serving port through the agent");
                            slot.insert(f);
                        }
                        Err(e) => {
                            tracing::warn!(%app, port = s, error = %e, "cannot listen on service port");
                            continue;
                        }
                    }
                }
                let (Some(fwd), Some((v, ports))) = (fwds.get(&s), active.as_ref()) else {
                    continue;
                };
                if let Some(internal) = ports.get(&s) {
                    if fwd.set_backend(*internal) {
                        tracing::info!(%app, version = %v, port = s, internal, "traffic switched");
                    }
                }
            }
        }
    }

    /// The next blue-green switch or old-instance stop that is still ahead.
    pub(super) fn bluegreen_deadline(&self, now: Instant) -> Option<Instant> {
        let desired = self.desired.as_ref()?;
        desired
            .apps
            .iter()
            .filter_map(|a| {
                let hint = a.rollout.as_ref()?;
                let since = self
                    .sups
                    .get(&(a.name.clone(), a.version.clone()))?
                    .running_since?;
                let ports = !a.spec.runtime.ports.is_empty();
                [
                    bluegreen::switch_at(hint, since),
                    bluegreen::old_stop_at(hint, since, ports),
                ]
                .into_iter()
                .filter(|t| *t > now)
                .min()
            })
            .min()
    }
}
