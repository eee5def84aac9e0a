//! Human units of the manifest (`30s`, `2Gi`, `500m`) turned into the wire's milliseconds,
//! bytes and millicores, once, on the controller.

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `7d` (a bare number means seconds).
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400_000)
    } else {
        (s, 1_000)
    };
    let value: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)"))?;
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses a memory quantity: plain bytes, or with a suffix `Ki`, `Mi`, `Gi`, `Ti` (powers of
/// 1024) or `K`, `M`, `G`, `T` (powers of 1000).
pub fn bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((s, 1));
    let value: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a memory quantity (e.g. 512Mi, 2Gi, 1000000)"))?;
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a CPU quantity: millicores (`500m`) or cores (`2`, `0.5`).
pub fn millicores(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a CPU quantity (e.g. 500m, 2, 0.5)");
    if let Some(m) = s.strip_suffix('m') {
        return m.trim().parse().map_err(|_| bad());
    }
    let cores: f64 = s.parse().map_err(|_| bad())?;
    if !cores.is_finite() || !(0.0..=1_000_000.0).contains(&cores) {
        return Err(bad());
    }
    // Bounded above, so the cast cannot overflow.
    Ok((cores * 1000.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_normalise() {
        assert_eq!(duration_ms("30s"), Ok(30_000));
        assert_eq!(duration_ms("250ms"), Ok(250));
        assert_eq!(duration_ms("5m"), Ok(300_000));
        assert_eq!(duration_ms("2"), Ok(2_000));
        assert!(duration_ms("soon").is_err());
        assert_eq!(bytes("2Gi"), Ok(2 << 30));
        assert_eq!(bytes("4G"), Ok(4_000_000_000));
        assert_eq!(bytes("100"), Ok(100));
        assert!(bytes("lots").is_err());
        assert_eq!(millicores("2000m"), Ok(2000));
        assert_eq!(millicores("0.5"), Ok(500));
        assert!(millicores("-1").is_err());
    }
}
