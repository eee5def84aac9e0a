//! Target selection, the one rule for deployment creation and late joiners: the devices the
//! target picks, each checked against the placement and what is deployed.

use super::fit::{unfit_reason, Release, Unfit};
use super::resolve::{resolve_with_group, TargetError};
use crate::model::DeviceRecord;
use fleet_schema::api::{GroupSpec, TargetSpec};
use fleet_schema::manifest::Placement;
use std::collections::BTreeMap;

/// The devices a target picks, split by whether they can receive the release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Picked devices that can receive it, sorted by id.
    pub fit: Vec<String>,
    /// Picked devices that cannot, with the reason.
    pub unfit: BTreeMap<String, Unfit>,
}

/// Resolves `target` (with its named `group` already looked up) against `fleet`, the records
/// of the devices that may be targeted (enrolled ones), and checks each picked device with
/// [`unfit_reason`]. A device without an inventory has no labels; see the module
/// documentation of `engine::targeting` for how it is checked.
pub fn select(
    target: &TargetSpec,
    group: Option<&GroupSpec>,
    fleet: &BTreeMap<String, DeviceRecord>,
    placement: Option<&Placement>,
    release: Release<'_>,
) -> Result<Selection, TargetError> {
    let labels: BTreeMap<String, BTreeMap<String, String>> = fleet
        .iter()
        .map(|(id, rec)| (id.clone(), rec.labels()))
        .collect();
    let mut out = Selection::default();
    for d in resolve_with_group(target, group, &labels)? {
        let inv = fleet
            .get(&d)
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.inventory.as_ref());
        match unfit_reason(placement, release, inv) {
            None => out.fit.push(d),
            Some(why) => {
                out.unfit.insert(d, why);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleet_schema::{ArtifactRef, ArtifactType, DeviceStatus, Inventory};

    /// A device record; `labels: None` is a device that never reported an inventory (its
    /// record was made from its offline will).
    pub(crate) fn device(id: &str, labels: Option<&[(&str, &str)]>) -> DeviceRecord {
        let status = labels.map(|l| DeviceStatus {
            device_id: id.into(),
            online: true,
            agent_version: "0.1.0".into(),
            inventory: Some(Inventory {
                arch: "amd64".into(),
                os: "linux".into(),
                capabilities: vec!["binary".into()],
                labels: l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            observed_generation: 0,
            apps: vec![],
            reported_at: 0,
            refused: None,
        });
        DeviceRecord {
            id: id.into(),
            online: status.is_some(),
            first_seen: 1,
            last_seen: 1,
            status,
            stamp: None,
        }
    }

    pub(crate) fn binary() -> ArtifactRef {
        ArtifactRef {
            name: "app".into(),
            version: "1.0.0".into(),
            kind: ArtifactType::Binary,
            ..Default::default()
        }
    }

    pub(crate) fn fleet() -> BTreeMap<String, DeviceRecord> {
        [
            device("pi-1", Some(&[("type", "pi"), ("site", "a")])),
            device("nuc-1", Some(&[("type", "nuc"), ("site", "a")])),
            device("blank", None),
        ]
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect()
    }

    fn pi_only() -> Placement {
        Placement {
            device_type: Some("pi".into()),
            ..Default::default()
        }
    }

    fn listed(ids: &[&str]) -> TargetSpec {
        TargetSpec {
            devices: ids.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_selector_never_picks_a_device_without_an_inventory() {
        let art = binary();
        let release = Release {
            artifact: &art,
            components: &[],
        };
        let t = TargetSpec {
            selector: BTreeMap::from([("site".to_string(), "a".to_string())]),
            ..Default::default()
        };
        let sel = select(&t, None, &fleet(), None, release).expect("resolves");
        assert_eq!(sel.fit, vec!["nuc-1", "pi-1"]);
        assert!(sel.unfit.is_empty());
    }

    #[test]
    fn a_listed_device_without_an_inventory_fits_unless_there_is_a_placement() {
        let art = binary();
        let release = Release {
            artifact: &art,
            components: &[],
        };
        let t = listed(&["blank", "pi-1", "nuc-1"]);
        let sel = select(&t, None, &fleet(), None, release).expect("resolves");
        assert_eq!(sel.fit, vec!["blank", "nuc-1", "pi-1"]);
        let sel = select(&t, None, &fleet(), Some(&pi_only()), release).expect("resolves");
        assert_eq!(sel.fit, vec!["pi-1"]);
        assert_eq!(sel.unfit.len(), 2, "{:?}", sel.unfit);
        assert!(
            matches!(&sel.unfit["blank"], Unfit::Placement(w) if w.contains("inventory")),
            "{:?}",
            sel.unfit
        );
        assert!(matches!(&sel.unfit["nuc-1"], Unfit::Placement(_)));
    }

    #[test]
    fn an_unusable_target_is_an_error() {
        let art = binary();
        let release = Release {
            artifact: &art,
            components: &[],
        };
        let err = select(&listed(&["gone"]), None, &fleet(), None, release).expect_err("unknown");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
