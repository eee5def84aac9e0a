//! Applications made of several artifacts on the device (see `fleet_schema::components`).
//!
//! The agent runs each component as a unit of its own, named `<app>__<component>`: the
//! reconciler, installers, supervisors, runtimes and on-disk layout work on units exactly as on
//! single-artifact apps (an app with one artifact is one unit named after the app, as before).
//! This module is the pure translation both ways: [`expand`] turns the accepted desired state
//! into the units' desired state, [`crate::report`] folds the units' status back into one
//! [`fleet_schema::AppStatus`] per app with a status per component, and [`group_refusals`]
//! makes a component that cannot run refuse its whole app rather than run half of it.
//!
//! Versions move together: the old version of a component stops only once every component
//! runs the new one ([`Group::all_running`]), and when one component's upgrade fails to start
//! (its old version keeps serving), the others stop their new version and stay on the old one
//! ([`Group::upgrade_failed`]) until a new desired state.

use crate::reconcile::Observed;
use fleet_schema::artifact::validate_name;
use fleet_schema::{DesiredApp, DesiredComponent, DesiredState};
use std::collections::{BTreeMap, BTreeSet};

/// Between an app's name and a component's in a unit name (shared with fleetd, which adds up a
/// unit's metrics into its app's).
pub const SEPARATOR: &str = fleet_schema::components::UNIT_SEPARATOR;

/// The unit that runs `component` of `app`.
pub fn unit_name(app: &str, component: &str) -> String {
    format!("{app}{SEPARATOR}{component}")
}

/// The app a unit belongs to (the unit itself for a single-artifact app).
pub fn app_of(unit: &str) -> &str {
    fleet_schema::components::app_of_unit(unit)
}

/// What a component's process learns about itself: `FLEET_APP_NAME` is its application's name
/// (not the unit's) and `FLEET_COMPONENT` its component's; nothing for a single-artifact app.
pub fn identity_env(unit: &str) -> Vec<(String, String)> {
    match unit.split_once(SEPARATOR) {
        Some((app, component)) => vec![
            ("FLEET_APP_NAME".to_string(), app.to_string()),
            ("FLEET_COMPONENT".to_string(), component.to_string()),
        ],
        None => Vec::new(),
    }
}

/// The desired app of one component's unit: the app's version, deployment and rollout hint,
/// the component's artifact and spec.
pub fn unit_app(app: &DesiredApp, c: &DesiredComponent) -> DesiredApp {
    DesiredApp {
        name: unit_name(&app.name, &c.name),
        version: app.version.clone(),
        artifact: c.artifact.clone(),
        deployment_id: app.deployment_id.clone(),
        spec: c.spec.clone(),
        rollout: app.rollout,
        components: Vec::new(),
    }
}

/// The desired state of the units: single-artifact apps as they are, every multi-component
/// app replaced by one app per component (see [`unit_app`]).
pub fn expand(d: &DesiredState) -> DesiredState {
    let apps = d
        .apps
        .iter()
        .flat_map(|a| {
            if a.components.is_empty() {
                vec![a.clone()]
            } else {
                a.components.iter().map(|c| unit_app(a, c)).collect()
            }
        })
        .collect();
    DesiredState {
        device_id: d.device_id.clone(),
        generation: d.generation,
        apps,
        issued_at: d.issued_at,
    }
}

/// Checks what [`expand`] needs: component names that are valid and unique within their app,
/// and units that cannot be mistaken for another app's (an app named `a__b` beside an app `a`
/// made of components).
pub fn check(d: &DesiredState) -> Result<(), String> {
    let grouped: BTreeSet<&str> = d
        .apps
        .iter()
        .filter(|a| !a.components.is_empty())
        .map(|a| a.name.as_str())
        .collect();
    for a in &d.apps {
        if a.components.is_empty() {
            if a.name.contains(SEPARATOR) && grouped.contains(app_of(&a.name)) {
                return Err(format!(
                    "app {} would share units with the components of app {}",
                    a.name,
                    app_of(&a.name)
                ));
            }
            continue;
        }
        let mut seen = BTreeSet::new();
        for c in &a.components {
            validate_name(&c.name).map_err(|e| format!("app {} component: {e}", a.name))?;
            if !seen.insert(c.name.as_str()) {
                return Err(format!(
                    "app {}: component {} is listed twice",
                    a.name, c.name
                ));
            }
        }
    }
    Ok(())
}

/// How the units of one multi-component app stand at its desired version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Every unit runs the desired version: the old versions may stop.
    pub all_running: bool,
    /// A unit's upgrade failed to start while its old version kept serving: the other units
    /// stay on (or go back to) their old version too, never half of the app on each version.
    pub upgrade_failed: bool,
}

/// The [`Group`] of every multi-component app, by app name.
pub fn groups(units: &DesiredState, observed: &Observed) -> BTreeMap<String, Group> {
    let mut out: BTreeMap<String, Group> = BTreeMap::new();
    for u in &units.apps {
        let Some((app, _)) = u.name.split_once(SEPARATOR) else {
            continue;
        };
        let proc = observed.get(&u.name).and_then(|o| o.procs.get(&u.version));
        let g = out.entry(app.to_string()).or_insert(Group {
            all_running: true,
            upgrade_failed: false,
        });
        g.all_running &= proc.is_some_and(|p| p.live && p.running && !p.stopping);
        g.upgrade_failed |= proc.is_some_and(|p| p.failed);
    }
    out
}

/// The group a unit belongs to, if it is a component.
pub fn group_of<'a>(groups: &'a BTreeMap<String, Group>, unit: &str) -> Option<&'a Group> {
    unit.split_once(SEPARATOR)
        .and_then(|(app, _)| groups.get(app))
}

/// Why each multi-component app cannot run, by app name: the first of its units that
/// `refusal` refuses, named. Every unit of such an app is refused with this reason.
pub fn group_refusals(
    units: &DesiredState,
    refusal: impl Fn(&DesiredApp) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in &units.apps {
        let Some((app, component)) = u.name.split_once(SEPARATOR) else {
            continue;
        };
        if out.contains_key(app) {
            continue;
        }
        if let Some(why) = refusal(u) {
            out.insert(app.to_string(), format!("component {component}: {why}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "components_tests.rs"]
pub(crate) mod tests;
