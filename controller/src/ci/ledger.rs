//! The durable record of CI requests (redb table `ci_requests`, key `<owner>/<request id>`),
//! so a repeated request id is answered again instead of deploying twice, also after a fleetd
//! restart, and the verdict of a deployment that was still running at the restart is sent
//! when it ends.

use super::parse::Format;
use crate::db::{decode, encode, Db, DbError};
use fleet_schema::ci::CiReply;
use fleet_schema::UnixMillis;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// CI requests by `<owner>/<request id>`.
const CI_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ci_requests");

/// One request as remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiRecord {
    /// sha256 (hex) of the request without its token: the same id with another request is
    /// refused.
    pub digest: String,
    /// The encoding the answers use.
    pub format: Format,
    /// When fleetd started on it.
    pub created_at: UnixMillis,
    /// The application, to find a deployment created just before a crash.
    pub application: String,
    /// The version, likewise.
    pub version: String,
    /// The `accepted` answer, once the deployment exists.
    #[serde(default)]
    pub accepted: Option<CiReply>,
    /// The `result` answer, once the deployment has ended.
    #[serde(default)]
    pub result: Option<CiReply>,
}

impl CiRecord {
    /// The deployment id, once created.
    pub fn deployment(&self) -> Option<&str> {
        match &self.accepted {
            Some(CiReply::Accepted { deployment, .. }) => Some(deployment),
            _ => None,
        }
    }
}

/// The key of a request.
pub fn key(owner: &str, id: &str) -> String {
    format!("{owner}/{id}")
}

/// Creates the table if it does not exist yet (at start, so readers never miss it).
pub fn init(db: &Db) -> Result<(), DbError> {
    let txn = db.raw()?.begin_write()?;
    txn.open_table(CI_REQUESTS)?;
    txn.commit()?;
    Ok(())
}

/// The record of `key`, if any.
pub fn get(db: &Db, key: &str) -> Result<Option<CiRecord>, DbError> {
    let txn = db.raw()?.begin_read()?;
    let table = txn.open_table(CI_REQUESTS)?;
    match table.get(key)? {
        Some(v) => Ok(Some(decode("ci_requests", key, v.value())?)),
        None => Ok(None),
    }
}

/// Writes the record of `key`.
pub fn put(db: &Db, key: &str, rec: &CiRecord) -> Result<(), DbError> {
    let txn = db.raw()?.begin_write()?;
    {
        let mut table = txn.open_table(CI_REQUESTS)?;
        table.insert(key, encode(rec)?.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Forgets the record of `key` (a request that was refused after all).
pub fn remove(db: &Db, key: &str) -> Result<(), DbError> {
    let txn = db.raw()?.begin_write()?;
    {
        let mut table = txn.open_table(CI_REQUESTS)?;
        table.remove(key)?;
    }
    txn.commit()?;
    Ok(())
}

/// Finished requests first seen before `before` (their ids may be forgotten: the retention of
/// [`super::RETENTION_MS`]).
pub fn finished_before(db: &Db, before: UnixMillis) -> Result<Vec<(String, CiRecord)>, DbError> {
    let txn = db.raw()?.begin_read()?;
    let table = txn.open_table(CI_REQUESTS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        if let Ok(rec) = decode::<CiRecord>("ci_requests", k.value(), v.value()) {
            if rec.result.is_some() && rec.created_at < before {
                out.push((k.value().to_string(), rec));
            }
        }
    }
    Ok(out)
}

/// Requests whose deployment exists but whose verdict was not sent yet (to follow again after a
/// restart).
pub fn unfinished(db: &Db) -> Result<Vec<(String, CiRecord)>, DbError> {
    let txn = db.raw()?.begin_read()?;
    let table = txn.open_table(CI_REQUESTS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        match decode::<CiRecord>("ci_requests", k.value(), v.value()) {
            Ok(rec) if rec.accepted.is_some() && rec.result.is_none() => {
                out.push((k.value().to_string(), rec))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "skipping ci_requests record"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fleet.redb");
        let rec = CiRecord {
            digest: "ab".into(),
            format: Format::Json,
            created_at: 1,
            application: "web".into(),
            version: "1.0.0".into(),
            accepted: Some(CiReply::Accepted {
                id: "b-1".into(),
                deployment: "d-1".into(),
                devices: vec!["x".into()],
                artifact: None,
            }),
            result: None,
        };
        {
            let db = Db::open(&path).expect("open");
            init(&db).expect("init");
            put(&db, &key("_token-a", "b-1"), &rec).expect("put");
        }
        let db = Db::open(&path).expect("reopen");
        init(&db).expect("init");
        let got = get(&db, "_token-a/b-1").expect("get").expect("present");
        assert_eq!(got, rec);
        assert_eq!(got.deployment(), Some("d-1"));
        assert_eq!(unfinished(&db).expect("scan").len(), 1);
        assert!(finished_before(&db, 10).expect("scan").is_empty());
        let mut done = rec.clone();
        done.result = Some(CiReply::Result {
            id: "b-1".into(),
            ok: true,
            outcome: "succeeded".into(),
            deployment: Some("d-1".into()),
            error: None,
        });
        put(&db, "_token-a/b-1", &done).expect("put");
        assert!(unfinished(&db).expect("scan").is_empty());
        assert_eq!(finished_before(&db, 10).expect("scan").len(), 1);
        assert!(finished_before(&db, 1).expect("scan").is_empty());
        remove(&db, "_token-a/b-1").expect("remove");
        assert!(get(&db, "_token-a/b-1").expect("get").is_none());
        assert!(get(&db, "_token-a/other").expect("get").is_none());
    }
}
