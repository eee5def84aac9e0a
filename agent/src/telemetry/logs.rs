//! App output to log lines: the agent tails each app's `logs/<app>.out.log` and
//! `logs/<app>.err.log` (the app writes them directly, so output survives an agent crash; see
//! [`super::tail`]), gives each line a timestamp, the stream and a parsed level (unmarked
//! stderr lines are errors), truncates over-long lines, rate-limits them and keeps the recent
//! ones in a bounded ring (for history requests). These pure parts (level parsing, truncation,
//! token bucket, ring) are tested without I/O.

use fleet_schema::{LogEntry, LogLevel};
use std::collections::VecDeque;
use std::time::Instant;

/// Longest line kept, bytes; longer lines are cut and marked.
pub const MAX_LINE: usize = 2048;
/// Most bytes read from one file per poll.
pub const MAX_READ: usize = 64 * 1024;
/// Marker appended to truncated lines.
pub const TRUNCATED: &str = " [truncated]";

/// The level a line announces (`ERROR`, `warn:`, `"level":"debug"`...), else `default`.
pub fn parse_level(line: &str, default: LogLevel) -> LogLevel {
    let head: String = line
        .chars()
        .take(48)
        .collect::<String>()
        .to_ascii_lowercase();
    let words = head.split(|c: char| !c.is_ascii_alphabetic());
    for w in words {
        match w {
            "error" | "err" | "fatal" | "crit" | "critical" | "panic" => return LogLevel::Error,
            "warn" | "warning" => return LogLevel::Warn,
            "info" | "notice" => return LogLevel::Info,
            "debug" => return LogLevel::Debug,
            "trace" => return LogLevel::Trace,
            _ => {}
        }
    }
    default
}

/// Cuts `line` to at most `max` bytes at a character boundary, marking the cut.
pub fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &line[..end])
}

/// A token bucket: `rate` lines per second, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The most recent lines, oldest dropped first.
#[derive(Debug, Clone)]
pub struct Ring {
    cap: usize,
    lines: VecDeque<LogEntry>,
}

impl Ring {
    /// A ring holding at most `cap` lines.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            lines: VecDeque::new(),
        }
    }

    /// Adds a line, dropping the oldest when full.
    pub fn push(&mut self, e: LogEntry) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(e);
    }

    /// The last `n` lines (of `app` when given), oldest first.
    pub fn recent(&self, app: Option<&str>, n: usize) -> Vec<LogEntry> {
        let mut out: Vec<LogEntry> = self
            .lines
            .iter()
            .rev()
            .filter(|e| app.is_none_or(|a| e.app == a))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levels_are_parsed() {
        assert_eq!(
            parse_level("ERROR db down", LogLevel::Info),
            LogLevel::Error
        );
        assert_eq!(parse_level("[warn] slow", LogLevel::Info), LogLevel::Warn);
        assert_eq!(
            parse_level(r#"{"level":"debug","msg":"x"}"#, LogLevel::Info),
            LogLevel::Debug
        );
        assert_eq!(
            parse_level("2024-01-01T00:00:00Z TRACE x", LogLevel::Info),
            LogLevel::Trace
        );
        assert_eq!(
            parse_level("listening on :80", LogLevel::Info),
            LogLevel::Info
        );
        assert_eq!(
            parse_level("errors=0 fine", LogLevel::Info),
            LogLevel::Info,
            "whole words"
        );
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(100);
        let t = truncate(&long, 50);
        assert!(t.len() <= 50 && t.ends_with(TRUNCATED), "{t}");
    }

    #[test]
    fn token_bucket_limits_rate_on_a_simulated_clock() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        let burst = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 5);
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(150)), "refills at 10/s");
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            (0..20).filter(|_| b.take(later)).count(),
            5,
            "capped at burst"
        );
    }

    #[test]
    fn ring_keeps_the_latest_per_app() {
        let mut r = Ring::new(3);
        for (i, app) in ["a", "b", "a", "b", "a"].iter().enumerate() {
            r.push(LogEntry {
                timestamp: i as u64,
                app: app.to_string(),
                stream: String::new(),
                level: LogLevel::Info,
                message: i.to_string(),
            });
        }
        assert_eq!(r.len(), 3);
        let msgs = |v: Vec<LogEntry>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
        assert_eq!(msgs(r.recent(None, 10)), ["2", "3", "4"]);
        assert_eq!(msgs(r.recent(Some("a"), 10)), ["2", "4"]);
        assert_eq!(msgs(r.recent(None, 1)), ["4"]);
    }
}
