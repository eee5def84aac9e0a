//! The `applications` table: registered application versions (validated manifests), keyed
//! `name/version`, and the `groups` table of named device groups.

use super::{decode, encode, Db, DbError};
use fleet_schema::api::GroupSpec;
use fleet_schema::manifest::Application;
use fleet_schema::UnixMillis;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Registered application versions by `name/version`.
pub(crate) const APPLICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("applications");
/// Device groups by name.
pub(crate) const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// An application version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationRecord {
    /// The validated manifest.
    pub application: Application,
    /// When it was first registered.
    pub registered_at: UnixMillis,
}

/// What registering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new version.
    Created(ApplicationRecord),
    /// The same manifest was already registered (idempotent).
    Unchanged(ApplicationRecord),
    /// The version exists with a different manifest.
    Conflict(ApplicationRecord),
}

fn key(name: &str, version: &str) -> String {
    format!("{name}/{version}")
}

impl Db {
    /// Registers an application version; a version is immutable once registered.
    pub fn register_application(
        &self,
        app: Application,
        now: UnixMillis,
    ) -> Result<Registered, DbError> {
        let k = key(&app.name, &app.version);
        let txn = self.raw()?.begin_write()?;
        let out = {
            let mut table = txn.open_table(APPLICATIONS)?;
            let existing: Option<ApplicationRecord> = match table.get(k.as_str())? {
                Some(v) => Some(decode("applications", &k, v.value())?),
                None => None,
            };
            match existing {
                Some(rec) if rec.application == app => Registered::Unchanged(rec),
                Some(rec) => Registered::Conflict(rec),
                None => {
                    let rec = ApplicationRecord {
                        application: app,
                        registered_at: now,
                    };
                    table.insert(k.as_str(), encode(&rec)?.as_slice())?;
                    Registered::Created(rec)
                }
            }
        };
        txn.commit()?;
        Ok(out)
    }

    /// One application version.
    pub fn application(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<ApplicationRecord>, DbError> {
        let k = key(name, version);
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(APPLICATIONS)?;
        match table.get(k.as_str())? {
            Some(v) => Ok(Some(decode("applications", &k, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every registered application version, by name then version key.
    pub fn applications(&self) -> Result<Vec<ApplicationRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(APPLICATIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<ApplicationRecord>("applications", k.value(), v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(error = %e, "skipping application record"),
            }
        }
        Ok(out)
    }

    /// Creates or replaces a device group.
    pub fn put_group(&self, group: &GroupSpec) -> Result<(), DbError> {
        let txn = self.raw()?.begin_write()?;
        {
            let mut table = txn.open_table(GROUPS)?;
            table.insert(group.name.as_str(), encode(group)?.as_slice())?;
        }
        txn.commit()?;
        self.bump_fleet_epoch();
        Ok(())
    }

    /// Deletes a group and returns it (`None` when there was none). Deployments that named it
    /// keep the devices they already have; a rollout stops growing through it.
    pub fn delete_group(&self, name: &str) -> Result<Option<GroupSpec>, DbError> {
        let txn = self.raw()?.begin_write()?;
        let removed = {
            let mut table = txn.open_table(GROUPS)?;
            let old = table.remove(name)?;
            match old {
                Some(v) => Some(decode::<GroupSpec>("groups", name, v.value())?),
                None => None,
            }
        };
        txn.commit()?;
        self.bump_fleet_epoch();
        Ok(removed)
    }

    /// One group.
    pub fn group(&self, name: &str) -> Result<Option<GroupSpec>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(GROUPS)?;
        match table.get(name)? {
            Some(v) => Ok(Some(decode("groups", name, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<GroupSpec>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(GROUPS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let Ok(g) = decode::<GroupSpec>("groups", k.value(), v.value()) {
                out.push(g);
            }
        }
        Ok(out)
    }
}
