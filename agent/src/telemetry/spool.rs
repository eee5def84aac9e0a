//! The offline backlog: metrics and log batches that could not be sent while the broker was
//! unreachable, kept on disk (so a reboot during an outage loses nothing) in a queue bounded by
//! message count and bytes. When full, the oldest message is dropped first and counted. The
//! bookkeeping ([`Index`]) is pure and tested on its own; [`Spool`] adds the files.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Limits of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most messages kept.
    pub max_messages: usize,
    /// Most payload bytes kept.
    pub max_bytes: u64,
}

/// Which messages are queued, oldest first, and how many were dropped.
#[derive(Debug, Clone)]
pub struct Index {
    bounds: Bounds,
    entries: VecDeque<(u64, u64)>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
}

impl Index {
    /// An empty index whose next sequence number is `next_seq`.
    pub fn new(bounds: Bounds, next_seq: u64) -> Self {
        Self {
            bounds,
            entries: VecDeque::new(),
            bytes: 0,
            next_seq,
            dropped: 0,
        }
    }

    /// Records a message of `size` bytes; returns its sequence number (None when it alone
    /// exceeds the byte bound: dropped) and the sequence numbers evicted to make room.
    pub fn push(&mut self, size: u64) -> (Option<u64>, Vec<u64>) {
        if size > self.bounds.max_bytes || self.bounds.max_messages == 0 {
            self.dropped += 1;
            return (None, Vec::new());
        }
        let mut evicted = Vec::new();
        while self.entries.len() >= self.bounds.max_messages
            || self.bytes + size > self.bounds.max_bytes
        {
            match self.entries.pop_front() {
                Some((seq, s)) => {
                    self.bytes -= s;
                    self.dropped += 1;
                    evicted.push(seq);
                }
                None => break,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back((seq, size));
        self.bytes += size;
        (Some(seq), evicted)
    }

    /// Re-adds a message found on disk at start (call in ascending sequence order); returns
    /// the sequence numbers that no longer fit the bounds (possibly `seq` itself).
    fn restore(&mut self, seq: u64, size: u64) -> Vec<u64> {
        self.next_seq = self.next_seq.max(seq);
        let (kept, mut evicted) = self.push(size);
        if kept.is_none() {
            evicted.push(seq);
        }
        evicted
    }

    /// The oldest message's sequence number.
    pub fn front(&self) -> Option<u64> {
        self.entries.front().map(|e| e.0)
    }

    /// Forgets the oldest message (sent).
    pub fn pop(&mut self) -> Option<u64> {
        let (seq, size) = self.entries.pop_front()?;
        self.bytes -= size;
        Some(seq)
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The backlog on disk: one file per message, `<seq>.msg`, holding the topic, a newline and
/// the payload.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    index: Index,
}

impl Spool {
    /// Opens (or creates) the backlog in `dir`, keeping what an earlier run left.
    pub fn open(dir: &Path, bounds: Bounds) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(u64, u64)> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_suffix(".msg")?.parse().ok()?;
                Some((seq, e.metadata().ok()?.len()))
            })
            .collect();
        found.sort_unstable();
        let mut spool = Self {
            dir: dir.to_path_buf(),
            index: Index::new(bounds, 0),
        };
        for (seq, size) in found {
            for gone in spool.index.restore(seq, size) {
                let _ = std::fs::remove_file(spool.path(gone));
            }
        }
        Ok(spool)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.msg"))
    }

    /// Queues a message, dropping the oldest ones beyond the bounds.
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(topic.len() + 1 + payload.len());
        bytes.extend_from_slice(topic.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(payload);
        let (seq, evicted) = self.index.push(bytes.len() as u64);
        for gone in evicted {
            let _ = std::fs::remove_file(self.path(gone));
        }
        match seq {
            Some(seq) => std::fs::write(self.path(seq), &bytes),
            None => Ok(()),
        }
    }

    /// The oldest message (topic, payload); unreadable files are skipped and deleted.
    pub fn peek(&mut self) -> Option<(String, Vec<u8>)> {
        while let Some(seq) = self.index.front() {
            if let Ok(bytes) = std::fs::read(self.path(seq)) {
                if let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
                    let topic = String::from_utf8_lossy(&bytes[..nl]).into_owned();
                    return Some((topic, bytes[nl + 1..].to_vec()));
                }
            }
            self.pop();
        }
        None
    }

    /// Deletes the oldest message (after it was handed to the client).
    pub fn pop(&mut self) {
        if let Some(seq) = self.index.pop() {
            let _ = std::fs::remove_file(self.path(seq));
        }
    }

    /// The bookkeeping (length, bytes, drops).
    pub fn index(&self) -> &Index {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        max_messages: 3,
        max_bytes: 100,
    };

    #[test]
    fn index_drops_oldest_first_by_count_and_bytes() {
        let mut i = Index::new(B, 0);
        assert_eq!(i.push(10), (Some(0), vec![]));
        assert_eq!(i.push(10), (Some(1), vec![]));
        assert_eq!(i.push(10), (Some(2), vec![]));
        assert_eq!(i.push(10), (Some(3), vec![0]), "count bound");
        assert_eq!(i.push(80), (Some(4), vec![1]), "count bound, then it fits");
        assert_eq!(i.bytes(), 100);
        assert_eq!(i.push(30), (Some(5), vec![2, 3, 4]), "byte bound");
        assert_eq!(i.push(101), (None, vec![]), "larger than the bound alone");
        assert_eq!(i.dropped(), 6);
        assert_eq!(i.pop(), Some(5));
        assert!(i.is_empty());
        assert_eq!(i.bytes(), 0);
        assert_eq!(i.pop(), None);
    }

    #[test]
    fn spool_survives_a_restart_and_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = Bounds {
            max_messages: 10,
            max_bytes: 1000,
        };
        let mut s = Spool::open(dir.path(), big).expect("opens");
        for i in 0..4u8 {
            s.push("fleet/d/metrics", &[i]).expect("push");
        }
        s.pop();
        drop(s);
        let mut s = Spool::open(dir.path(), B).expect("reopens with smaller bounds");
        assert_eq!(s.index().len(), 3);
        assert_eq!(s.peek(), Some(("fleet/d/metrics".into(), vec![1])));
        s.push("fleet/d/logs", b"x").expect("push");
        assert_eq!(
            s.peek(),
            Some(("fleet/d/metrics".into(), vec![2])),
            "oldest dropped"
        );
        let files = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(files, 3, "evicted files are deleted");
    }
}
