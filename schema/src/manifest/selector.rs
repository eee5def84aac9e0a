//! Label requirements (`key operator values`), shared by the manifest's `node_affinity` and by
//! deployment targets: the operators In, NotIn, Exists, DoesNotExist, Gt, Lt of Kubernetes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A set-based label operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, as an integer, is greater than the single value.
    Gt,
    /// The label's value, as an integer, is less than the single value.
    Lt,
}

/// One requirement on a device's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Operands (none for Exists/DoesNotExist, one integer for Gt/Lt).
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// Checks the operand count and types for the operator; the error names the problem.
    pub fn check(&self) -> Result<(), String> {
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => Err(format!(
                "operator {:?} on key {:?} needs at least one value",
                self.operator, self.key
            )),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => Err(format!(
                "operator {:?} on key {:?} takes no values",
                self.operator, self.key
            )),
            Operator::Gt | Operator::Lt => match self.values.as_slice() {
                [v] if v.parse::<i64>().is_ok() => Ok(()),
                _ => Err(format!(
                    "operator {:?} on key {:?} needs exactly one integer value",
                    self.operator, self.key
                )),
            },
            _ if self.key.is_empty() => Err("label key is empty".into()),
            _ => Ok(()),
        }
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let int = |s: &String| s.parse::<i64>().ok();
        let operand = self.values.first().and_then(int);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt => matches!((value.and_then(int), operand), (Some(v), Some(o)) if v > o),
            Operator::Lt => matches!((value.and_then(int), operand), (Some(v), Some(o)) if v < o),
        }
    }
}

/// Whether `labels` satisfy every requirement.
pub fn matches_all(reqs: &[LabelRequirement], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| r.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: Operator, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn operators_match() {
        let labels = BTreeMap::from([
            ("location".to_string(), "edge".to_string()),
            ("ram_gb".to_string(), "8".to_string()),
        ]);
        assert!(req("location", Operator::In, &["edge", "store"]).matches(&labels));
        assert!(!req("location", Operator::NotIn, &["edge"]).matches(&labels));
        assert!(req("zone", Operator::NotIn, &["x"]).matches(&labels));
        assert!(req("ram_gb", Operator::Exists, &[]).matches(&labels));
        assert!(req("zone", Operator::DoesNotExist, &[]).matches(&labels));
        assert!(req("ram_gb", Operator::Gt, &["4"]).matches(&labels));
        assert!(!req("ram_gb", Operator::Lt, &["4"]).matches(&labels));
        assert!(!req("location", Operator::Gt, &["4"]).matches(&labels));
    }

    #[test]
    fn operand_errors_name_the_key() {
        let err = req("ram", Operator::Gt, &["x"])
            .check()
            .expect_err("not an integer");
        assert!(err.contains("\"ram\"") && err.contains("integer"), "{err}");
        assert!(req("a", Operator::In, &[]).check().is_err());
        assert!(req("a", Operator::Exists, &["x"]).check().is_err());
        assert!(req("a", Operator::In, &["x"]).check().is_ok());
    }
}
