//! The trust tables: `identities` (device id to [`IdentityRecord`]), `tokens` (API tokens by
//! id) and `enroll_tokens` (enrollment tokens by id), plus the `meta` table of small named
//! values (the controller's MQTT password for external brokers). Reading and writing only: the
//! rules live in `crate::trust`.

use super::{decode, encode, Db, DbError};
use crate::trust::records::{EnrollTokenRecord, IdentityRecord, TokenRecord};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

/// Device identities by device id.
pub(crate) const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identities");
/// API tokens by id.
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Enrollment tokens by id.
pub(crate) const ENROLL_TOKENS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("enroll_tokens");
/// Small named values.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What an enrollment transaction writes back.
#[derive(Debug, Clone, Default)]
pub struct EnrollWrite {
    /// The device's new identity (`None`: leave it).
    pub identity: Option<IdentityRecord>,
    /// The enrollment token's new state (`None`: leave it).
    pub token: Option<EnrollTokenRecord>,
}

impl Db {
    fn all_of<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        label: &'static str,
    ) -> Result<Vec<T>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<T>(label, k.value(), v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(error = %e, "skipping {label} record"),
            }
        }
        Ok(out)
    }

    fn one_of<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        label: &'static str,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(def)?;
        match table.get(key)? {
            Some(v) => Ok(Some(decode(label, key, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_one<T: Serialize>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), DbError> {
        let bytes = encode(value)?;
        let txn = self.raw()?.begin_write()?;
        txn.open_table(def)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every device identity.
    pub fn identities(&self) -> Result<Vec<IdentityRecord>, DbError> {
        self.all_of(IDENTITIES, "identities")
    }

    /// One device's identity.
    pub fn identity(&self, device: &str) -> Result<Option<IdentityRecord>, DbError> {
        self.one_of(IDENTITIES, "identities", device)
    }

    /// Writes one device's identity.
    pub fn put_identity(&self, rec: &IdentityRecord) -> Result<(), DbError> {
        self.put_one(IDENTITIES, &rec.device_id, rec)
    }

    /// Forgets one device's identity (an operator's reset); true when there was one.
    pub fn delete_identity(&self, device: &str) -> Result<bool, DbError> {
        let txn = self.raw()?.begin_write()?;
        let existed = txn.open_table(IDENTITIES)?.remove(device)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Runs one enrollment decision atomically: reads the device's identity and the named
    /// enrollment token, lets `decide` (a pure rule) choose what to write, writes it.
    pub fn enroll_txn<R>(
        &self,
        device: &str,
        token_id: Option<&str>,
        decide: impl FnOnce(
            Option<IdentityRecord>,
            Option<EnrollTokenRecord>,
        ) -> Result<(EnrollWrite, R), DbError>,
    ) -> Result<R, DbError> {
        let txn = self.raw()?.begin_write()?;
        let result = {
            let mut ids = txn.open_table(IDENTITIES)?;
            let mut toks = txn.open_table(ENROLL_TOKENS)?;
            let current: Option<IdentityRecord> = match ids.get(device)? {
                Some(v) => Some(decode("identities", device, v.value())?),
                None => None,
            };
            let token: Option<EnrollTokenRecord> = match token_id {
                Some(id) => match toks.get(id)? {
                    Some(v) => Some(decode("enroll_tokens", id, v.value())?),
                    None => None,
                },
                None => None,
            };
            let (write, result) = decide(current, token)?;
            if let Some(rec) = write.identity {
                ids.insert(device, encode(&rec)?.as_slice())?;
            }
            if let Some(tok) = write.token {
                toks.insert(tok.id.as_str(), encode(&tok)?.as_slice())?;
            }
            result
        };
        txn.commit()?;
        Ok(result)
    }

    /// Every API token.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        self.all_of(TOKENS, "tokens")
    }

    /// Writes an API token.
    pub fn put_token(&self, rec: &TokenRecord) -> Result<(), DbError> {
        self.put_one(TOKENS, &rec.id, rec)
    }

    /// Every enrollment token.
    pub fn enroll_tokens(&self) -> Result<Vec<EnrollTokenRecord>, DbError> {
        self.all_of(ENROLL_TOKENS, "enroll_tokens")
    }

    /// One enrollment token.
    pub fn enroll_token(&self, id: &str) -> Result<Option<EnrollTokenRecord>, DbError> {
        self.one_of(ENROLL_TOKENS, "enroll_tokens", id)
    }

    /// Writes an enrollment token.
    pub fn put_enroll_token(&self, rec: &EnrollTokenRecord) -> Result<(), DbError> {
        self.put_one(ENROLL_TOKENS, &rec.id, rec)
    }

    /// A named small value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Writes a named small value.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        let txn = self.raw()?.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// Increments a persisted counter and returns its new value (e.g. the controller's boot
    /// epoch, which orders its signed messages across restarts).
    pub fn bump_counter(&self, name: &str) -> Result<u64, DbError> {
        let txn = self.raw()?.begin_write()?;
        let next = {
            let mut counters = txn.open_table(super::COUNTERS)?;
            let next = counters.get(name)?.map(|v| v.value()).unwrap_or(0) + 1;
            counters.insert(name, next)?;
            next
        };
        txn.commit()?;
        Ok(next)
    }
}
