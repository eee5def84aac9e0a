//! The next desired state of each device a rollout decision touches: the deployment's template
//! (with a surge hint for make-before-break devices), or, for a revert, the app the device ran
//! before. Pure: the deployment service reads the current desired states, calls
//! [`apply_actions`] and writes what it returns in the same transaction.

use super::rollout::Actions;
use crate::model::DeploymentRecord;
use fleet_schema::{BlueGreenHint, DesiredApp, DesiredState, UnixMillis};
use std::collections::BTreeMap;

/// The desired states written for `actions` of the deployment `rec`, in order (every touch,
/// then every revert). `current` holds the devices' desired states before (a device without
/// one starts at generation 1); each new state is one generation higher and keeps the
/// device's other apps.
///
/// - A touched device gets the template; a surge device (rolling `max_surge`) gets it with a
///   rollout hint (validation = the grace period, no switch delay), so its agent starts the new
///   version next to the old one and stops the old one once the new one has been healthy that
///   long. A template that already carries a hint (blue-green) keeps it.
/// - The first touch of a device records the app it ran before in `rec.previous` (`None`:
///   not installed), never overwritten later, and every touch records the generation written in
///   `rec.devices`.
/// - A reverted device gets that previous app back, or loses the app when it had none.
///
/// A record without a template (written before templates existed) writes nothing.
pub fn apply_actions(
    current: &BTreeMap<String, DesiredState>,
    rec: &mut DeploymentRecord,
    actions: &Actions,
    now: UnixMillis,
) -> Vec<DesiredState> {
    let mut out = Vec::with_capacity(actions.touch.len() + actions.revert.len());
    let Some(template) = rec.template.clone() else {
        return out;
    };
    // What each device holds now, including what this decision already wrote to it.
    let mut latest: BTreeMap<&str, DesiredState> = BTreeMap::new();
    let surge_hint = BlueGreenHint {
        validation_ms: rec.rollout.as_ref().map_or(0, |r| r.params.min_healthy_ms),
        switch_delay_ms: 0,
    };
    for d in &actions.touch {
        let mut app = template.clone();
        if actions.surge.contains(d) {
            app.rollout.get_or_insert(surge_hint);
        }
        let prev = latest.get(d.as_str()).or_else(|| current.get(d));
        let before = prev.and_then(|p| p.apps.iter().find(|a| a.name == app.name).cloned());
        rec.previous.entry(d.clone()).or_insert(before);
        let next = set_app(prev, d, app, now);
        rec.devices.insert(d.clone(), next.generation);
        latest.insert(d.as_str(), next.clone());
        out.push(next);
    }
    for d in &actions.revert {
        let prev = latest.get(d.as_str()).or_else(|| current.get(d));
        let next = match rec.previous.get(d).cloned().flatten() {
            Some(app) => set_app(prev, d, app, now),
            None => remove_app(prev, d, &template.name, now),
        };
        latest.insert(d.as_str(), next.clone());
        out.push(next);
    }
    out
}

/// Returns `prev` with `app` set (replacing the same-named app, keeping the others, sorted by
/// name) and the generation one higher; a device without desired state starts at generation 1.
pub fn set_app(
    prev: Option<&DesiredState>,
    device: &str,
    app: DesiredApp,
    now: UnixMillis,
) -> DesiredState {
    let mut apps: Vec<DesiredApp> = prev.map(|p| p.apps.clone()).unwrap_or_default();
    apps.retain(|a| a.name != app.name);
    apps.push(app);
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    DesiredState {
        device_id: device.to_string(),
        generation: prev.map_or(0, |p| p.generation) + 1,
        apps,
        issued_at: now,
    }
}

/// Returns `prev` without the app named `name` and the generation one higher (a rollback of a
/// first install removes the app).
pub fn remove_app(
    prev: Option<&DesiredState>,
    device: &str,
    name: &str,
    now: UnixMillis,
) -> DesiredState {
    let mut apps: Vec<DesiredApp> = prev.map(|p| p.apps.clone()).unwrap_or_default();
    apps.retain(|a| a.name != name);
    DesiredState {
        device_id: device.to_string(),
        generation: prev.map_or(0, |p| p.generation) + 1,
        apps,
        issued_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{ArtifactRef, ArtifactType};

    fn app(name: &str, version: &str) -> DesiredApp {
        DesiredApp {
            name: name.into(),
            version: version.into(),
            artifact: ArtifactRef {
                name: name.into(),
                version: version.into(),
                kind: ArtifactType::Binary,
                size: 1,
                sha256: "00".into(),
                url: "http://x".into(),
                ..Default::default()
            },
            deployment_id: Some(format!("d-{name}-{version}")),
            spec: Default::default(),
            rollout: None,
            components: Vec::new(),
        }
    }

    #[test]
    fn first_generation_is_one() {
        let d = set_app(None, "dev", app("a", "1.0.0"), 5);
        assert_eq!((d.generation, d.apps.len(), d.issued_at), (1, 1, 5));
        assert_eq!(d.device_id, "dev");
    }

    #[test]
    fn replaces_same_app_and_keeps_others() {
        let d = set_app(None, "dev", app("b", "1.0.0"), 1);
        let d = set_app(Some(&d), "dev", app("a", "1.0.0"), 2);
        let d = set_app(Some(&d), "dev", app("b", "2.0.0"), 3);
        assert_eq!(d.generation, 3);
        let apps: Vec<(&str, &str)> = d
            .apps
            .iter()
            .map(|a| (a.name.as_str(), a.version.as_str()))
            .collect();
        assert_eq!(apps, vec![("a", "1.0.0"), ("b", "2.0.0")]);
    }

    use crate::engine::start::{start, NewDeployment};

    /// A record of deployment `d-new` setting app `a` to 2.0.0 (all at once, 30 s healthy).
    fn record() -> DeploymentRecord {
        let new = NewDeployment::all_at_once(
            "a",
            "2.0.0",
            app("a", "2.0.0").artifact,
            vec!["x".into(), "y".into()],
            1,
        );
        let (mut rec, _) = start(new, "d-new".into());
        if let Some(r) = rec.rollout.as_mut() {
            r.params.min_healthy_ms = 30_000;
        }
        rec
    }

    fn touch(devices: &[&str], surge: &[&str]) -> Actions {
        Actions {
            touch: devices.iter().map(|d| d.to_string()).collect(),
            surge: surge.iter().map(|d| d.to_string()).collect(),
            revert: vec![],
        }
    }

    fn revert(devices: &[&str]) -> Actions {
        Actions {
            revert: devices.iter().map(|d| d.to_string()).collect(),
            ..Actions::default()
        }
    }

    fn version_of<'a>(s: &'a DesiredState, name: &str) -> Option<&'a str> {
        s.apps
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.version.as_str())
    }

    /// x runs a@1.0.0 and b@1.0.0 at generation 4; y has no desired state.
    fn current() -> BTreeMap<String, DesiredState> {
        let x = set_app(None, "x", app("b", "1.0.0"), 0);
        let mut x = set_app(Some(&x), "x", app("a", "1.0.0"), 0);
        x.generation = 4;
        BTreeMap::from([("x".to_string(), x)])
    }

    #[test]
    fn a_touch_sets_the_template_and_only_surge_devices_get_a_hint() {
        let mut rec = record();
        let out = apply_actions(&current(), &mut rec, &touch(&["x", "y"], &["y"]), 9);
        let devices: Vec<(&str, u64)> = out
            .iter()
            .map(|s| (s.device_id.as_str(), s.generation))
            .collect();
        assert_eq!(devices, vec![("x", 5), ("y", 1)]);
        assert_eq!(version_of(&out[0], "a"), Some("2.0.0"));
        assert_eq!(version_of(&out[0], "b"), Some("1.0.0"), "other apps kept");
        assert_eq!(out[0].issued_at, 9);
        let hint = |s: &DesiredState| {
            s.apps
                .iter()
                .find(|a| a.name == "a")
                .and_then(|a| a.rollout)
        };
        assert_eq!(hint(&out[0]), None, "in place");
        assert_eq!(
            hint(&out[1]),
            Some(BlueGreenHint {
                validation_ms: 30_000,
                switch_delay_ms: 0
            }),
            "make-before-break for the grace period"
        );
        assert_eq!(
            rec.devices,
            BTreeMap::from([("x".into(), 5), ("y".into(), 1)])
        );
    }

    #[test]
    fn a_blue_green_template_keeps_its_own_hint_on_surge_devices() {
        let mut rec = record();
        let own = BlueGreenHint {
            validation_ms: 5,
            switch_delay_ms: 7,
        };
        if let Some(t) = rec.template.as_mut() {
            t.rollout = Some(own);
        }
        let out = apply_actions(&current(), &mut rec, &touch(&["y"], &["y"]), 9);
        assert_eq!(out[0].apps[0].rollout, Some(own));
    }

    #[test]
    fn the_first_touch_records_what_ran_before_and_later_ones_keep_it() {
        let mut rec = record();
        let out = apply_actions(&current(), &mut rec, &touch(&["x", "y"], &[]), 9);
        assert_eq!(
            rec.previous.get("x").cloned().flatten().map(|a| a.version),
            Some("1.0.0".to_string())
        );
        assert_eq!(rec.previous.get("y"), Some(&None), "nothing ran before");
        // Touched again (a later step, or the same device twice): what ran before the
        // deployment stays recorded, not the deployment's own version.
        let now: BTreeMap<String, DesiredState> =
            out.into_iter().map(|s| (s.device_id.clone(), s)).collect();
        let again = apply_actions(&now, &mut rec, &touch(&["x", "x"], &[]), 10);
        assert_eq!(
            again.iter().map(|s| s.generation).collect::<Vec<_>>(),
            vec![6, 7],
            "each write builds on the one before"
        );
        assert_eq!(
            rec.previous.get("x").cloned().flatten().map(|a| a.version),
            Some("1.0.0".to_string())
        );
    }

    #[test]
    fn a_revert_restores_the_previous_app_or_removes_a_first_install() {
        let mut rec = record();
        let out = apply_actions(&current(), &mut rec, &touch(&["x", "y"], &[]), 9);
        let now: BTreeMap<String, DesiredState> =
            out.into_iter().map(|s| (s.device_id.clone(), s)).collect();
        let back = apply_actions(&now, &mut rec, &revert(&["x", "y"]), 10);
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].device_id.as_str(), back[0].generation), ("x", 6));
        assert_eq!(version_of(&back[0], "a"), Some("1.0.0"), "the previous app");
        assert_eq!(version_of(&back[0], "b"), Some("1.0.0"), "other apps kept");
        assert_eq!((back[1].device_id.as_str(), back[1].generation), ("y", 2));
        assert!(back[1].apps.is_empty(), "a first install is removed");
        assert_eq!(
            rec.devices.get("x"),
            Some(&5),
            "reverts do not move the recorded touch"
        );
    }

    #[test]
    fn a_record_without_a_template_writes_nothing() {
        let mut rec = record();
        rec.template = None;
        let out = apply_actions(&current(), &mut rec, &touch(&["x"], &[]), 9);
        assert!(out.is_empty());
        assert!(rec.previous.is_empty() && rec.devices.is_empty());
    }
}
