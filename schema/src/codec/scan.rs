//! A structural pre-pass over CBOR, run before deserializing: it walks the items without
//! allocating and refuses any array, map or string that declares more elements or bytes than the
//! payload has left, and any nesting deeper than FleetD's messages need. Without it, a 9-byte
//! head announcing 2^32 array elements made the decoder reserve a megabyte, once per nesting
//! level: tens of megabytes from a message of a few hundred bytes (found by fleet-fuzz).

use super::CodecError;

/// Deepest nesting of arrays, maps and tags a FleetD message may have.
pub const MAX_DEPTH: usize = 32;

/// What is left of one open container.
enum Open {
    /// Items still expected.
    Items(u64),
    /// An indefinite-length container, closed by a break.
    Indefinite,
    /// An indefinite-length string: chunks of this major type until a break.
    Chunks(u8),
}

/// Checks that `bytes` hold exactly one well-formed CBOR item whose declared lengths fit.
pub fn check(bytes: &[u8]) -> Result<(), CodecError> {
    let mut pos = 0usize;
    let mut stack: Vec<Open> = Vec::new();
    let mut started = false;
    loop {
        // Close finished containers; stop once the top-level item is complete.
        while let Some(Open::Items(0)) = stack.last() {
            stack.pop();
        }
        if started && stack.is_empty() {
            return Ok(());
        }
        started = true;
        let head = *bytes.get(pos).ok_or(CodecError::Truncated)?;
        pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        if head == 0xff {
            // A break closes the innermost indefinite container or string.
            match stack.pop() {
                Some(Open::Indefinite | Open::Chunks(_)) => {
                    consume(&mut stack);
                    continue;
                }
                _ => return Err(CodecError::Syntax { offset: pos - 1 }),
            }
        }
        if let Some(Open::Chunks(m)) = stack.last() {
            if *m != major || info == 31 {
                return Err(CodecError::Syntax { offset: pos - 1 });
            }
        }
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = bytes.get(pos..pos + n).ok_or(CodecError::Truncated)?;
                pos += n;
                raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
            31 if matches!(major, 2..=5) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(CodecError::TooDeep);
                }
                stack.push(if major <= 3 {
                    Open::Chunks(major)
                } else {
                    Open::Indefinite
                });
                continue;
            }
            _ => return Err(CodecError::Syntax { offset: pos - 1 }),
        };
        match major {
            0 | 1 | 7 => consume(&mut stack),
            2 | 3 => {
                if arg > (bytes.len() - pos) as u64 {
                    return Err(CodecError::Truncated);
                }
                pos += arg as usize;
                consume(&mut stack);
            }
            4..=6 => {
                let items = match major {
                    4 => arg,
                    5 => arg.checked_mul(2).ok_or(CodecError::Truncated)?,
                    _ => 1,
                };
                // Every item takes at least one byte.
                if items > (bytes.len() - pos) as u64 {
                    return Err(CodecError::Truncated);
                }
                consume(&mut stack);
                if stack.len() >= MAX_DEPTH {
                    return Err(CodecError::TooDeep);
                }
                stack.push(Open::Items(items));
            }
            _ => unreachable!("a major type has three bits"),
        }
    }
}

/// One item of the innermost open container is complete.
fn consume(stack: &mut [Open]) {
    if let Some(Open::Items(n)) = stack.last_mut() {
        *n = n.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_encoder_writes() {
        let value = serde_json::json!({"a": [1, 2, {"b": "text", "c": null}], "d": 1.5, "e": []});
        let bytes = crate::encode(&value).expect("encodes");
        check(&bytes).expect("well formed");
        // Indefinite-length containers and strings, as other encoders write them.
        check(&[0x9f, 0x01, 0x7f, 0x61, b'a', 0xff, 0xff]).expect("indefinite forms");
        check(&[0xc1, 0x1a, 0, 0, 0, 1]).expect("a tagged integer");
    }

    #[test]
    fn refuses_lengths_beyond_the_payload_and_deep_nesting() {
        let huge_array = [0x9b, 0, 0, 0, 1, 0, 0, 0, 0, 0x01];
        assert!(matches!(check(&huge_array), Err(CodecError::Truncated)));
        let huge_map = [0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(check(&huge_map), Err(CodecError::Truncated)));
        let huge_text = [0x7a, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(matches!(check(&huge_text), Err(CodecError::Truncated)));
        let mut deep = vec![0x81; MAX_DEPTH + 1];
        deep.push(0x01);
        assert!(matches!(check(&deep), Err(CodecError::TooDeep)));
        assert!(matches!(check(&[0x81]), Err(CodecError::Truncated)));
        assert!(matches!(check(&[0xff]), Err(CodecError::Syntax { .. })));
        assert!(matches!(check(&[0x1c]), Err(CodecError::Syntax { .. })));
    }
}
