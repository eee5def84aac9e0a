//! The central log store: every verified log batch from `fleet/+/logs` is appended to its
//! device's log on disk ([`device_log`]), bounded per device by size (`--log-max-bytes`,
//! default 8 MiB) and age (`--log-max-age-hours`, default 7 days), so an operator reads a
//! device's output from fleetd even while the device is offline ([`query`] picks the lines).
//!
//! A device that floods is held back first by its agent's rate limit, then by its own size
//! limit: its old lines go, nobody else's. One writer thread appends; reads take the segment
//! list under the lock and read the files without it.

pub mod device_log;
pub mod query;

use device_log::{read_files, DeviceLog, Limits};
use fleet_schema::{LogBatch, LogEntry, LogLevel, UnixMillis};
use query::LogQuery;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Default size limit per device: 8 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Default age limit: 7 days.
pub const DEFAULT_MAX_AGE_HOURS: u64 = 7 * 24;
/// How often the age limit is applied to every device (also to those that went quiet).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The store's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LogStoreArgs {
    /// Most bytes of stored log per device (older lines are deleted first).
    #[arg(long, env = "FLEETD_LOG_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Stored log lines older than this many hours are deleted.
    #[arg(long, env = "FLEETD_LOG_MAX_AGE_HOURS", default_value_t = DEFAULT_MAX_AGE_HOURS)]
    pub log_max_age_hours: u64,
}

/// The store.
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    limits: Limits,
    logs: Mutex<HashMap<String, DeviceLog>>,
}

impl LogStore {
    /// A store under `root` (`<data-dir>/logs`).
    pub fn new(root: PathBuf, args: &LogStoreArgs) -> Self {
        Self {
            root,
            limits: Limits {
                max_bytes: args.log_max_bytes,
                max_age_ms: args.log_max_age_hours.saturating_mul(3_600_000),
            },
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn with_log<T>(
        &self,
        device: &str,
        f: impl FnOnce(&mut DeviceLog) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut logs = self.logs.lock().expect("log store lock is never poisoned");
        if !logs.contains_key(device) {
            let log = DeviceLog::open(&self.root.join(device))?;
            logs.insert(device.to_string(), log);
        }
        f(logs.get_mut(device).expect("inserted above"))
    }

    /// Stores a verified live batch (history answers are copies of lines already stored).
    /// Lines the agent dropped become one warning line of app `agent`.
    pub fn append(&self, batch: &LogBatch, now: UnixMillis) -> io::Result<()> {
        if batch.history {
            return Ok(());
        }
        let dropped = (batch.dropped > 0).then(|| LogEntry {
            timestamp: now,
            app: "agent".into(),
            stream: "stderr".into(),
            level: LogLevel::Warn,
            message: format!(
                "{} lines dropped by the agent (rate limit or full buffer)",
                batch.dropped
            ),
        });
        let limits = self.limits;
        let entries = batch.entries.iter().chain(dropped.as_ref());
        self.with_log(&batch.device_id, |log| log.append(entries, now, limits))
    }

    /// The lines of `device` that `q` selects, oldest first.
    pub fn read(&self, device: &str, q: &LogQuery) -> io::Result<Vec<LogEntry>> {
        let files = self.with_log(device, |log| Ok(log.files()))?;
        let (all, bad) = read_files(&files)?;
        if bad > 0 {
            tracing::warn!(device, bad, "skipped unreadable stored log lines");
        }
        Ok(q.select(all))
    }

    /// Applies the age limit to every device on disk.
    pub fn sweep(&self, now: UnixMillis) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let limits = self.limits;
        for e in entries {
            let name = e?.file_name();
            if let Some(device) = name.to_str() {
                self.with_log(device, |log| log.trim(now, limits))?;
            }
        }
        Ok(())
    }
}

/// Starts the writer thread (fed from the broadcast of verified batches) and the periodic age
/// sweep. Both end when the broadcast closes or `shutdown` is cancelled.
pub fn start(
    store: Arc<LogStore>,
    mut rx: broadcast::Receiver<Arc<LogBatch>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let writer = store.clone();
    std::thread::Builder::new()
        .name("fleetd-logstore".into())
        .spawn(move || loop {
            match rx.blocking_recv() {
                Ok(batch) => {
                    if let Err(e) = writer.append(&batch, crate::clock::now_ms()) {
                        tracing::warn!(device = %batch.device_id, error = %e, "cannot store log lines");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(batches = n, "log store fell behind; batches not stored")
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let s = store.clone();
            let swept = tokio::task::spawn_blocking(move || s.sweep(crate::clock::now_ms())).await;
            if let Ok(Err(e)) = swept {
                tracing::warn!(error = %e, "cannot apply the log age limit");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, msg: &str) -> LogEntry {
        LogEntry {
            timestamp: 5,
            app: app.into(),
            stream: "stdout".into(),
            level: LogLevel::Info,
            message: msg.into(),
        }
    }

    #[test]
    fn live_lines_and_drops_are_stored_history_answers_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::new(
            dir.path().to_path_buf(),
            &LogStoreArgs {
                log_max_bytes: DEFAULT_MAX_BYTES,
                log_max_age_hours: DEFAULT_MAX_AGE_HOURS,
            },
        );
        let batch = |entries, dropped, history| LogBatch {
            device_id: "d1".into(),
            entries,
            dropped,
            history,
        };
        let now = crate::clock::now_ms();
        store
            .append(&batch(vec![line("web", "hello")], 3, false), now)
            .expect("stores");
        store
            .append(&batch(vec![line("web", "again")], 0, true), now)
            .expect("skips");
        let all = LogQuery {
            app: None,
            since: None,
            limit: 10,
        };
        let got: Vec<(String, String)> = store
            .read("d1", &all)
            .expect("reads")
            .into_iter()
            .map(|e| (e.app, e.message))
            .collect();
        assert_eq!(
            got,
            [
                ("web".to_string(), "hello".to_string()),
                (
                    "agent".to_string(),
                    "3 lines dropped by the agent (rate limit or full buffer)".to_string()
                ),
            ]
        );
        assert!(store.read("d2", &all).expect("reads").is_empty());
        store.sweep(now).expect("sweeps");
        assert_eq!(store.read("d1", &all).expect("reads").len(), 2);
    }
}
