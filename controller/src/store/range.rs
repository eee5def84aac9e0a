//! HTTP byte ranges for resumable downloads: one `bytes=N-`, `bytes=N-M` or `bytes=-N` range.

/// An inclusive byte range within a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {header:?} cannot be satisfied for {size} bytes")]
pub struct RangeError {
    /// The header value.
    pub header: String,
    /// The blob size.
    pub size: u64,
}

/// Parses a `Range` header for a blob of `size` bytes. `Ok(None)` means "serve everything":
/// no header, a unit other than bytes, several ranges or a malformed value (RFC 9110 lets a
/// server ignore those). A well-formed range outside the blob is an error (416).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, RangeError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || RangeError {
        header: header.to_string(),
        size,
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.is_empty(), last.is_empty()) {
        (false, _) => {
            let Ok(start) = first.parse::<u64>() else {
                return Ok(None);
            };
            let end = if last.is_empty() {
                size.saturating_sub(1)
            } else {
                let Ok(end) = last.parse::<u64>() else {
                    return Ok(None);
                };
                if end < start {
                    return Ok(None);
                }
                end.min(size.saturating_sub(1))
            };
            if start >= size {
                return Err(unsatisfiable());
            }
            ByteRange { start, end }
        }
        (true, false) => {
            let Ok(suffix) = last.parse::<u64>() else {
                return Ok(None);
            };
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            ByteRange {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn parses_resumable_ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(r(4, 9)));
        assert_eq!(parse_range(Some("bytes=2-5"), 10), Ok(r(2, 5)));
        assert_eq!(parse_range(Some("bytes=2-50"), 10), Ok(r(2, 9)));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(r(7, 9)));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ok(r(0, 9)));
        assert_eq!(r(2, 5).map(|x| x.len()), Some(4));
    }

    #[test]
    fn ignores_what_it_does_not_serve_and_refuses_outside_ranges() {
        assert_eq!(parse_range(Some("items=1-2"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=1-2,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Ok(None));
        assert!(parse_range(Some("bytes=10-"), 10).is_err());
        assert!(parse_range(Some("bytes=0-"), 0).is_err());
        assert!(parse_range(Some("bytes=-0"), 10).is_err());
    }
}
