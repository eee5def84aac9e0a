//! Device identifiers become MQTT topic levels, file names and database keys, so they are
//! validated once, here: 1 to 64 characters of ASCII letters, digits, `-`, `_` and `.`,
//! starting with a letter or digit. That excludes the MQTT wildcards and separators (`+`, `#`,
//! `/`), the `$` prefix that brokers reserve, and the leading `_` that marks FleetD's own
//! control-plane topics (`fleet/_controller/...`), so no device topic can collide with them.

use std::fmt;

/// Longest accepted device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// A validated device identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

/// Why a string is not a valid device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Empty string.
    #[error("device id is empty")]
    Empty,
    /// Longer than [`MAX_DEVICE_ID_LEN`].
    #[error("device id is {0} bytes long; at most {MAX_DEVICE_ID_LEN} are allowed")]
    TooLong(usize),
    /// Starts with something other than a letter or digit.
    #[error("device id {0:?} must start with an ASCII letter or digit")]
    BadStart(String),
    /// Contains a character outside the allowed set.
    #[error("device id {id:?} contains {ch:?}; only ASCII letters, digits, '-', '_' and '.' are allowed")]
    BadChar {
        /// The offending id.
        id: String,
        /// The first offending character.
        ch: char,
    },
}

impl DeviceId {
    /// Validates and wraps a device id.
    pub fn parse(s: &str) -> Result<Self, DeviceIdError> {
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if s.len() > MAX_DEVICE_ID_LEN {
            return Err(DeviceIdError::TooLong(s.len()));
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(DeviceIdError::BadChar { id: s.into(), ch });
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(DeviceIdError::BadStart(s.into()));
        }
        Ok(Self(s.to_string()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["dev-1", "rpi4.store_17", "A", "0abc"] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_topic_breaking_ids() {
        for bad in [
            "",
            "_controller",
            "$SYS",
            "a/b",
            "a+",
            "#",
            "dev 1",
            ".hidden",
            "-x",
            "é",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(matches!(
            DeviceId::parse(&"x".repeat(65)),
            Err(DeviceIdError::TooLong(65))
        ));
    }
}
