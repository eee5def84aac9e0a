//! What changed between two polls of `GET /api/v1/devices`, for `fleetctl status --watch`:
//! a device going online or offline, an app's version, phase, health, running version or
//! error, its enrollment state, a new refused message, a device appearing or disappearing.
//! A device seen for the first time yields its presence, enrollment, apps and last refusal.

use crate::display;
use fleet_schema::api::DeviceView;
use fleet_schema::AppStatus;
use serde::Serialize;
use std::collections::BTreeMap;

/// One change, printed as one line (table) or one JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// When it was seen, Unix milliseconds.
    pub at: u64,
    /// The device.
    pub device: String,
    /// What changed.
    #[serde(flatten)]
    pub what: What,
}

/// What changed, tagged `change` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum What {
    /// The device is connected.
    Online,
    /// The device is not connected.
    Offline,
    /// An app's status, as the device reported it (the `AppStatus` fields).
    App(AppStatus),
    /// The device no longer reports this app.
    AppRemoved {
        /// The app.
        app: String,
    },
    /// The device's enrollment changed (`none` when it has none any more).
    Enrollment {
        /// accepted, pending, rejected, revoked or none.
        state: String,
    },
    /// The agent refused a message (forged, unsigned, replayed).
    Refused {
        /// The topic it came on.
        topic: String,
        /// Why it was refused.
        reason: String,
        /// Messages refused since the agent started.
        count: u64,
        /// When it was refused, Unix milliseconds.
        refused_at: u64,
    },
    /// fleetd no longer lists the device (e.g. after `fleetctl device reset`).
    Removed,
}

/// Remembers the last device list, so that only changes are reported.
#[derive(Default)]
pub struct Tracker {
    last: BTreeMap<String, DeviceView>,
}

impl Tracker {
    /// Folds one poll's devices (seen at `at`) and returns the changes since the previous one,
    /// by device id.
    pub fn update(&mut self, devices: Vec<DeviceView>, at: u64) -> Vec<Change> {
        let next: BTreeMap<String, DeviceView> =
            devices.into_iter().map(|d| (d.id.clone(), d)).collect();
        let mut changes = Vec::new();
        for (id, d) in &next {
            for what in diff(self.last.get(id), d) {
                changes.push(Change {
                    at,
                    device: id.clone(),
                    what,
                });
            }
        }
        for id in self.last.keys().filter(|id| !next.contains_key(*id)) {
            changes.push(Change {
                at,
                device: id.clone(),
                what: What::Removed,
            });
        }
        self.last = next;
        changes
    }
}

/// Whether two reports of an app differ in what `--watch` shows.
fn app_changed(a: &AppStatus, b: &AppStatus) -> bool {
    a.version != b.version
        || a.phase != b.phase
        || a.health != b.health
        || a.running_version != b.running_version
        || a.last_error != b.last_error
}

fn diff(old: Option<&DeviceView>, new: &DeviceView) -> Vec<What> {
    let mut out = Vec::new();
    if old.map(|o| o.online) != Some(new.online) {
        out.push(if new.online {
            What::Online
        } else {
            What::Offline
        });
    }
    let old_enrollment = old.and_then(|o| o.enrollment);
    if (old.is_some() || new.enrollment.is_some()) && old_enrollment != new.enrollment {
        out.push(What::Enrollment {
            state: new.enrollment.map_or("none", |e| e.as_str()).to_string(),
        });
    }
    let old_apps: BTreeMap<&str, &AppStatus> = old
        .map(|o| o.apps.iter().map(|a| (a.name.as_str(), a)).collect())
        .unwrap_or_default();
    for app in &new.apps {
        if old_apps
            .get(app.name.as_str())
            .is_none_or(|prev| app_changed(prev, app))
        {
            out.push(What::App(app.clone()));
        }
    }
    for name in old_apps.keys() {
        if !new.apps.iter().any(|a| a.name == *name) {
            out.push(What::AppRemoved {
                app: name.to_string(),
            });
        }
    }
    if let Some(r) = &new.refused {
        if old.and_then(|o| o.refused.as_ref()) != Some(r) {
            out.push(What::Refused {
                topic: r.topic.clone(),
                reason: r.reason.clone(),
                count: r.count,
                refused_at: r.at,
            });
        }
    }
    out
}

/// One human line: `HH:MM:SS  DEVICE  WHAT` (UTC time of the poll that saw it).
pub fn line(c: &Change) -> String {
    let what = match &c.what {
        What::Online => "online".to_string(),
        What::Offline => "offline".to_string(),
        What::App(app) => display::app(app),
        What::AppRemoved { app } => format!("{app} removed"),
        What::Enrollment { state } => format!("enrollment {state}"),
        What::Refused {
            topic,
            reason,
            count,
            ..
        } => format!("refused a message on {topic}: {reason} ({count} since the agent started)"),
        What::Removed => "removed".to_string(),
    };
    format!("{}  {}  {what}", display::clock(c.at), c.device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::trust::tokens::EnrollmentState;
    use fleet_schema::{AppPhase, HealthState, Refusal};

    fn app(version: &str, phase: AppPhase) -> AppStatus {
        AppStatus {
            name: "web".into(),
            version: version.into(),
            phase,
            restart_count: 0,
            last_error: None,
            running_version: None,
            deployment_id: None,
            health: HealthState::Unknown,
            health_message: None,
            components: Vec::new(),
        }
    }

    fn device(online: bool, apps: Vec<AppStatus>) -> DeviceView {
        DeviceView {
            id: "dev-1".into(),
            online,
            labels: Default::default(),
            inventory: None,
            agent_version: "0.1.0".into(),
            desired_generation: 1,
            observed_generation: 1,
            apps,
            last_seen: 1,
            enrollment: Some(EnrollmentState::Accepted),
            refused: None,
        }
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(line).collect()
    }

    #[test]
    fn first_sight_then_only_changes() {
        let mut t = Tracker::default();
        let first = t.update(
            vec![device(true, vec![app("1.0.0", AppPhase::Running)])],
            3_723_000,
        );
        assert_eq!(
            lines(&first),
            [
                "01:02:03  dev-1  online",
                "01:02:03  dev-1  enrollment accepted",
                "01:02:03  dev-1  web@1.0.0 running",
            ]
        );
        // Same state, newer last_seen and restart count: nothing to say.
        let mut same = device(true, vec![app("1.0.0", AppPhase::Running)]);
        same.last_seen = 99;
        same.apps[0].restart_count = 3;
        assert!(t.update(vec![same], 3_724_000).is_empty());

        let mut healthy = app("2.0.0", AppPhase::Running);
        healthy.health = HealthState::Healthy;
        let mut next = device(false, vec![healthy]);
        next.enrollment = Some(EnrollmentState::Revoked);
        next.refused = Some(Refusal {
            topic: "fleet/dev-1/desired".into(),
            reason: "bad signature".into(),
            at: 5,
            count: 2,
        });
        let changes = t.update(vec![next.clone()], 3_725_000);
        assert_eq!(
            changes.iter().map(|c| &c.what).cloned().collect::<Vec<_>>()[..2],
            [
                What::Offline,
                What::Enrollment {
                    state: "revoked".into()
                }
            ]
        );
        assert_eq!(changes.len(), 4);
        assert!(
            lines(&changes)[3].ends_with(
                "refused a message on fleet/dev-1/desired: bad signature (2 since the agent started)"
            ),
            "{:?}",
            lines(&changes)
        );
        // The same refusal again is not new.
        assert!(t.update(vec![next.clone()], 3_726_000).is_empty());
        next.apps.clear();
        assert_eq!(
            lines(&t.update(vec![next], 3_727_000)),
            ["01:02:07  dev-1  web removed"]
        );
        assert_eq!(
            lines(&t.update(vec![], 3_728_000)),
            ["01:02:08  dev-1  removed"]
        );
    }

    #[test]
    fn changes_are_json_objects_tagged_change() {
        let c = Change {
            at: 7,
            device: "dev-1".into(),
            what: What::App(app("1.0.0", AppPhase::Installing)),
        };
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["change"], "app");
        assert_eq!(v["device"], "dev-1");
        assert_eq!(v["at"], 7);
        assert_eq!(v["name"], "web");
        assert_eq!(v["phase"], "installing");
        let off = Change {
            at: 1,
            device: "d".into(),
            what: What::AppRemoved { app: "web".into() },
        };
        assert_eq!(
            serde_json::to_string(&off).expect("serializes"),
            r#"{"at":1,"device":"d","change":"app-removed","app":"web"}"#
        );
    }
}
