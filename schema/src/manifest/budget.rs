//! Size bounds on a manifest, checked before anything grows with it. YAML aliases let a small
//! document stand for a huge one (an anchor of 100 KB referenced 10,000 times is a gigabyte once
//! deserialized), so [`check_yaml`] first walks the document as the deserializer would, with
//! every alias expanded, counting bytes without keeping any of them, and stops as soon as the
//! count passes the limit. Only a document that fits is deserialized for real.

use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess};
use std::cell::Cell;
use std::fmt;

/// What each node (scalar, sequence, mapping) counts beyond its text, so a flood of empty
/// nodes is bounded too.
const NODE_COST: usize = 8;

/// Walks the YAML document `text` with its aliases expanded and fails with `Err(None)` as soon
/// as it passes `max` bytes, or with `Err(Some(message))` when it does not parse.
pub(super) fn check_yaml(text: &str, max: usize) -> Result<(), Option<String>> {
    let used = Cell::new(0usize);
    let over = Cell::new(false);
    let counter = Count {
        used: &used,
        over: &over,
        max,
    };
    match counter.deserialize(serde_norway::Deserializer::from_str(text)) {
        Ok(()) => Ok(()),
        Err(_) if over.get() => Err(None),
        // The parser's own bound on alias jumps (nested aliases, "billion laughs"), met before
        // the byte count: the same verdict.
        Err(e) if e.to_string().contains("repetition limit exceeded") => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// Counts what it visits into `used`, failing (and setting `over`) beyond `max`.
#[derive(Clone, Copy)]
struct Count<'a> {
    used: &'a Cell<usize>,
    over: &'a Cell<bool>,
    max: usize,
}

impl Count<'_> {
    fn add<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let used = self
            .used
            .get()
            .saturating_add(bytes)
            .saturating_add(NODE_COST);
        self.used.set(used);
        if used > self.max {
            self.over.set(true);
            return Err(E::custom(format!("expands beyond {} bytes", self.max)));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.add(0)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.add(0)
    }
    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<(), E> {
        self.add(0)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.add(0)
    }
    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<(), E> {
        self.add(0)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.add(0)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.add(v.len())
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.add(v.len())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.add(0)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.add(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.add::<D::Error>(0)?;
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.add::<D::Error>(0)?;
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.add::<A::Error>(0)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.add::<A::Error>(0)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag is counted as the variant, then its value.
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aliases_expanded_and_stops_at_the_limit() {
        let doc = "a: &x [1, 2, 3]\nb: *x\n";
        assert_eq!(check_yaml(doc, 1000), Ok(()));
        // 1 mapping + 2 keys + 2 sequences of 3 = 11 nodes: too many for 80 bytes.
        assert_eq!(check_yaml(doc, 80), Err(None));
        assert!(matches!(check_yaml("a: [1, 2", 1000), Err(Some(_))));
    }
}
