//! Whether one device can receive a release: the application's placement first, then every
//! artifact that is deployed (type, platforms, requirements) and, for an app of several
//! artifacts, whether its agent runs components.

use fleet_schema::components::{self, DesiredComponent};
use fleet_schema::manifest::Placement;
use fleet_schema::{compat, ArtifactRef, DesiredApp, Inventory};

/// What a device must be able to run: one artifact, or every component's.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The artifact (for an app of several artifacts, the primary one, not checked).
    pub artifact: &'a ArtifactRef,
    /// Every runnable artifact when the app has several; empty otherwise.
    pub components: &'a [DesiredComponent],
}

impl<'a> Release<'a> {
    /// What a deployment's template runs.
    pub fn of(app: &'a DesiredApp) -> Self {
        Self {
            artifact: &app.artifact,
            components: &app.components,
        }
    }
}

/// Why a device cannot receive a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// The application's placement excludes the device, or cannot be checked because the
    /// device has not reported an inventory.
    Placement(String),
    /// What is deployed cannot run there: artifact type, platforms or requirements unmet, or
    /// an agent that does not run apps of several artifacts.
    Release(String),
}

impl Unfit {
    /// The reason without its category.
    pub fn reason(&self) -> &str {
        match self {
            Unfit::Placement(why) | Unfit::Release(why) => why,
        }
    }
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Placement(why) => write!(f, "placement: {why}"),
            Unfit::Release(why) => write!(f, "artifact: {why}"),
        }
    }
}

/// Why the device with inventory `inv` cannot receive `release` under `placement` (`None`: it
/// can). Without an inventory, a non-empty placement cannot be checked and excludes the
/// device; the release fits (the agent re-checks it before installing).
pub fn unfit_reason(
    placement: Option<&Placement>,
    release: Release<'_>,
    inv: Option<&Inventory>,
) -> Option<Unfit> {
    let placement = placement.filter(|p| **p != Placement::default());
    let Some(inv) = inv else {
        return placement.map(|_| {
            Unfit::Placement(
                "the device has not reported an inventory yet, so the placement cannot be checked"
                    .into(),
            )
        });
    };
    if let Some(why) = placement.and_then(|p| p.reject_reason(inv)) {
        return Some(Unfit::Placement(why));
    }
    let mut problems = Vec::new();
    if release.components.is_empty() {
        let a = release.artifact;
        let unmet = compat::unmet(&a.kind, &a.platforms, &a.requirements, inv);
        if !unmet.is_empty() {
            problems.push(unmet.join(", "));
        }
    } else {
        if !inv.capabilities.iter().any(|c| c == components::CAPABILITY) {
            problems.push(format!(
                "its agent does not run apps of several artifacts (it lacks capability {:?}; upgrade it)",
                components::CAPABILITY
            ));
        }
        for c in release.components {
            let a = &c.artifact;
            let unmet = compat::unmet(&a.kind, &a.platforms, &a.requirements, inv);
            if !unmet.is_empty() {
                problems.push(format!(
                    "artifact {}@{}: {}",
                    a.name,
                    a.version,
                    unmet.join(", ")
                ));
            }
        }
    }
    (!problems.is_empty()).then(|| Unfit::Release(problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::ArtifactType;
    use std::collections::BTreeMap;

    fn inv(arch: &str, caps: &[&str], labels: &[(&str, &str)]) -> Inventory {
        Inventory {
            arch: arch.into(),
            os: "linux".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    fn artifact(name: &str, kind: ArtifactType) -> ArtifactRef {
        ArtifactRef {
            name: name.into(),
            version: "1.0.0".into(),
            kind,
            ..Default::default()
        }
    }

    fn component(name: &str, kind: ArtifactType) -> DesiredComponent {
        DesiredComponent {
            name: name.into(),
            artifact: artifact(name, kind),
            spec: Default::default(),
        }
    }

    fn pi_only() -> Placement {
        Placement {
            device_type: Some("pi".into()),
            ..Default::default()
        }
    }

    #[test]
    fn placement_is_checked_first_and_names_the_reason() {
        let bin = artifact("app", ArtifactType::Binary);
        let release = Release {
            artifact: &bin,
            components: &[],
        };
        let pi = inv("arm64", &["binary"], &[("type", "pi")]);
        let x86 = inv("amd64", &["binary"], &[("type", "nuc")]);
        assert_eq!(unfit_reason(Some(&pi_only()), release, Some(&pi)), None);
        let why = unfit_reason(Some(&pi_only()), release, Some(&x86)).expect("excluded");
        assert!(
            matches!(&why, Unfit::Placement(w) if w.contains("pi")),
            "{why}"
        );
        assert!(why.to_string().starts_with("placement: "), "{why}");
    }

    #[test]
    fn without_an_inventory_only_a_placement_excludes_a_device() {
        let bin = artifact("app", ArtifactType::Binary);
        let release = Release {
            artifact: &bin,
            components: &[],
        };
        let why = unfit_reason(Some(&pi_only()), release, None).expect("cannot be checked");
        assert!(
            matches!(&why, Unfit::Placement(w) if w.contains("not reported an inventory")),
            "{why}"
        );
        assert_eq!(unfit_reason(None, release, None), None, "no placement");
        assert_eq!(
            unfit_reason(Some(&Placement::default()), release, None),
            None,
            "an empty placement constrains nothing"
        );
    }

    #[test]
    fn every_component_must_fit_and_agents_must_run_components() {
        let engine = artifact("engine", ArtifactType::Binary);
        let parts = [
            component("engine", ArtifactType::Binary),
            component("model", ArtifactType::OciImage),
        ];
        let release = Release {
            artifact: &engine,
            components: &parts,
        };
        let new = inv("amd64", &["binary", "components", "docker", "oci"], &[]);
        let old = inv("amd64", &["binary", "docker", "oci"], &[]);
        let bare = inv("amd64", &["binary", "components"], &[]);
        assert_eq!(unfit_reason(None, release, Some(&new)), None);
        let why = unfit_reason(None, release, Some(&old)).expect("old agent");
        assert!(
            why.reason().contains("lacks capability \"components\""),
            "{why}"
        );
        let why = unfit_reason(None, release, Some(&bare)).expect("no container engine");
        assert!(
            why.reason().starts_with("artifact model@1.0.0: ") && !why.reason().contains("engine@"),
            "{why}"
        );
        // One artifact: only it is checked, and old agents run it as before.
        let one = Release {
            artifact: &engine,
            components: &[],
        };
        assert_eq!(unfit_reason(None, one, Some(&old)), None);
        let arm = ArtifactRef {
            platforms: vec![fleet_schema::artifact::Platform::parse("linux/arm64").expect("valid")],
            ..engine.clone()
        };
        let why = unfit_reason(
            None,
            Release {
                artifact: &arm,
                components: &[],
            },
            Some(&old),
        )
        .expect("wrong platform");
        assert!(
            matches!(&why, Unfit::Release(w) if w.contains("platform")),
            "{why}"
        );
    }
}
