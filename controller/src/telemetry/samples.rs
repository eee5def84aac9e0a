//! The newest metrics each device reported, kept in memory for the bridge (pure: time comes in
//! as a parameter). A device's figures and each of its apps carry the time they were last
//! reported; anything not reported again within the staleness window is dropped, so the series
//! of a device that left or of an app that was removed disappear from `/metrics`.

use fleet_schema::{AppMetrics, DeviceMetrics, MetricsBatch, UnixMillis};
use std::collections::{BTreeMap, HashMap};

/// One app's newest figures on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSample {
    /// When fleetd received the batch that carried them.
    pub seen_at: UnixMillis,
    /// The figures.
    pub metrics: AppMetrics,
}

/// One device's newest figures.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSample {
    /// When fleetd received the device's last batch.
    pub seen_at: UnixMillis,
    /// Device-wide figures of that batch.
    pub device: DeviceMetrics,
    /// Per app, its newest figures (an app missing from later batches keeps its last ones
    /// until they go stale).
    pub apps: BTreeMap<String, AppSample>,
}

/// The newest figures of every reporting device.
#[derive(Debug, Default)]
pub struct Samples {
    devices: HashMap<String, DeviceSample>,
}

impl Samples {
    /// Folds one verified batch in, received at `now`.
    pub fn record(&mut self, batch: MetricsBatch, now: UnixMillis) {
        let entry = self
            .devices
            .entry(batch.device_id)
            .or_insert_with(|| DeviceSample {
                seen_at: now,
                device: DeviceMetrics::default(),
                apps: BTreeMap::new(),
            });
        entry.seen_at = now;
        entry.device = batch.device;
        for app in batch.apps {
            entry.apps.insert(
                app.app.clone(),
                AppSample {
                    seen_at: now,
                    metrics: app,
                },
            );
        }
    }

    /// Drops what was not reported within `window_ms` before `now`: apps first, then devices
    /// with nothing fresh left. Returns how many devices were dropped.
    pub fn prune(&mut self, now: UnixMillis, window_ms: u64) -> usize {
        let fresh = |seen: UnixMillis| now.saturating_sub(seen) <= window_ms;
        let before = self.devices.len();
        self.devices.retain(|_, d| {
            d.apps.retain(|_, a| fresh(a.seen_at));
            fresh(d.seen_at)
        });
        before - self.devices.len()
    }

    /// Every device's sample (call [`Samples::prune`] first), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &DeviceSample)> {
        self.devices.iter()
    }

    /// True when no device has a sample.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(device: &str, apps: &[&str]) -> MetricsBatch {
        MetricsBatch {
            device_id: device.into(),
            timestamp: 0,
            device: DeviceMetrics {
                load1: 0.5,
                ..DeviceMetrics::default()
            },
            apps: apps
                .iter()
                .map(|a| AppMetrics {
                    app: (*a).into(),
                    memory_bytes: 42,
                    ..AppMetrics::default()
                })
                .collect(),
        }
    }

    #[test]
    fn a_removed_app_and_a_silent_device_go_stale() {
        let mut s = Samples::default();
        s.record(batch("d1", &["web", "db"]), 1_000);
        s.record(batch("d2", &["web"]), 1_000);
        // d1 stops reporting "db"; d2 stops reporting at all.
        s.record(batch("d1", &["web"]), 40_000);
        assert_eq!(s.prune(40_000, 60_000), 0);
        assert_eq!(
            s.iter()
                .find(|(d, _)| *d == "d1")
                .map(|(_, d)| d.apps.len()),
            Some(2)
        );
        assert_eq!(s.prune(70_000, 60_000), 1, "d2 left");
        let (_, d1) = s.iter().next().expect("d1 is still fresh");
        assert_eq!(
            d1.apps.keys().collect::<Vec<_>>(),
            ["web"],
            "db was removed"
        );
        assert_eq!(s.prune(101_000, 60_000), 1);
        assert!(s.is_empty());
    }
}
