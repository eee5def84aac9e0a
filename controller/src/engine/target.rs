//! Resolving a deployment's target (explicit ids and/or a label selector, as a union) to known
//! devices. Every way a target can be unusable is an error naming what was wrong, never a
//! silently smaller deployment.

use fleet_schema::api::{GroupSpec, TargetSpec};
use fleet_schema::manifest::{matches_all, LabelRequirement, Placement};
use fleet_schema::{ArtifactRef, DeviceId, Inventory};
use std::collections::{BTreeMap, BTreeSet};

/// Why a device with inventory `inv` cannot run a release: the application's placement first,
/// then the artifact's type, platforms and requirements. A device that has not reported an
/// inventory fits (its agent re-checks before installing).
pub fn unfit_reason(
    placement: Option<&Placement>,
    artifact: &ArtifactRef,
    inv: Option<&Inventory>,
) -> Option<String> {
    let inv = inv?;
    if let Some(why) = placement.and_then(|p| p.reject_reason(inv)) {
        return Some(format!("placement: {why}"));
    }
    let unmet = fleet_schema::compat::unmet(
        &artifact.kind,
        &artifact.platforms,
        &artifact.requirements,
        inv,
    );
    (!unmet.is_empty()).then(|| format!("artifact: {}", unmet.join(", ")))
}

/// Why a target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither devices nor a selector.
    #[error("target is empty: give target.devices, target.selector, target.match_expressions and/or target.group")]
    Empty,
    /// Some listed ids are invalid or were never seen.
    #[error("{}", bad_devices_message(.invalid, .unknown))]
    BadDevices {
        /// Invalid ids with the reason.
        invalid: Vec<(String, String)>,
        /// Valid ids of devices the controller has never heard from.
        unknown: Vec<String>,
    },
    /// A match expression is malformed.
    #[error("target.match_expressions: {0}")]
    BadExpression(String),
    /// The selector matches no known device.
    #[error("selector {} matches no device", format_selector(.0))]
    NoMatch(BTreeMap<String, String>),
}

fn bad_devices_message(invalid: &[(String, String)], unknown: &[String]) -> String {
    let mut parts = Vec::new();
    if !invalid.is_empty() {
        let list: Vec<String> = invalid
            .iter()
            .map(|(id, why)| format!("{id:?} ({why})"))
            .collect();
        parts.push(format!("invalid device ids: {}", list.join(", ")));
    }
    if !unknown.is_empty() {
        parts.push(format!("devices never seen: {}", unknown.join(", ")));
    }
    format!("target cannot be used: {}", parts.join("; "))
}

fn format_selector(sel: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// Resolves `target` against the known devices (id to labels). Returns the sorted, de-duplicated
/// union of the listed devices, the devices whose labels contain every selector pair and
/// satisfy every match expression, and the members of `group` (resolved the same way).
pub fn resolve(
    target: &TargetSpec,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<String>, TargetError> {
    resolve_with_group(target, None, known)
}

/// [`resolve`] with the target's named group already looked up.
pub fn resolve_with_group(
    target: &TargetSpec,
    group: Option<&GroupSpec>,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<String>, TargetError> {
    let has_labels = !target.selector.is_empty() || !target.match_expressions.is_empty();
    if target.devices.is_empty() && !has_labels && group.is_none() {
        return Err(TargetError::Empty);
    }
    for r in &target.match_expressions {
        r.check().map_err(TargetError::BadExpression)?;
    }
    let mut chosen = BTreeSet::new();
    let mut invalid = Vec::new();
    let mut unknown = Vec::new();
    for id in &target.devices {
        match DeviceId::parse(id) {
            Err(e) => invalid.push((id.clone(), e.to_string())),
            Ok(_) if !known.contains_key(id) => unknown.push(id.clone()),
            Ok(_) => {
                chosen.insert(id.clone());
            }
        }
    }
    if !invalid.is_empty() || !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(TargetError::BadDevices { invalid, unknown });
    }
    if has_labels {
        let matched = matching(&target.selector, &target.match_expressions, known);
        if matched.is_empty() {
            return Err(TargetError::NoMatch(target.selector.clone()));
        }
        chosen.extend(matched);
    }
    if let Some(g) = group {
        chosen.extend(g.devices.iter().filter(|d| known.contains_key(*d)).cloned());
        if !g.selector.is_empty() || !g.match_expressions.is_empty() {
            chosen.extend(matching(&g.selector, &g.match_expressions, known));
        }
    }
    if chosen.is_empty() {
        return Err(TargetError::NoMatch(target.selector.clone()));
    }
    Ok(chosen.into_iter().collect())
}

/// Known devices whose labels contain every pair of `selector` and satisfy every expression.
pub fn matching(
    selector: &BTreeMap<String, String>,
    exprs: &[LabelRequirement],
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    known
        .iter()
        .filter(|(_, labels)| {
            selector.iter().all(|(k, v)| labels.get(k) == Some(v)) && matches_all(exprs, labels)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, BTreeMap<String, String>> {
        let l = |site: &str| BTreeMap::from([("site".to_string(), site.to_string())]);
        BTreeMap::from([
            ("d1".to_string(), l("a")),
            ("d2".to_string(), l("b")),
            ("d3".to_string(), l("a")),
        ])
    }

    fn spec(devices: &[&str], selector: &[(&str, &str)]) -> TargetSpec {
        TargetSpec {
            devices: devices.iter().map(|d| d.to_string()).collect(),
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..TargetSpec::default()
        }
    }

    #[test]
    fn union_of_ids_and_selector() {
        let got = resolve(&spec(&["d2", "d2"], &[("site", "a")]), &known()).expect("resolves");
        assert_eq!(got, vec!["d1", "d2", "d3"]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(resolve(&spec(&[], &[]), &known()), Err(TargetError::Empty));
        let err = resolve(&spec(&["d1", "nope", "a/b"], &[]), &known()).expect_err("bad ids");
        let msg = err.to_string();
        assert!(msg.contains("nope") && msg.contains("a/b"), "{msg}");
        let err = resolve(&spec(&[], &[("site", "z")]), &known()).expect_err("no match");
        assert_eq!(err.to_string(), "selector {site=z} matches no device");
    }

    #[test]
    fn expressions_narrow_and_groups_add() {
        use fleet_schema::manifest::Operator;
        let mut t = spec(&[], &[]);
        t.match_expressions = vec![LabelRequirement {
            key: "site".into(),
            operator: Operator::NotIn,
            values: vec!["a".into()],
        }];
        assert_eq!(resolve(&t, &known()).expect("resolves"), vec!["d2"]);
        let g = GroupSpec {
            name: "g".into(),
            devices: vec!["d1".into()],
            selector: BTreeMap::new(),
            match_expressions: vec![],
        };
        let got = resolve_with_group(&t, Some(&g), &known()).expect("resolves");
        assert_eq!(got, vec!["d1", "d2"]);
        t.match_expressions[0].values.clear();
        assert!(matches!(
            resolve(&t, &known()),
            Err(TargetError::BadExpression(_))
        ));
    }
}
