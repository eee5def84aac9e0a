//! The `devices` table: statuses folded in by the status writer in batches, read by the API and
//! by target resolution.

use super::{decode, encode, Db, DbError, DESIRED, DEVICES};
use crate::model::DeviceRecord;
use fleet_schema::trust::Stamp;
use fleet_schema::{DesiredState, DeviceStatus, Inventory, UnixMillis};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;

/// One decoded, verified status waiting to be written.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// The status (its `device_id` matches the topic it came on).
    pub status: DeviceStatus,
    /// When the controller received it.
    pub received_at: UnixMillis,
    /// The id of the device key that signed it, and its stamp.
    pub signed: (String, Stamp),
}

/// What one committed batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusBatchOutcome {
    /// Statuses written.
    pub applied: u64,
    /// Change in the number of online devices.
    pub online_delta: i64,
    /// Online devices reporting an older generation than the one desired for them.
    pub behind: Vec<String>,
    /// Statuses not newer than the last one accepted from the same key (replays, or
    /// redeliveries after a newer status): left out.
    pub stale: u64,
}

/// True when an online device reports having accepted less than the desired generation: it
/// missed a publish (or the broker did not hand it the retained copy) and needs it again.
pub fn is_behind(status: &DeviceStatus, desired_generation: Option<u64>) -> bool {
    status.online && desired_generation.is_some_and(|g| status.observed_generation < g)
}

/// What targeting and placement read of a device's inventory, leaving out the figures that move
/// with every report (free storage, current CPU clock); the driver re-checks those once a minute.
fn fit_key(status: Option<&DeviceStatus>) -> Option<Inventory> {
    let mut inv = status?.inventory.clone()?;
    inv.free_storage = 0;
    inv.cpu_mhz = 0;
    Some(inv)
}

/// The generation of a stored desired state (`None` when absent or undecodable).
fn generation_of(id: &str, bytes: Option<&[u8]>) -> Option<u64> {
    bytes
        .and_then(|b| decode::<DesiredState>("desired", id, b).ok())
        .map(|d| d.generation)
}

impl Db {
    /// Folds a batch of statuses into the device table in one write transaction (one fsync for
    /// the whole batch).
    pub fn apply_statuses(&self, batch: Vec<StatusUpdate>) -> Result<StatusBatchOutcome, DbError> {
        let mut outcome = StatusBatchOutcome::default();
        let mut fleet_changed = false;
        let txn = self.raw()?.begin_write()?;
        {
            let mut table = txn.open_table(DEVICES)?;
            let desired = txn.open_table(DESIRED)?;
            for update in batch {
                let id = update.status.device_id.clone();
                let prev: Option<DeviceRecord> = match table.get(id.as_str())? {
                    Some(v) => decode("devices", &id, v.value()).ok(),
                    None => None,
                };
                if prev
                    .as_ref()
                    .is_some_and(|p| !p.accepts(&update.signed.0, update.signed.1))
                {
                    outcome.stale += 1;
                    continue;
                }
                let generation =
                    generation_of(&id, desired.get(id.as_str())?.as_ref().map(|v| v.value()));
                if is_behind(&update.status, generation) && !outcome.behind.contains(&id) {
                    outcome.behind.push(id.clone());
                }
                let was_online = prev.as_ref().is_some_and(|p| p.online);
                let before = prev.as_ref().map(|p| fit_key(p.status.as_ref()));
                let mut rec = DeviceRecord::apply(prev, update.status, update.received_at);
                rec.stamp = Some(update.signed);
                fleet_changed |= before != Some(fit_key(rec.status.as_ref()));
                outcome.online_delta += i64::from(rec.online) - i64::from(was_online);
                table.insert(id.as_str(), encode(&rec)?.as_slice())?;
                outcome.applied += 1;
            }
        }
        txn.commit()?;
        if fleet_changed {
            self.bump_fleet_epoch();
        }
        Ok(outcome)
    }

    /// Online devices whose last status reports an older generation than desired.
    pub fn behind_devices(&self) -> Result<Vec<String>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        let desired = txn.open_table(DESIRED)?;
        let mut out = Vec::new();
        for entry in devices.iter()? {
            let (k, v) = entry?;
            let Ok(rec) = decode::<DeviceRecord>("devices", k.value(), v.value()) else {
                continue;
            };
            let Some(status) = rec.status.as_ref().filter(|_| rec.online) else {
                continue;
            };
            let generation =
                generation_of(&rec.id, desired.get(k.value())?.as_ref().map(|v| v.value()));
            if is_behind(status, generation) {
                out.push(rec.id);
            }
        }
        Ok(out)
    }

    /// Marks every device offline (at controller start: presence is only known from statuses
    /// received since). Returns how many were online.
    pub fn reset_presence(&self) -> Result<u64, DbError> {
        let txn = self.raw()?.begin_write()?;
        let mut changed = 0;
        {
            let mut table = txn.open_table(DEVICES)?;
            let mut online = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                if let Ok(rec) = decode::<DeviceRecord>("devices", k.value(), v.value()) {
                    if rec.online {
                        online.push(rec);
                    }
                }
            }
            for mut rec in online {
                rec.online = false;
                table.insert(rec.id.as_str(), encode(&rec)?.as_slice())?;
                changed += 1;
            }
        }
        txn.commit()?;
        Ok(changed)
    }

    /// Marks one device offline (its enrollment was revoked or reset); false when unknown.
    pub fn mark_offline(&self, id: &str) -> Result<bool, DbError> {
        let txn = self.raw()?.begin_write()?;
        let changed = {
            let mut table = txn.open_table(DEVICES)?;
            let rec: Option<DeviceRecord> = match table.get(id)? {
                Some(v) => Some(decode("devices", id, v.value())?),
                None => None,
            };
            match rec {
                Some(mut rec) if rec.online => {
                    rec.online = false;
                    table.insert(id, encode(&rec)?.as_slice())?;
                    true
                }
                _ => false,
            }
        };
        txn.commit()?;
        Ok(changed)
    }

    /// One device's record, if it was ever seen.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        match table.get(id)? {
            Some(v) => Ok(Some(decode("devices", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// The records of the given devices (unknown ones left out): what a rollout's snapshot
    /// needs, without decoding the whole fleet.
    pub fn devices_by_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, DeviceRecord>, DbError> {
        self.records_by_ids(DEVICES, "devices", ids)
    }

    /// Every device ever seen, by id. A corrupt record is logged and skipped so one bad value
    /// cannot hide the rest of the fleet.
    pub fn devices(&self) -> Result<BTreeMap<String, DeviceRecord>, DbError> {
        let txn = self.raw()?.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode::<DeviceRecord>("devices", k.value(), v.value()) {
                Ok(rec) => {
                    out.insert(k.value().to_string(), rec);
                }
                Err(e) => tracing::warn!(error = %e, "skipping device record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::DeviceStatus;

    fn status_at(id: &str, online: bool, seq: u64) -> StatusUpdate {
        StatusUpdate {
            status: DeviceStatus {
                device_id: id.into(),
                online,
                agent_version: String::new(),
                inventory: None,
                observed_generation: 0,
                apps: vec![],
                reported_at: 0,
                refused: None,
            },
            received_at: 1,
            signed: ("key".into(), Stamp { epoch: 1, seq }),
        }
    }

    /// A status with a stamp newer than every earlier one.
    fn status(id: &str, online: bool) -> StatusUpdate {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(1);
        status_at(id, online, SEQ.fetch_add(1, Ordering::SeqCst))
    }

    #[test]
    fn replayed_statuses_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        let out = db
            .apply_statuses(vec![status_at("a", true, 5), status_at("a", false, 5)])
            .expect("applies");
        assert_eq!((out.applied, out.stale), (1, 1));
        let out = db
            .apply_statuses(vec![status_at("a", false, 4)])
            .expect("applies");
        assert_eq!((out.applied, out.stale), (0, 1));
        assert!(db.device("a").expect("reads").expect("present").online);
    }

    #[test]
    fn batches_track_online_transitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        let out = db
            .apply_statuses(vec![
                status("a", true),
                status("b", true),
                status("a", true),
            ])
            .expect("applies");
        assert_eq!((out.applied, out.online_delta), (3, 2));
        assert!(
            out.behind.is_empty(),
            "no desired state, nothing to catch up"
        );
        let out = db
            .apply_statuses(vec![status("a", false)])
            .expect("applies");
        assert_eq!(out.online_delta, -1);
        assert_eq!(db.devices().expect("lists").len(), 2);
        assert!(!db.device("a").expect("reads").expect("present").online);
        assert!(db.device("zz").expect("reads").is_none());
    }

    #[test]
    fn online_devices_below_their_desired_generation_are_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("opens");
        db.apply_statuses(vec![status("a", true), status("b", true)])
            .expect("applies");
        crate::db::deployment_write::tests::put(
            &db,
            &[],
            &[crate::db::deployment_write::tests::desired("a", 1, "d-1")],
        );
        assert_eq!(db.behind_devices().expect("reads"), vec!["a".to_string()]);
        let out = db.apply_statuses(vec![status("a", true)]).expect("applies");
        assert_eq!(out.behind, vec!["a".to_string()]);
        let mut caught_up = status("a", true);
        caught_up.status.observed_generation = 1;
        let out = db.apply_statuses(vec![caught_up]).expect("applies");
        assert!(out.behind.is_empty());
        db.apply_statuses(vec![status("a", false)])
            .expect("applies");
        assert!(
            db.behind_devices().expect("reads").is_empty(),
            "offline devices are not nudged"
        );
    }
}
