//! Tailing an app's output files: new lines of `logs/<app>.out.log` and `logs/<app>.err.log`
//! with their stream and parsed level, surviving rotation, turned into wire log entries.

use super::logs::{parse_level, truncate, MAX_LINE, MAX_READ};
use fleet_schema::{LogEntry, LogLevel};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
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
    /// returns each stream rotated with the number of lines it skipped unread.
    pub fn rotate_if_larger(&mut self, max_bytes: u64) -> std::io::Result<Vec<(Stream, u64)>> {
        let mut rotated = Vec::new();
        if let Some(n) = self.out.rotate_if_larger(max_bytes)? {
            rotated.push((Stream::Stdout, n));
        }
        if let Some(n) = self.err.rotate_if_larger(max_bytes)? {
            rotated.push((Stream::Stderr, n));
        }
        Ok(rotated)
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
    /// truncate, because the app keeps writing through its own append-mode descriptor),
    /// wherever the tailer is: a file never waits for the tailer to catch up, so it exceeds
    /// the limit by at most what the app writes between two calls. Lines the tailer had not
    /// read yet are counted and returned (`Some(skipped)` when the file was rotated), so the
    /// caller reports them as dropped instead of losing them silently. Call right after
    /// [`Tailer::poll`], which reads as much as it may first.
    pub fn rotate_if_larger(&mut self, max_bytes: u64) -> std::io::Result<Option<u64>> {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len <= max_bytes {
            return Ok(None);
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        // Neither file is ever reached through a link (one would point the copy and the
        // truncation at a file that is not the app's log).
        let nofollow = nix::fcntl::OFlag::O_NOFOLLOW.bits();
        let mut live = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nofollow)
            .open(&self.path)?;
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nofollow)
            .open(&old)?;
        std::io::copy(&mut live, &mut copy)?;
        // What the tailer has not read, up to the last byte before the truncation.
        let end = live.metadata()?.len();
        let skipped = if self.offset < end {
            live.seek(SeekFrom::Start(self.offset))?;
            let lines = count_lines((&mut live).take(end - self.offset))?;
            // The unread line the tailer had begun ends in the skipped part.
            self.partial.clear();
            lines
        } else {
            0
        };
        live.set_len(0)?;
        self.offset = 0;
        Ok(Some(skipped))
    }
}

/// Newlines in `r`.
fn count_lines(mut r: impl Read) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(n),
            k => n += buf[..k].iter().filter(|b| **b == b'\n').count() as u64,
        }
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

/// The entry that tells, in the app's own stream, that `n` lines were rotated away unread.
pub fn skipped_marker(app: &str, stream: Stream, n: u64, timestamp: u64) -> LogEntry {
    LogEntry {
        timestamp,
        app: app.to_string(),
        stream: stream.as_str().to_string(),
        level: LogLevel::Warn,
        message: format!(
            "fleet-agent: {n} lines dropped: the {} log file reached its size limit before they \
             were read (see <file>.1 on the device)",
            stream.as_str()
        ),
    }
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
        assert_eq!(t.rotate_if_larger(5).expect("rotates"), Some(0));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("app.log.1")).expect("rotated"),
            "before\none\ntwo\n"
        );
        writeln!(f, "three").expect("append continues at the start");
        assert_eq!(t.poll(), ["three"]);
        assert_eq!(std::fs::read_to_string(&path).expect("live"), "three\n");
        assert_eq!(t.rotate_if_larger(1000).expect("no-op"), None);
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
        let rotated = t.rotate_if_larger(5).expect("rotates both");
        assert_eq!(rotated, [(Stream::Stdout, 0), (Stream::Stderr, 0)]);
        assert!(dir.path().join("a.err.log.1").is_file());
        assert!(dir.path().join("a.out.log.1").is_file());
    }

    /// Issue 10: an app writing faster than the tailer reads (64 KiB a poll) grew its log to 33
    /// MB against the 1 MiB limit, because rotation waited for the tailer. Here a real process
    /// writes bursts of 20,000 lines (about 1 MB, several times the limit) into the file it
    /// appends to, as an app does, the tailer reads one poll's worth and falls behind, and
    /// after every burst the file must be rotated back under the limit, with the lines the
    /// tailer never read counted.
    #[test]
    fn rotation_does_not_wait_for_a_tailer_that_falls_behind() {
        const LIMIT: u64 = 256 * 1024;
        const LINES: u64 = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fast.out.log");
        std::fs::write(&path, "").expect("create");
        let mut t = FileTail::at_end(&path);
        let (mut read, mut skipped) = (0u64, 0u64);
        for burst in 0..4 {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open for append");
            let status = std::process::Command::new("sh")
                .args(["-c", &format!("yes 'a line of output from a busy app, fifty bytes or so' | head -n {LINES}")])
                .stdout(log)
                .status()
                .expect("writer runs");
            assert!(status.success());
            read += t.poll().len() as u64;
            let rotated = t.rotate_if_larger(LIMIT).expect("rotates");
            skipped += rotated.expect("over the limit: rotated whatever the tailer's offset");
            let len = std::fs::metadata(&path).expect("stat").len();
            assert!(
                len <= LIMIT,
                "burst {burst}: the live file holds {len} bytes"
            );
        }
        assert_eq!(
            read + skipped,
            4 * LINES,
            "every line was read or counted as dropped"
        );
        assert!(skipped > 0);
        let marker = skipped_marker("fast", Stream::Stdout, skipped, 1);
        assert!(marker.message.contains(&format!("{skipped} lines dropped")));
        assert_eq!(marker.level, LogLevel::Warn);
    }

    #[test]
    fn a_log_replaced_by_a_link_is_never_copied_or_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("host");
        std::fs::write(&host, "x".repeat(100)).expect("host file");
        let path = dir.path().join("app.out.log");
        std::os::unix::fs::symlink(&host, &path).expect("link");
        let mut t = FileTail::at_end(&path);
        assert!(t.rotate_if_larger(10).is_err(), "refused through the link");
        assert_eq!(std::fs::read(&host).expect("host").len(), 100);
        assert!(!dir.path().join("app.out.log.1").exists());
    }
}
