//! Resolving a deployment's target (explicit ids and/or a label selector, as a union) to known
//! devices. Every way a target can be unusable is an error naming what was wrong, never a
//! silently smaller deployment.

use fleet_schema::api::TargetSpec;
use fleet_schema::DeviceId;
use std::collections::{BTreeMap, BTreeSet};

/// Why a target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither devices nor a selector.
    #[error("target is empty: give target.devices and/or target.selector")]
    Empty,
    /// Some listed ids are invalid or were never seen.
    #[error("{}", bad_devices_message(.invalid, .unknown))]
    BadDevices {
        /// Invalid ids with the reason.
        invalid: Vec<(String, String)>,
        /// Valid ids of devices the controller has never heard from.
        unknown: Vec<String>,
    },
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
/// union of the listed devices and the devices whose labels contain every selector pair.
pub fn resolve(
    target: &TargetSpec,
    known: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<String>, TargetError> {
    if target.devices.is_empty() && target.selector.is_empty() {
        return Err(TargetError::Empty);
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
    if !target.selector.is_empty() {
        let matched: Vec<&String> = known
            .iter()
            .filter(|(_, labels)| {
                target
                    .selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|(id, _)| id)
            .collect();
        if matched.is_empty() {
            return Err(TargetError::NoMatch(target.selector.clone()));
        }
        chosen.extend(matched.into_iter().cloned());
    }
    Ok(chosen.into_iter().collect())
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
}
