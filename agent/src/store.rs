//! The agent's durable state in redb (`<data>/agent.redb`): the accepted desired state, per app
//! the installed versions and the current one, and the identity of every process it runs. Every
//! write is a committed (fsynced) transaction, so after a power loss or SIGKILL the agent knows
//! what it applied, what is on disk and which running processes are its own.

use fleet_schema::DesiredState;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const PROCS: TableDefinition<&str, &[u8]> = TableDefinition::new("procs");
const DESIRED_KEY: &str = "desired";

/// What is installed for one app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Versions installed and verified.
    pub installed: BTreeSet<String>,
    /// The version that last reached running.
    pub current: Option<String>,
}

/// The identity of a process the agent started, to adopt it after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// App name.
    pub app: String,
    /// Version it runs.
    pub version: String,
    /// Process id (also its process group id).
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): tells a reused pid
    /// from the original process.
    pub start_time: u64,
    /// The executable it was started from.
    pub exe: String,
}

/// Why the database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, lock held by another agent).
    #[error("agent database: {0}")]
    Db(#[from] redb::Error),
    /// A stored record could not be encoded or decoded.
    #[error("agent database record {key:?}: {message}")]
    Record {
        /// Key of the record.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// redb's page cache and write buffer. The default (1 GiB, filled as pages are read) suits a
/// server; the agent's database is a few records per app, so 1 MiB holds all of it and bounds
/// what a board's memory pays for it.
const CACHE_BYTES: usize = 1 << 20;

/// The open database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        for t in [META, APPS, PROCS] {
            tx.open_table(t).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(table)
            .map_err(db_err)?
            .insert(key, value)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn get_all(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The accepted desired state, if any.
    pub fn desired(&self) -> Result<Option<DesiredState>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(META).map_err(db_err)?;
        let Some(v) = t.get(DESIRED_KEY).map_err(db_err)? else {
            return Ok(None);
        };
        fleet_schema::decode(v.value(), usize::MAX)
            .map(Some)
            .map_err(|e| record_err(DESIRED_KEY, e))
    }

    /// Records a newly accepted desired state (before acting on it).
    pub fn set_desired(&self, desired: &DesiredState) -> Result<(), StoreError> {
        let bytes = fleet_schema::encode(desired).map_err(|e| record_err(DESIRED_KEY, e))?;
        self.put(META, DESIRED_KEY, &bytes)
    }

    /// Every app's record.
    pub fn apps(&self) -> Result<BTreeMap<String, AppRecord>, StoreError> {
        self.get_all(APPS)?
            .into_iter()
            .map(|(k, v)| {
                let rec = serde_json::from_slice(&v).map_err(|e| record_err(&k, e))?;
                Ok((k, rec))
            })
            .collect()
    }

    /// Replaces one app's record.
    pub fn set_app(&self, app: &str, rec: &AppRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rec).map_err(|e| record_err(app, e))?;
        self.put(APPS, app, &bytes)
    }

    /// Forgets an app and its process records.
    pub fn remove_app(&self, app: &str) -> Result<(), StoreError> {
        let prefix = format!("{app}/");
        let procs: Vec<String> = self
            .get_all(PROCS)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&prefix))
            .collect();
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            tx.open_table(APPS)
                .map_err(db_err)?
                .remove(app)
                .map_err(db_err)?;
            let mut t = tx.open_table(PROCS).map_err(db_err)?;
            for k in procs {
                t.remove(k.as_str()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every recorded process.
    pub fn procs(&self) -> Result<Vec<ProcRecord>, StoreError> {
        self.get_all(PROCS)?
            .into_iter()
            .map(|(k, v)| serde_json::from_slice(&v).map_err(|e| record_err(&k, e)))
            .collect()
    }

    /// Records a started process.
    pub fn set_proc(&self, rec: &ProcRecord) -> Result<(), StoreError> {
        let key = proc_key(&rec.app, &rec.version);
        let bytes = serde_json::to_vec(rec).map_err(|e| record_err(&key, e))?;
        self.put(PROCS, &key, &bytes)
    }

    /// Forgets a process that ended.
    pub fn remove_proc(&self, app: &str, version: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(PROCS)
            .map_err(db_err)?
            .remove(proc_key(app, version).as_str())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

fn proc_key(app: &str, version: &str) -> String {
    format!("{app}/{version}")
}

fn record_err(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Record {
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.redb");
        {
            let s = Store::open(&path).expect("open");
            assert_eq!(s.desired().expect("read"), None);
            s.set_desired(&DesiredState {
                device_id: "d".into(),
                generation: 4,
                apps: vec![],
                issued_at: 9,
            })
            .expect("write");
            s.set_app(
                "web",
                &AppRecord {
                    installed: ["1.0.0".to_string()].into(),
                    current: Some("1.0.0".into()),
                },
            )
            .expect("write");
            for v in ["1.0.0", "2.0.0"] {
                s.set_proc(&ProcRecord {
                    app: "web".into(),
                    version: v.into(),
                    pid: 5,
                    start_time: 77,
                    exe: "/x".into(),
                })
                .expect("write");
            }
            s.remove_proc("web", "2.0.0").expect("remove");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(s.desired().expect("read").map(|d| d.generation), Some(4));
        assert_eq!(
            s.apps().expect("read")["web"].current.as_deref(),
            Some("1.0.0")
        );
        let procs = s.procs().expect("read");
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0].start_time, 77);
        s.remove_app("web").expect("remove");
        assert!(s.apps().expect("read").is_empty());
        assert!(s.procs().expect("read").is_empty());
    }
}
