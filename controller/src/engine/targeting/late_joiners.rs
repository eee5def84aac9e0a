//! Late joiners: devices that match a deployment's target after it was created (a new device,
//! or changed labels), chosen by the same [`select`] as at creation.

use super::fit::Release;
use super::select::select;
use crate::model::{DeploymentRecord, DeviceRecord, Phase};
use fleet_schema::api::{GroupSpec, TargetSpec};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Late joiners of one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joiners {
    /// Devices to add to the rollout.
    pub fresh: Vec<String>,
    /// Devices that match the target but cannot receive the release, with the reason, not yet
    /// recorded (with that reason) in the rollout.
    pub unfit: BTreeMap<String, String>,
}

/// The late joiners of each deployment in `deployments` (oldest first), by deployment id. A
/// device that matches several deployments of an application is claimed by the newest one
/// whose target grows (a selector, group or expressions; explicit lists never grow) and whose
/// rollout takes devices (running, paused or succeeded); a device already among a deployment's
/// targets stays claimed by it. `groups` holds every group by name (a target whose group no
/// longer exists takes no joiners); `fleet` the devices that may be targeted.
pub fn late_joiners(
    deployments: &[DeploymentRecord],
    groups: &BTreeMap<String, GroupSpec>,
    fleet: &BTreeMap<String, DeviceRecord>,
) -> BTreeMap<String, Joiners> {
    let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for rec in deployments.iter().rev() {
        let Some(r) = &rec.rollout else {
            continue;
        };
        let targets: HashSet<&String> = r.targets.iter().collect();
        let mut j = Joiners::default();
        if let Some(t) = rec.target.as_ref().filter(|t| takes_joiners(t, r.phase)) {
            let group = match &t.group {
                Some(name) => groups.get(name),
                None => None,
            };
            let release = match &rec.template {
                Some(app) => Release::of(app),
                None => Release {
                    artifact: &rec.artifact,
                    components: &[],
                },
            };
            let bare = TargetSpec {
                devices: vec![],
                ..t.clone()
            };
            let vanished_group = t.group.is_some() && group.is_none();
            let selection = if vanished_group {
                Default::default()
            } else {
                select(&bare, group, fleet, rec.placement.as_ref(), release).unwrap_or_default()
            };
            let new = |d: &String| {
                !targets.contains(d) && !claimed.contains(&(rec.application.clone(), d.clone()))
            };
            j.fresh = selection.fit.into_iter().filter(|d| new(d)).collect();
            for (d, why) in selection.unfit {
                let why = why.to_string();
                if new(&d) && r.ineligible.get(&d) != Some(&why) {
                    j.unfit.insert(d, why);
                }
            }
        }
        for d in r.targets.iter().chain(j.fresh.iter()) {
            claimed.insert((rec.application.clone(), d.clone()));
        }
        if !j.fresh.is_empty() || !j.unfit.is_empty() {
            out.insert(rec.id.clone(), j);
        }
    }
    out
}

/// Whether a deployment with this target, in this phase, takes late joiners.
fn takes_joiners(t: &TargetSpec, phase: Phase) -> bool {
    let grows = !t.selector.is_empty() || !t.match_expressions.is_empty() || t.group.is_some();
    grows && matches!(phase, Phase::Running | Phase::Paused | Phase::Succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::start::{start, NewDeployment};
    use crate::engine::targeting::select::tests::{binary, device, fleet};
    use fleet_schema::manifest::Placement;

    /// A running all-at-once deployment of `app` created for `targets`, whose target as asked
    /// is `target`, with an optional placement.
    fn deployment(
        id: &str,
        targets: &[&str],
        target: TargetSpec,
        placement: Option<Placement>,
    ) -> DeploymentRecord {
        let mut new = NewDeployment::all_at_once(
            "app",
            "1.0.0",
            binary(),
            targets.iter().map(|d| d.to_string()).collect(),
            1,
        );
        new.target = Some(target);
        new.placement = placement;
        start(new, id.into()).0
    }

    fn site_a() -> TargetSpec {
        TargetSpec {
            selector: BTreeMap::from([("site".to_string(), "a".to_string())]),
            ..Default::default()
        }
    }

    fn pi_only() -> Option<Placement> {
        Some(Placement {
            device_type: Some("pi".into()),
            ..Default::default()
        })
    }

    fn with(
        mut fleet: BTreeMap<String, DeviceRecord>,
        d: DeviceRecord,
    ) -> BTreeMap<String, DeviceRecord> {
        fleet.insert(d.id.clone(), d);
        fleet
    }

    /// The rule at creation and for late joiners is the same: what `select` says of a device
    /// when the deployment is created is what the driver says of it when it joins later.
    #[test]
    fn late_joiners_are_chosen_as_at_creation() {
        let groups = BTreeMap::new();
        let rec = deployment("d1", &["pi-1"], site_a(), pi_only());
        let fleet = with(
            fleet(),
            device("pi-2", Some(&[("type", "pi"), ("site", "a")])),
        );
        let got = late_joiners(std::slice::from_ref(&rec), &groups, &fleet);
        let j = &got["d1"];
        assert_eq!(j.fresh, vec!["pi-2"]);
        assert_eq!(j.unfit.keys().collect::<Vec<_>>(), vec!["nuc-1"]);
        assert!(j.unfit["nuc-1"].starts_with("placement: "), "{:?}", j.unfit);
        let at_creation = select(
            &site_a(),
            None,
            &fleet,
            pi_only().as_ref(),
            Release::of(rec.template.as_ref().expect("template")),
        )
        .expect("selects");
        assert_eq!(at_creation.fit, vec!["pi-1", "pi-2"]);
        assert_eq!(
            at_creation.unfit["nuc-1"].to_string(),
            j.unfit["nuc-1"],
            "the same reason"
        );
    }

    #[test]
    fn a_late_joiner_without_an_inventory_waits_for_one_when_there_is_a_placement() {
        let group = GroupSpec {
            name: "lab".into(),
            devices: vec!["blank".into(), "pi-1".into()],
            selector: BTreeMap::new(),
            match_expressions: vec![],
        };
        let groups = BTreeMap::from([("lab".to_string(), group)]);
        let target = TargetSpec {
            group: Some("lab".into()),
            ..Default::default()
        };
        let placed = deployment("d1", &["pi-1"], target.clone(), pi_only());
        let got = late_joiners(std::slice::from_ref(&placed), &groups, &fleet());
        let j = &got["d1"];
        assert!(j.fresh.is_empty(), "{j:?}");
        assert!(
            j.unfit["blank"].starts_with("placement: ") && j.unfit["blank"].contains("inventory"),
            "{j:?}"
        );
        // Once recorded with that reason, it is not reported again.
        let mut recorded = placed.clone();
        if let Some(r) = recorded.rollout.as_mut() {
            r.ineligible
                .insert("blank".into(), j.unfit["blank"].clone());
        }
        assert!(late_joiners(&[recorded], &groups, &fleet()).is_empty());
        // Without a placement it joins, as it would have at creation.
        let free = deployment("d2", &["pi-1"], target, None);
        let got = late_joiners(&[free], &groups, &fleet());
        assert_eq!(got["d2"].fresh, vec!["blank"]);
        // It reports an inventory: the placement decides.
        let fleet = with(fleet(), device("blank", Some(&[("type", "pi")])));
        let got = late_joiners(&[placed], &groups, &fleet);
        assert_eq!(got["d1"].fresh, vec!["blank"]);
    }

    #[test]
    fn the_newest_growing_deployment_claims_a_device() {
        let groups = BTreeMap::new();
        let fleet = with(
            fleet(),
            device("pi-2", Some(&[("type", "pi"), ("site", "a")])),
        );
        let old = deployment("d1", &["pi-1"], site_a(), None);
        let new = deployment("d2", &["pi-1"], site_a(), None);
        let got = late_joiners(&[old.clone(), new], &groups, &fleet);
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["d2"]);
        assert_eq!(got["d2"].fresh, vec!["nuc-1", "pi-2"]);
        // An explicit list never grows, so the older deployment takes them.
        let listed = deployment(
            "d3",
            &["pi-1"],
            TargetSpec {
                devices: vec!["pi-1".into()],
                ..Default::default()
            },
            None,
        );
        let got = late_joiners(&[old, listed], &groups, &fleet);
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["d1"]);
    }

    #[test]
    fn a_target_whose_group_is_gone_takes_no_joiners() {
        let target = TargetSpec {
            group: Some("gone".into()),
            ..site_a()
        };
        let rec = deployment("d1", &["pi-1"], target, None);
        assert!(late_joiners(&[rec], &BTreeMap::new(), &fleet()).is_empty());
    }
}
