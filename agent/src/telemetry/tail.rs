//! Tailing an app's output files: new lines of `logs/<app>.out.log` and `logs/<app>.err.log`
//! with their stream and parsed level, surviving rotation, turned into wire log entries.

use super::logs::{parse_level, truncate, MAX_LINE, MAX_READ};
use fleet_schema::{LogEntry, LogLevel};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
