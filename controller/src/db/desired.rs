//! The `desired` table: each device's desired state as the exact CBOR bytes that are (or will
//! be) retained on `fleet/<device>/cmd`, so the cmd guard can compare bytes.

use super::{decode, Db, DbError, DESIRED};
use fleet_schema::DesiredState;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;

impl Db {
    /// The stored CBOR of one device's desired state.
    pub fn desired_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DESIRED)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    /// The stored CBOR of several devices' desired states (absent ones are skipped).
    pub fn desired_bytes_many(&self, ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DESIRED)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = table.get(id.as_str())? {
                out.push((id.clone(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// Ids of every device that has a desired state.
    pub fn desired_ids(&self) -> Result<Vec<String>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DESIRED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, _) = entry?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    /// Every device's decoded desired state (corrupt ones are logged and skipped).
    pub fn desired_all(&self) -> Result<BTreeMap<String, DesiredState>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DESIRED)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<DesiredState>("desired", k.value(), v.value()) {
                Ok(d) => {
                    out.insert(k.value().to_string(), d);
                }
                Err(e) => tracing::warn!(error = %e, "skipping desired state"),
            }
        }
        Ok(out)
    }

    /// The decoded desired states of the given devices (absent or corrupt ones left out).
    pub fn desired_by_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, DesiredState>, DbError> {
        self.records_by_ids(DESIRED, "desired", ids)
    }

    /// One device's decoded desired state.
    pub fn desired(&self, id: &str) -> Result<Option<DesiredState>, DbError> {
        match self.desired_bytes(id)? {
            Some(bytes) => Ok(Some(decode("desired", id, &bytes)?)),
            None => Ok(None),
        }
    }
}
