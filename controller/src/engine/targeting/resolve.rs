//! Resolving a deployment's target to known devices. The rule (documented in the README,
//! "Targets"): `group`, `selector` and `match_expressions` are filters that all must hold (a
//! device is chosen when it is a member of the group AND its labels contain every selector pair
//! AND satisfy every expression); `devices` names ids explicitly, which are chosen as well. So
//! `{"group": "edge-stores", "selector": {"location": "us-west"}}` means the edge-stores devices
//! in us-west. Every way a target can be unusable is an error naming what was wrong, never a
//! silently smaller deployment.

use fleet_schema::api::{GroupSpec, TargetSpec};
use fleet_schema::manifest::{matches_all, LabelRequirement};
use fleet_schema::DeviceId;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The filters (group, selector, expressions) together match no known device.
    #[error("target {0} matches no device")]
    NoMatch(String),
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

/// Resolves `target` against the known devices (id to labels): the sorted, de-duplicated
/// union of the listed `devices` and the devices that pass every filter (selector and match
/// expressions; see [`resolve_with_group`] for the group).
pub fn resolve(
    target: &TargetSpec,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<String>, TargetError> {
    resolve_with_group(target, None, known)
}

/// [`resolve`] with the target's named group already looked up: the group is one more filter
/// (its members are its static `devices` plus the devices its own selector and expressions
/// match), intersected with the target's selector and expressions.
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
    if has_labels || group.is_some() {
        let members: Option<BTreeSet<String>> = group.map(|g| group_members(g, known));
        let matched: Vec<String> = matching(&target.selector, &target.match_expressions, known)
            .into_iter()
            .filter(|d| members.as_ref().is_none_or(|m| m.contains(d)))
            .collect();
        if matched.is_empty() {
            return Err(TargetError::NoMatch(describe_filters(target)));
        }
        chosen.extend(matched);
    }
    Ok(chosen.into_iter().collect())
}

/// The known members of a group: its static ids plus the devices its own selector and
/// expressions match (a group with neither has only its static ids).
pub fn group_members(
    g: &GroupSpec,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = g
        .devices
        .iter()
        .filter(|d| known.contains_key(*d))
        .cloned()
        .collect();
    if !g.selector.is_empty() || !g.match_expressions.is_empty() {
        out.extend(matching(&g.selector, &g.match_expressions, known));
    }
    out
}

/// The filters of a target as the errors show them, e.g.
/// `group "edge-stores" AND selector {location=us-west}`.
fn describe_filters(t: &TargetSpec) -> String {
    let mut parts = Vec::new();
    if let Some(g) = &t.group {
        parts.push(format!("group {g:?}"));
    }
    if !t.selector.is_empty() {
        parts.push(format!("selector {}", format_selector(&t.selector)));
    }
    if !t.match_expressions.is_empty() {
        let n = t.match_expressions.len();
        parts.push(format!("{n} match expression(s)"));
    }
    parts.join(" AND ")
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
    use fleet_schema::manifest::Operator;

    /// Four devices: the seed's edge-stores in us-west and us-east, and devices outside it.
    fn known() -> BTreeMap<String, BTreeMap<String, String>> {
        let l = |tier: &str, location: &str| {
            BTreeMap::from([
                ("tier".to_string(), tier.to_string()),
                ("location".to_string(), location.to_string()),
            ])
        };
        BTreeMap::from([
            ("d1".to_string(), l("edge", "us-west")),
            ("d2".to_string(), l("edge", "us-east")),
            ("d3".to_string(), l("core", "us-west")),
            ("d4".to_string(), l("core", "eu")),
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

    fn edge_stores() -> GroupSpec {
        GroupSpec {
            name: "edge-stores".into(),
            devices: vec![],
            selector: BTreeMap::from([("tier".to_string(), "edge".to_string())]),
            match_expressions: vec![],
        }
    }

    fn not_in(key: &str, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator: Operator::NotIn,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn with_group(mut t: TargetSpec) -> TargetSpec {
        t.group = Some("edge-stores".into());
        t
    }

    fn ok(t: &TargetSpec, g: Option<&GroupSpec>) -> Vec<String> {
        resolve_with_group(t, g, &known()).expect("resolves")
    }

    #[test]
    fn devices_alone_are_taken_as_listed() {
        assert_eq!(ok(&spec(&["d2", "d2", "d4"], &[]), None), vec!["d2", "d4"]);
    }

    #[test]
    fn selector_alone_needs_every_pair() {
        let t = spec(&[], &[("location", "us-west")]);
        assert_eq!(ok(&t, None), vec!["d1", "d3"]);
        let t = spec(&[], &[("location", "us-west"), ("tier", "core")]);
        assert_eq!(ok(&t, None), vec!["d3"]);
    }

    #[test]
    fn expressions_alone_select() {
        let mut t = spec(&[], &[]);
        t.match_expressions = vec![not_in("location", &["us-west"])];
        assert_eq!(ok(&t, None), vec!["d2", "d4"]);
    }

    #[test]
    fn group_alone_is_its_members() {
        let t = with_group(spec(&[], &[]));
        assert_eq!(ok(&t, Some(&edge_stores())), vec!["d1", "d2"]);
        let static_group = GroupSpec {
            devices: vec!["d4".into(), "gone".into()],
            selector: BTreeMap::new(),
            ..edge_stores()
        };
        assert_eq!(ok(&t, Some(&static_group)), vec!["d4"]);
    }

    /// The seed's example: the edge-stores devices in us-west, not every us-west device.
    #[test]
    fn group_and_selector_intersect() {
        let t = with_group(spec(&[], &[("location", "us-west")]));
        assert_eq!(ok(&t, Some(&edge_stores())), vec!["d1"]);
    }

    #[test]
    fn group_and_expressions_intersect() {
        let mut t = with_group(spec(&[], &[]));
        t.match_expressions = vec![not_in("location", &["us-west"])];
        assert_eq!(ok(&t, Some(&edge_stores())), vec!["d2"]);
    }

    #[test]
    fn selector_and_expressions_intersect() {
        let mut t = spec(&[], &[("location", "us-west")]);
        t.match_expressions = vec![not_in("tier", &["edge"])];
        assert_eq!(ok(&t, None), vec!["d3"]);
    }

    #[test]
    fn group_selector_and_expressions_all_hold() {
        let mut t = with_group(spec(&[], &[("location", "us-east")]));
        t.match_expressions = vec![not_in("location", &["eu"])];
        assert_eq!(ok(&t, Some(&edge_stores())), vec!["d2"]);
        t.match_expressions = vec![not_in("location", &["us-east"])];
        let err = resolve_with_group(&t, Some(&edge_stores()), &known()).expect_err("empty");
        assert_eq!(
            err.to_string(),
            "target group \"edge-stores\" AND selector {location=us-east} AND 1 match \
             expression(s) matches no device"
        );
    }

    /// Explicit ids are added to what the filters select, whether or not they pass them.
    #[test]
    fn devices_are_added_to_the_filtered_set() {
        let t = spec(&["d4"], &[("location", "us-west")]);
        assert_eq!(ok(&t, None), vec!["d1", "d3", "d4"]);
        let t = with_group(spec(&["d3"], &[("location", "us-west")]));
        assert_eq!(ok(&t, Some(&edge_stores())), vec!["d1", "d3"]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(resolve(&spec(&[], &[]), &known()), Err(TargetError::Empty));
        let err = resolve(&spec(&["d1", "nope", "a/b"], &[]), &known()).expect_err("bad ids");
        let msg = err.to_string();
        assert!(msg.contains("nope") && msg.contains("a/b"), "{msg}");
        let err = resolve(&spec(&[], &[("site", "z")]), &known()).expect_err("no match");
        assert_eq!(
            err.to_string(),
            "target selector {site=z} matches no device"
        );
        // A filter that matches nothing is an error even when explicit ids are listed.
        let err = resolve(&spec(&["d1"], &[("site", "z")]), &known()).expect_err("no match");
        assert!(err.to_string().contains("site=z"), "{err}");
        let mut t = spec(&[], &[]);
        t.match_expressions = vec![not_in("tier", &[])];
        assert!(matches!(
            resolve(&t, &known()),
            Err(TargetError::BadExpression(_))
        ));
    }
}
