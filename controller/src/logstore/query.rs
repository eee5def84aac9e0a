//! Which stored lines a log read returns (pure): an app filter, a start time and a count. The
//! newest `limit` lines at or after `since` are returned, oldest first, like `tail -n`.

use fleet_schema::{LogEntry, UnixMillis};

/// Lines returned when the request names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most lines one read returns.
pub const MAX_LIMIT: usize = 10_000;

/// A validated read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Only this app's lines.
    pub app: Option<String>,
    /// Only lines stamped at or after this time, Unix ms.
    pub since: Option<UnixMillis>,
    /// At most this many (the newest).
    pub limit: usize,
}

/// Why a `since` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since {0:?} is neither Unix milliseconds nor a duration such as 30s, 15m, 2h or 7d")]
pub struct BadSince(pub String);

/// Parses `since`: Unix milliseconds, or a duration back from `now` (`30s`, `15m`, `2h`, `7d`).
pub fn parse_since(s: &str, now: UnixMillis) -> Result<UnixMillis, BadSince> {
    let bad = || BadSince(s.to_string());
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    Ok(now.saturating_sub(secs.saturating_mul(1000)))
}

impl LogQuery {
    /// Whether `e` passes the app and time filters.
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.app.as_deref().is_none_or(|a| e.app == a)
            && self.since.is_none_or(|t| e.timestamp >= t)
    }

    /// The lines to return from `all` (oldest first).
    pub fn select(&self, all: impl IntoIterator<Item = LogEntry>) -> Vec<LogEntry> {
        let mut out = std::collections::VecDeque::with_capacity(self.limit.min(1024));
        for e in all.into_iter().filter(|e| self.matches(e)) {
            if out.len() == self.limit {
                out.pop_front();
            }
            if self.limit > 0 {
                out.push_back(e);
            }
        }
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::LogLevel;

    fn e(t: u64, app: &str) -> LogEntry {
        LogEntry {
            timestamp: t,
            app: app.into(),
            stream: "stdout".into(),
            level: LogLevel::Info,
            message: format!("{app} at {t}"),
        }
    }

    #[test]
    fn newest_lines_of_the_app_since_the_start_oldest_first() {
        let all = vec![
            e(1, "web"),
            e(2, "db"),
            e(3, "web"),
            e(4, "web"),
            e(5, "web"),
        ];
        let q = LogQuery {
            app: Some("web".into()),
            since: Some(3),
            limit: 2,
        };
        let got: Vec<u64> = q.select(all.clone()).iter().map(|e| e.timestamp).collect();
        assert_eq!(got, [4, 5]);
        let q = LogQuery {
            app: None,
            since: None,
            limit: 10,
        };
        assert_eq!(q.select(all).len(), 5);
    }

    #[test]
    fn since_takes_milliseconds_or_a_duration() {
        assert_eq!(parse_since("1700000000000", 5), Ok(1_700_000_000_000));
        assert_eq!(parse_since("30s", 100_000), Ok(70_000));
        assert_eq!(parse_since("2h", 10_000_000), Ok(2_800_000));
        assert_eq!(parse_since("1d", 10), Ok(0));
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("", 0).is_err());
        assert!(parse_since("5w", 0).is_err());
    }
}
