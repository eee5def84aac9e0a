//! One device's stored log: JSON lines in numbered segment files under
//! `<data-dir>/logs/<device>/`. New lines go to the newest segment; a full segment (a quarter
//! of the device's size limit) starts a new one; whole oldest segments are deleted when the
//! device is over its size limit or when their newest line is older than the age limit. So a
//! device never holds more than its limit plus one batch, and trimming never rewrites a file.

use fleet_schema::{LogEntry, UnixMillis};
use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// A device's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of one device's stored log.
    pub max_bytes: u64,
    /// Lines older than this (by when fleetd stored them) are deleted, ms.
    pub max_age_ms: u64,
}

impl Limits {
    /// Size at which a segment is closed.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 4).max(4096)
    }
}

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    bytes: u64,
    /// When its newest line was stored, ms.
    newest: UnixMillis,
}

/// A device's segments, oldest first.
#[derive(Debug)]
pub struct DeviceLog {
    dir: PathBuf,
    segments: VecDeque<Segment>,
}

fn mtime_ms(meta: &fs::Metadata) -> UnixMillis {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl DeviceLog {
    /// Opens (or starts) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let mut segments = Vec::new();
        match fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    let name = e.file_name();
                    let Some(seq) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".ndjson"))
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let meta = e.metadata()?;
                    segments.push(Segment {
                        seq,
                        bytes: meta.len(),
                        newest: mtime_ms(&meta),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        segments.sort_by_key(|s| s.seq);
        Ok(Self {
            dir: dir.to_path_buf(),
            segments: segments.into(),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.ndjson"))
    }

    /// Bytes stored.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends `entries` (stored at `now`), then trims to the limits.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a LogEntry>,
        now: UnixMillis,
        limits: Limits,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= limits.segment_bytes());
        if roll {
            let seq = self.segments.back().map_or(1, |s| s.seq + 1);
            // A device's directory is made with its first segment.
            fs::create_dir_all(&self.dir)?;
            self.segments.push_back(Segment {
                seq,
                bytes: 0,
                newest: now,
            });
        }
        let seq = self
            .segments
            .back()
            .expect("a segment was just ensured")
            .seq;
        let path = self.path(seq);
        let seg = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(&buf)?;
        seg.bytes += buf.len() as u64;
        seg.newest = now;
        self.trim(now, limits)
    }

    /// Deletes the oldest segments while over the size limit (keeping the newest) and every
    /// segment whose newest line is past the age limit.
    pub fn trim(&mut self, now: UnixMillis, limits: Limits) -> io::Result<()> {
        loop {
            let Some(oldest) = self.segments.front() else {
                return Ok(());
            };
            let too_old = now.saturating_sub(oldest.newest) > limits.max_age_ms;
            let too_big = self.segments.len() > 1 && self.bytes() > limits.max_bytes;
            if !too_old && !too_big {
                return Ok(());
            }
            let path = self.path(oldest.seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.segments.pop_front();
        }
    }

    /// The segment files, oldest first (read without holding the store's lock).
    pub fn files(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| self.path(s.seq)).collect()
    }
}

/// Every entry of `files` in order; unreadable lines are skipped and counted, a file deleted
/// meanwhile (trimmed) is skipped.
pub fn read_files(files: &[PathBuf]) -> io::Result<(Vec<LogEntry>, u64)> {
    let (mut out, mut bad) = (Vec::new(), 0);
    for path in files {
        let f = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in io::BufReader::new(f).lines() {
            match serde_json::from_str::<LogEntry>(&line?) {
                Ok(e) => out.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::LogLevel;

    fn lines(n: usize, t: u64) -> Vec<LogEntry> {
        (0..n)
            .map(|i| LogEntry {
                timestamp: t,
                app: "web".into(),
                stream: "stdout".into(),
                level: LogLevel::Info,
                message: format!("line {i} {}", "x".repeat(80)),
            })
            .collect()
    }

    #[test]
    fn size_and_age_bound_the_log_and_it_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_bytes: 64 * 1024,
            max_age_ms: 60_000,
        };
        let mut log = DeviceLog::open(dir.path()).expect("opens");
        for i in 0..200 {
            log.append(&lines(10, i), 1_000 + i, limits)
                .expect("appends");
        }
        let bytes = log.bytes();
        assert!(bytes <= limits.max_bytes + 16 * 1024, "{bytes}");
        assert!(bytes >= limits.max_bytes / 2, "{bytes}");
        let (all, bad) = read_files(&log.files()).expect("reads");
        assert_eq!(bad, 0);
        assert_eq!(all.last().map(|e| e.timestamp), Some(199), "newest kept");
        assert!(all.first().map(|e| e.timestamp) > Some(0), "oldest trimmed");

        let mut again = DeviceLog::open(dir.path()).expect("reopens");
        assert_eq!(again.bytes(), bytes);
        again
            .append(&lines(1, 500), 2_000, limits)
            .expect("appends");
        // Files written now are "stored" now by their mtime; a trim far in the future drops all.
        let far = 4_000_000_000_000;
        again.trim(far, limits).expect("trims");
        assert_eq!(again.bytes(), 0);
        assert!(read_files(&again.files()).expect("reads").0.is_empty());
    }
}
