//! Small helpers over `prometheus-client`'s collector encoder: one call writes a metric family
//! (its HELP and TYPE lines, then one sample per label set), so the families of the bridge read
//! as tables of (labels, value) rows.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use std::borrow::Cow;
use std::fmt;

/// One series' labels, in order.
pub type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A label pair (keys and values borrowed where they can be).
pub fn label<'a>(
    key: impl Into<Cow<'a, str>>,
    value: impl Into<Cow<'a, str>>,
) -> (Cow<'a, str>, Cow<'a, str>) {
    (key.into(), value.into())
}

/// Writes a gauge family `name` with one sample per row.
pub fn gauge<'a, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            family.encode_gauge(&v)?;
        } else {
            family.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// Writes a counter family: `name` is given without `_total`, which the encoder appends to
/// every sample.
pub fn counter<'a, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        } else {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
    }
    Ok(())
}

/// Turns an operator-chosen device label key into a valid Prometheus label name (letters,
/// digits and underscores, not starting with a digit).
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(label_name("site"), "site");
        assert_eq!(label_name("hw.type"), "hw_type");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name(""), "_");
    }
}
