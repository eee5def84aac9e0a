//! The `deployments` table: reading deployment records. Writes go through one transaction with
//! the desired states they change ([`super::DeploymentWrite`]).

use super::{decode, Db, DbError, DEPLOYMENTS};
use crate::model::DeploymentRecord;
use redb::{ReadableDatabase, ReadableTable};

/// Device ids with the CBOR of their new desired state, in the order written: what a
/// transaction that changed desired states has to publish after its commit.
pub type DesiredBytes = Vec<(String, Vec<u8>)>;

impl Db {
    /// One deployment.
    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        match table.get(id)? {
            Some(v) => Ok(Some(decode("deployments", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every deployment, oldest first (ids sort by creation). Corrupt records are logged and
    /// skipped.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<DeploymentRecord>("deployments", k.value(), v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(error = %e, "skipping deployment record"),
            }
        }
        Ok(out)
    }
}
