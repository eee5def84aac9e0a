//! App output to log lines: the agent tails each app's `logs/<app>.out.log` and
//! `logs/<app>.err.log` (the app writes them directly, so output survives an agent crash),
//! splits them into lines with a timestamp, the stream (`stdout`, `stderr`) and a parsed level
//! (unmarked stderr lines are errors), truncates over-long lines, rate-limits them, keeps the recent ones in a
//! bounded ring (for history requests) and rotates the file when it grows too large.
//! The pure parts (level parsing, truncation, token bucket, ring) are tested without I/O.

use fleet_schema::{LogEntry, LogLevel};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (`<app>.out.log`).
    Stdout,
    /// Standard error (`<app>.err.log`).
    Stderr,
}

impl Stream {
    /// The wire name (`LogEntry::stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The level of a line that announces none.
    pub fn default_level(self) -> LogLevel {
        match self {
            Stream::Stdout => LogLevel::Info,
            Stream::Stderr => LogLevel::Error,
        }
    }
}

/// One complete line read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Where it came from.
    pub stream: Stream,
    /// The text, without the newline.
    pub text: String,
}

/// Follows one app's stdout and stderr files.
#[derive(Debug)]
pub struct Tailer {
    app: String,
    out: FileTail,
    err: FileTail,
}

impl Tailer {
    /// Follows `out` and `err` from their current ends (earlier output is history on disk only).
    pub fn at_end(app: &str, out: &Path, err: &Path) -> Self {
        Self {
            app: app.to_string(),
            out: FileTail::at_end(out),
            err: FileTail::at_end(err),
        }
    }

    /// The app followed.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// New complete lines of stdout, then of stderr (see [`FileTail::poll`]).
    pub fn poll(&mut self) -> Vec<Line> {
        let tag = |stream: Stream, lines: Vec<String>| {
            lines
                .into_iter()
                .map(move |text| Line { stream, text })
                .collect::<Vec<_>>()
        };
        let mut lines = tag(Stream::Stdout, self.out.poll());
        lines.extend(tag(Stream::Stderr, self.err.poll()));
        lines
    }

    /// Rotates either file that exceeds `max_bytes` (see [`FileTail::rotate_if_larger`]);
    /// true when one was rotated.
    pub fn rotate_if_larger(&mut self, max_bytes: u64) -> std::io::Result<bool> {
        let out = self.out.rotate_if_larger(max_bytes)?;
        let err = self.err.rotate_if_larger(max_bytes)?;
        Ok(out || err)
    }
}

/// Follows one file from an offset.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl FileTail {
    /// Follows `path` from its current end.
    pub fn at_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
        }
    }
    /// Reads complete new lines (at most [`MAX_READ`] bytes per call). A file shorter than
    /// the offset was rotated (copied and truncated): reading starts again at 0.
    pub fn poll(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let got = (&mut f)
            .take(MAX_READ as u64)
            .read_to_end(&mut buf)
            .unwrap_or(0);
        self.offset += got as u64;
        self.partial.extend_from_slice(&buf[..got]);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&raw[..raw.len() - 1]);
            lines.push(text.trim_end_matches('\r').to_string());
        }
        // A line longer than the limit with no newline yet: emit what we have.
        if self.partial.len() > MAX_LINE {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
        }
        lines
    }

    /// Copies the file to `<file>.1` and truncates it when it exceeds `max_bytes` (copy and
    /// truncate, because the app keeps writing through its own append-mode descriptor).
    /// Call right after [`Tailer::poll`] so no unread output is lost from the live file.
    pub fn rotate_if_larger(&mut self, max_bytes: u64) -> std::io::Result<bool> {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len <= max_bytes || self.offset < len {
            return Ok(false);
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::copy(&self.path, &old)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)?;
        self.offset = 0;
        Ok(true)
    }
}

/// Turns raw lines into entries at `timestamp`.
pub fn entries(app: &str, lines: Vec<Line>, timestamp: u64) -> Vec<LogEntry> {
    lines
        .into_iter()
        .map(|l| LogEntry {
            timestamp,
            app: app.to_string(),
            stream: l.stream.as_str().to_string(),
            level: parse_level(&l.text, l.stream.default_level()),
            message: truncate(&l.text, MAX_LINE),
        })
        .collect()
}

/// How often the files are polled.
pub const POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    #[test]
    fn tailer_reads_new_lines_and_survives_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, "before\n").expect("write");
        let mut t = FileTail::at_end(&path);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        write!(f, "one\ntw").expect("write");
        assert_eq!(t.poll(), ["one"]);
        writeln!(f, "o").expect("write");
        assert_eq!(t.poll(), ["two"]);
        assert!(t.rotate_if_larger(5).expect("rotates"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("app.log.1")).expect("rotated"),
            "before\none\ntwo\n"
        );
        writeln!(f, "three").expect("append continues at the start");
        assert_eq!(t.poll(), ["three"]);
        assert_eq!(std::fs::read_to_string(&path).expect("live"), "three\n");
        assert!(!t.rotate_if_larger(1000).expect("no-op"));
    }

    #[test]
    fn stdout_and_stderr_are_tagged_and_unmarked_stderr_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("a.out.log"), dir.path().join("a.err.log"));
        let mut t = Tailer::at_end("a", &out, &err);
        std::fs::write(&out, "ready\nWARN slow\n").expect("write");
        std::fs::write(&err, "boom\ninfo: fine\n").expect("write");
        let got: Vec<(String, LogLevel, String)> = entries("a", t.poll(), 7)
            .into_iter()
            .map(|e| (e.stream, e.level, e.message))
            .collect();
        let want = [
            ("stdout", LogLevel::Info, "ready"),
            ("stdout", LogLevel::Warn, "WARN slow"),
            ("stderr", LogLevel::Error, "boom"),
            ("stderr", LogLevel::Info, "info: fine"),
        ]
        .map(|(s, l, m)| (s.to_string(), l, m.to_string()));
        assert_eq!(got, want);
        assert!(t.poll().is_empty());
        assert!(t.rotate_if_larger(5).expect("rotates both"));
        assert!(dir.path().join("a.err.log.1").is_file());
        assert!(dir.path().join("a.out.log.1").is_file());
    }
}
