//! The CBOR codec for every MQTT payload. Decoding is bounded: a payload larger than the cap is
//! refused before parsing, and truncated, trailing-garbage or mistyped payloads come back as a
//! [`CodecError`] that says which, so a hostile or buggy peer can never crash a receiver.

use serde::{de::DeserializeOwned, Serialize};

mod scan;

/// The default cap on one decoded payload (1 MiB). Desired state and status for a device with
/// many apps stay far below it; the MQTT clients are configured with a packet limit above it.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is larger than the receiver accepts.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the payload received.
        size: usize,
        /// The cap in force.
        max: usize,
    },
    /// The payload is empty (an MQTT retained-message deletion, or a bug).
    #[error("payload is empty")]
    Empty,
    /// The payload ends in the middle of a CBOR item.
    #[error("payload is truncated (CBOR item ends early)")]
    Truncated,
    /// The bytes are not well-formed CBOR.
    #[error("payload is not valid CBOR at byte {offset}")]
    Syntax {
        /// Byte offset of the error.
        offset: usize,
    },
    /// Well-formed CBOR, but not the expected message (missing field, wrong type).
    #[error("payload does not match the expected message: {0}")]
    Mistyped(String),
    /// A valid item followed by more bytes.
    #[error("payload has {0} trailing bytes after the message")]
    Trailing(usize),
    /// Nested too deeply to be a FleetD message.
    #[error("payload nests too deeply")]
    TooDeep,
    /// Encoding failed (a type that cannot be represented in CBOR).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes a message as CBOR.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(msg, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes one CBOR message of at most `max` bytes, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    // Declared lengths and nesting are checked before the decoder reserves anything for them.
    scan::check(bytes)?;
    let mut cursor = std::io::Cursor::new(bytes);
    let value: T = ciborium::from_reader(&mut cursor).map_err(|e| match e {
        ciborium::de::Error::Io(_) => CodecError::Truncated,
        ciborium::de::Error::Syntax(offset) => CodecError::Syntax { offset },
        ciborium::de::Error::Semantic(_, msg) => CodecError::Mistyped(msg),
        ciborium::de::Error::RecursionLimitExceeded => CodecError::TooDeep,
    })?;
    let used = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    if used < bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DeviceStatus, Inventory};

    fn sample() -> DeviceStatus {
        DeviceStatus {
            device_id: "dev-1".into(),
            online: true,
            agent_version: "0.1.0".into(),
            inventory: Some(Inventory::default()),
            observed_generation: 3,
            apps: vec![],
            reported_at: 1,
            refused: None,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).expect("encodes");
        let back: DeviceStatus = decode(&bytes, DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(back, sample());
    }

    #[test]
    fn truncated_is_reported() {
        let bytes = encode(&sample()).expect("encodes");
        for cut in 1..bytes.len() {
            let err = decode::<DeviceStatus>(&bytes[..cut], DEFAULT_MAX_PAYLOAD)
                .expect_err("truncated must fail");
            assert!(
                matches!(err, CodecError::Truncated | CodecError::Mistyped(_)),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn oversized_empty_garbage_trailing_mistyped() {
        let bytes = encode(&sample()).expect("encodes");
        assert!(matches!(
            decode::<DeviceStatus>(&bytes, 4),
            Err(CodecError::TooLarge { max: 4, .. })
        ));
        assert!(matches!(
            decode::<DeviceStatus>(&[], 10),
            Err(CodecError::Empty)
        ));
        assert!(decode::<DeviceStatus>(&[0xff, 0x00, 0x13], 10).is_err());
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode::<DeviceStatus>(&trailing, DEFAULT_MAX_PAYLOAD),
            Err(CodecError::Trailing(3))
        ));
        let number = encode(&42u32).expect("encodes");
        assert!(matches!(
            decode::<DeviceStatus>(&number, 100),
            Err(CodecError::Mistyped(_))
        ));
    }
}
