//! What the controller knows about a device (table `devices`), and the pure rule that folds a
//! status into it.

use fleet_schema::trust::Stamp;
use fleet_schema::{DeviceStatus, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the controller knows about one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id.
    pub id: String,
    /// Whether its last status said online.
    pub online: bool,
    /// First time anything was heard from it.
    pub first_seen: UnixMillis,
    /// Last time anything was heard from it.
    pub last_seen: UnixMillis,
    /// Its last full (online) status; an offline will never replaces it.
    pub status: Option<DeviceStatus>,
    /// The stamp of the last status accepted, with the id of the key that signed it: a status
    /// signed by the same key must carry a newer stamp (replays are refused).
    #[serde(default)]
    pub stamp: Option<(String, Stamp)>,
}

impl DeviceRecord {
    /// Folds one status into the previous record: an offline status only flips presence and
    /// keeps the last apps and inventory; an online status replaces them.
    pub fn apply(prev: Option<DeviceRecord>, status: DeviceStatus, now: UnixMillis) -> Self {
        let mut rec = prev.unwrap_or_else(|| DeviceRecord {
            id: status.device_id.clone(),
            online: false,
            first_seen: now,
            last_seen: now,
            status: None,
            stamp: None,
        });
        rec.last_seen = now;
        rec.online = status.online;
        if status.online {
            rec.status = Some(status);
        }
        rec
    }

    /// Whether a status signed by `key_id` with `stamp` is newer than the last one accepted
    /// (always, after the device's key changed).
    pub fn accepts(&self, key_id: &str, stamp: Stamp) -> bool {
        match &self.stamp {
            Some((k, last)) if k == key_id => stamp > *last,
            _ => true,
        }
    }

    /// The labels the agent reported (selectors match these).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.labels.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{AppPhase, AppStatus, Inventory};

    fn status(online: bool) -> DeviceStatus {
        DeviceStatus {
            device_id: "d1".into(),
            online,
            agent_version: "0.1.0".into(),
            inventory: online.then(|| Inventory {
                labels: BTreeMap::from([("site".into(), "a".into())]),
                ..Inventory::default()
            }),
            observed_generation: 2,
            apps: if online {
                vec![AppStatus {
                    name: "app".into(),
                    version: "1.0.0".into(),
                    phase: AppPhase::Running,
                    restart_count: 0,
                    last_error: None,
                    running_version: None,
                    deployment_id: None,
                    health: Default::default(),
                    health_message: None,
                    components: Vec::new(),
                }]
            } else {
                vec![]
            },
            reported_at: 0,
            refused: None,
        }
    }

    #[test]
    fn only_newer_stamps_of_the_same_key_are_accepted() {
        let mut rec = DeviceRecord::apply(None, status(true), 10);
        let s = |epoch, seq| Stamp { epoch, seq };
        assert!(rec.accepts("k", s(1, 1)));
        rec.stamp = Some(("k".into(), s(2, 5)));
        assert!(!rec.accepts("k", s(2, 5)));
        assert!(!rec.accepts("k", s(1, 9)));
        assert!(rec.accepts("k", s(2, 6)));
        assert!(rec.accepts("k", Stamp::will(2)));
        assert!(rec.accepts("new-key", s(0, 1)));
    }

    #[test]
    fn offline_status_keeps_the_last_details() {
        let rec = DeviceRecord::apply(None, status(true), 10);
        assert_eq!(rec.first_seen, 10);
        let rec = DeviceRecord::apply(Some(rec), status(false), 20);
        assert!(!rec.online);
        assert_eq!(rec.last_seen, 20);
        assert_eq!(rec.first_seen, 10);
        assert_eq!(rec.status.as_ref().map(|s| s.apps.len()), Some(1));
        assert_eq!(rec.labels().get("site").map(String::as_str), Some("a"));
    }

    #[test]
    fn offline_will_of_an_unknown_device_creates_a_bare_record() {
        let rec = DeviceRecord::apply(None, status(false), 5);
        assert!(!rec.online);
        assert!(rec.status.is_none());
        assert!(rec.labels().is_empty());
    }
}
