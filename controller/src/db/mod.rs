//! The controller's durable state in one redb file, `<data-dir>/fleetd.redb`. Every change is
//! committed here before anything is published, so a SIGKILL at any moment loses nothing: the
//! next start reads this file and republishes.
//!
//! The database reads and writes records (`crate::model`) and decides nothing: which desired
//! states a deployment writes is the engine's decision, taken inside one write transaction
//! ([`Db::write_deployments`]) by the deployment service (`crate::deployments`).
//!
//! Tables (keys are device or deployment ids; values are CBOR):
//! - `devices`: `model::DeviceRecord`, the last status of every device ever seen;
//! - `desired`: the exact CBOR bytes of each device's `DesiredState`, as published;
//! - `deployments`: `model::DeploymentRecord`, with a phase index beside it;
//! - `counters`: monotonic counters (deployment sequence);
//! - `applications`: registered application versions (validated manifests), `name/version`;
//! - `groups`: named device groups (static lists or label selectors);
//! - `identities`, `tokens`, `enroll_tokens`, `meta`: enrolled device keys and credentials,
//!   API and enrollment tokens (hashes only), small named values (`crate::trust`).
//!
//! redb calls block, so async code goes through [`Db::call`], which runs them on the blocking
//! thread pool.

mod applications;
mod deployment_write;
mod deployments;
mod desired;
mod devices;
mod phases;
mod retention;
mod trust;

pub use applications::{ApplicationRecord, Registered};
pub use deployment_write::DeploymentWrite;
pub use deployments::DesiredBytes;
pub use devices::{is_behind, StatusBatchOutcome, StatusUpdate};
pub use trust::EnrollWrite;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Last known state of each device.
pub(crate) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// CBOR of each device's desired state, byte-identical to what is published.
pub(crate) const DESIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("desired");
/// Deployment records by id.
pub(crate) const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// Monotonic counters by name.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Largest record the database decodes (records are small; this only bounds a corrupt one).
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// redb reported an error (I/O, corruption it detected, ...).
    #[error("database error: {0}")]
    Redb(#[from] redb::Error),
    /// A stored value does not decode.
    #[error("corrupt record {key:?} in table {table}: {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// How long a reopen waits for operations still holding the poisoned database to finish.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// The open database; `None` between closing a poisoned one and opening it again.
    inner: Arc<RwLock<Option<Arc<Database>>>>,
    /// Serialises reopening.
    reopen: Arc<Mutex<()>>,
    /// Bumped at every reopen, so an error from an older handle does not close a fresh one.
    opened: Arc<AtomicU64>,
    path: Arc<PathBuf>,
    /// The page cache size it was opened with (kept for reopening).
    cache_bytes: usize,
    /// Bumped (in memory) whenever a device appears or its inventory or a group changes: the
    /// rollout driver looks for late joiners only when it moved.
    fleet_epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// Opens (or creates) the file with a page cache of `cache_bytes`: the one way fleetd opens it,
/// at start and when reopening after an I/O error.
fn create(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(cache_bytes).create(path)
}

/// The page cache fleetd gives redb unless told otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Db {
    /// Opens (or creates) the database file and makes sure every table exists, with
    /// [`DEFAULT_CACHE_BYTES`] of page cache.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Db::open`] with a page cache of at most `cache_bytes` (redb's own default is 1 GiB,
    /// which a long-running fleetd fills as the database grows).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Db, DbError> {
        let db = create(path, cache_bytes)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(DEVICES)?;
            txn.open_table(DESIRED)?;
            txn.open_table(DEPLOYMENTS)?;
            txn.open_table(phases::PHASES)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(applications::APPLICATIONS)?;
            txn.open_table(applications::GROUPS)?;
            txn.open_table(trust::IDENTITIES)?;
            txn.open_table(trust::TOKENS)?;
            txn.open_table(trust::ENROLL_TOKENS)?;
            txn.open_table(trust::META)?;
        }
        txn.commit()?;
        let db = Db {
            inner: Arc::new(RwLock::new(Some(Arc::new(db)))),
            reopen: Arc::new(Mutex::new(())),
            opened: Arc::new(AtomicU64::new(0)),
            path: Arc::new(path.to_path_buf()),
            cache_bytes,
            fleet_epoch: Arc::new(AtomicU64::new(1)),
        };
        db.heal_phases()?;
        Ok(db)
    }

    /// The fleet epoch: changes whenever a device appears, a device's inventory (labels,
    /// capabilities, resources) changes, or a group is written.
    pub fn fleet_epoch(&self) -> u64 {
        self.fleet_epoch.load(Ordering::SeqCst)
    }

    /// Marks the fleet as changed (after the change is committed).
    pub(crate) fn bump_fleet_epoch(&self) {
        self.fleet_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs a blocking database operation on the blocking thread pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let opened = db.opened.load(Ordering::SeqCst);
            let result = f(&db);
            if let Err(e) = &result {
                db.recover_from(e, opened);
            }
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// The open database (opened again first when an I/O error closed it).
    pub(crate) fn raw(&self) -> Result<Arc<Database>, DbError> {
        let open = self
            .inner
            .read()
            .expect("db lock is never poisoned")
            .clone();
        match open {
            Some(db) => Ok(db),
            None => self.open_again(),
        }
    }

    /// After an I/O error (a full disk, say), redb refuses every later operation with "previous
    /// I/O error" until the file is closed and opened again. Without this, fleetd would fail
    /// every write for the rest of its life once its disk had been full for a moment; with it,
    /// the operation that hit the error fails (naming it) and the next one works again as soon
    /// as the cause is gone. Committed data is safe: redb's commit is atomic, and opening the
    /// file again recovers it as after a crash.
    /// `opened` is the reopen count when the failed operation began: when the database was
    /// opened again since, the error belongs to the old handle and nothing is done.
    fn recover_from(&self, e: &DbError, opened: u64) {
        if !matches!(
            e,
            DbError::Redb(redb::Error::Io(_) | redb::Error::PreviousIo)
        ) {
            return;
        }
        let _one = self.reopen.lock().expect("reopen lock is never poisoned");
        if self.opened.load(Ordering::SeqCst) != opened {
            return;
        }
        let Some(mut old) = self
            .inner
            .write()
            .expect("db lock is never poisoned")
            .take()
        else {
            return;
        };
        tracing::warn!(error = %e, path = %self.path.display(), "closing the database after an I/O error to open it again");
        // Operations still running hold the old handle; the file closes when the last ends.
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(still) if Instant::now() < deadline => {
                    old = still;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        if let Err(e) = self.open_locked() {
            tracing::warn!(error = %e, "the database could not be opened again yet; the next operation retries");
        }
    }

    fn open_again(&self) -> Result<Arc<Database>, DbError> {
        let _one = self.reopen.lock().expect("reopen lock is never poisoned");
        self.open_locked()
    }

    /// Opens the file into the empty slot (or returns what another thread opened meanwhile);
    /// the caller holds `reopen`.
    fn open_locked(&self) -> Result<Arc<Database>, DbError> {
        let mut slot = self.inner.write().expect("db lock is never poisoned");
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(create(self.path.as_path(), self.cache_bytes)?);
        self.opened.fetch_add(1, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), "database opened again");
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The decoded records of `ids` in table `def` (named `label` in errors); absent keys are
    /// left out and corrupt records logged and skipped, so one bad value hides nothing else.
    pub(crate) fn records_by_ids<'a, T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        label: &'static str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<std::collections::BTreeMap<String, T>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = std::collections::BTreeMap::new();
        for id in ids {
            let Some(v) = table.get(id.as_str())? else {
                continue;
            };
            match decode::<T>(label, id, v.value()) {
                Ok(rec) => {
                    out.insert(id.clone(), rec);
                }
                Err(e) => tracing::warn!(error = %e, "skipping {label} record"),
            }
        }
        Ok(out)
    }
}

/// Encodes a record as CBOR.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    fleet_schema::encode(value).map_err(|e| DbError::Encode(e.to_string()))
}

/// Decodes a CBOR record, naming the table and key when it is corrupt.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, DbError> {
    fleet_schema::decode(bytes, MAX_RECORD).map_err(|e| DbError::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}
