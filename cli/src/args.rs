//! Value parsers shared by several commands: `KEY=VALUE` labels, lifetimes such as `90d`, and
//! device ids. Each error names the value and the expected form.

use anyhow::{bail, Result};
use fleet_schema::manifest::units::duration_ms;
use fleet_schema::DeviceId;
use std::collections::BTreeMap;

/// Parses one `--label KEY=VALUE` (the key must not be empty; the value may be).
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Collects `--label` pairs into a map, refusing a key given twice.
pub fn labels(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v.clone()).is_some() {
            bail!("--label {k} is given more than once");
        }
    }
    Ok(out)
}

/// Checks a lifetime such as `90d`, `24h`, `30m` (what fleetd accepts) and keeps its text.
pub fn lifetime(s: &str) -> Result<String, String> {
    match duration_ms(s) {
        Ok(0) => Err("a lifetime must be longer than 0".into()),
        Ok(_) => Ok(s.trim().to_string()),
        Err(e) => Err(format!("{e}; use e.g. 24h, 90d")),
    }
}

/// Parses a device id (`DeviceId` rules), so that it is safe in a URL.
pub fn device_id(s: &str) -> Result<String, String> {
    DeviceId::parse(s)
        .map(|d| d.as_str().to_string())
        .map_err(|e| format!("invalid device id {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        assert_eq!(label("site=a"), Ok(("site".into(), "a".into())));
        assert_eq!(label("empty="), Ok(("empty".into(), String::new())));
        assert_eq!(label("k=a=b"), Ok(("k".into(), "a=b".into())));
        assert!(label("=a").is_err());
        assert!(label("site").is_err());
        let map = labels(&[("a".into(), "1".into()), ("b".into(), "2".into())]).expect("ok");
        assert_eq!(map.len(), 2);
        let e = labels(&[("a".into(), "1".into()), ("a".into(), "2".into())]).expect_err("dup");
        assert!(e.to_string().contains("--label a"), "{e}");
    }

    #[test]
    fn lifetimes_parse() {
        assert_eq!(lifetime("90d"), Ok("90d".into()));
        assert_eq!(lifetime("24h"), Ok("24h".into()));
        assert!(lifetime("0d").is_err());
        assert!(lifetime("soon").expect_err("bad").contains("soon"));
    }

    #[test]
    fn device_ids_parse() {
        assert_eq!(device_id("rpi-1"), Ok("rpi-1".into()));
        assert!(device_id("../x").is_err());
        assert!(device_id("").is_err());
    }
}
