//! Per device and app, a bounded window of the app's own `requests` and `errors` counters from
//! `fleet/<device>/metrics`, so the error-rate trigger can compute the rate over the last
//! minutes. In memory: after a restart the window refills within one window length.

use fleet_schema::MetricsBatch;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Most samples kept per device and app (bounds memory whatever the reporting rate).
const MAX_SAMPLES: usize = 64;
/// Samples older than this are dropped (longer than any trigger window we default to).
const MAX_AGE_MS: u64 = 15 * 60_000;

/// Requests and errors a device's app served over the error window (deltas of its counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
}

/// One sample of the cumulative counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: u64,
    requests: f64,
    errors: f64,
}

/// The windows of every device and app: by device and application, then by the unit that
/// reported (the app itself, or each `<app>__<component>` of an app made of components).
#[derive(Debug, Default)]
pub struct ErrorWindows {
    inner: Mutex<HashMap<(String, String), Units>>,
}

/// The samples of each unit of one app on one device.
type Units = BTreeMap<String, VecDeque<Sample>>;

impl ErrorWindows {
    /// Records the counters of every app in a metrics batch received at `now`.
    pub fn record(&self, batch: &MetricsBatch, now: u64) {
        let mut map = self
            .inner
            .lock()
            .expect("error window lock is never poisoned");
        for app in &batch.apps {
            let (Some(r), Some(e)) = (
                app.custom_metrics.get("requests"),
                app.custom_metrics.get("errors"),
            ) else {
                continue;
            };
            let owner = fleet_schema::components::app_of_unit(&app.app).to_string();
            let q = map
                .entry((batch.device_id.clone(), owner))
                .or_default()
                .entry(app.app.clone())
                .or_default();
            q.push_back(Sample {
                at: now,
                requests: *r,
                errors: *e,
            });
            while q.len() > MAX_SAMPLES
                || q.front()
                    .is_some_and(|s| now.saturating_sub(s.at) > MAX_AGE_MS)
            {
                q.pop_front();
            }
        }
    }

    /// Requests and errors of `app` on each of `devices` over the last `window_ms` (difference
    /// of the counters; a counter that went down restarted, and its latest value counts). An
    /// app made of components reports per unit (`<app>__<component>`): their counts add up.
    pub fn counts<'a>(
        &self,
        app: &str,
        devices: impl IntoIterator<Item = &'a String>,
        now: u64,
        window_ms: u64,
    ) -> BTreeMap<String, ErrorCounts> {
        let map = self
            .inner
            .lock()
            .expect("error window lock is never poisoned");
        let mut out = BTreeMap::new();
        for d in devices {
            let mut total: Option<ErrorCounts> = None;
            let owner = fleet_schema::components::app_of_unit(app).to_string();
            let Some(units) = map.get(&(d.clone(), owner)) else {
                continue;
            };
            // The app itself, or its components (an app whose own name holds the separator
            // is found by its exact name).
            let mine = units.iter().filter(|(unit, _)| {
                unit.as_str() == app || fleet_schema::components::app_of_unit(unit) == app
            });
            for (_, q) in mine {
                let recent: Vec<&Sample> = q
                    .iter()
                    .filter(|s| now.saturating_sub(s.at) <= window_ms)
                    .collect();
                let (Some(first), Some(last)) = (recent.first(), recent.last()) else {
                    continue;
                };
                let delta = |a: f64, b: f64| if b >= a { b - a } else { b };
                let t = total.get_or_insert_with(ErrorCounts::default);
                t.requests += delta(first.requests, last.requests).max(0.0) as u64;
                t.errors += delta(first.errors, last.errors).max(0.0) as u64;
            }
            if let Some(t) = total {
                out.insert(d.clone(), t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::AppMetrics;

    fn batch(requests: f64, errors: f64) -> MetricsBatch {
        MetricsBatch {
            device_id: "d1".into(),
            apps: vec![AppMetrics {
                app: "web".into(),
                custom_metrics: [
                    ("requests".to_string(), requests),
                    ("errors".to_string(), errors),
                ]
                .into_iter()
                .collect(),
                ..AppMetrics::default()
            }],
            ..MetricsBatch::default()
        }
    }

    #[test]
    fn counts_are_deltas_within_the_window() {
        let w = ErrorWindows::default();
        w.record(&batch(0.0, 0.0), 0);
        w.record(&batch(100.0, 1.0), 60_000);
        w.record(&batch(300.0, 21.0), 120_000);
        let d = vec!["d1".to_string()];
        let c = w.counts("web", &d, 120_000, 120_000);
        assert_eq!(
            c["d1"],
            ErrorCounts {
                requests: 300,
                errors: 21
            }
        );
        let c = w.counts("web", &d, 120_000, 60_000);
        assert_eq!(
            c["d1"],
            ErrorCounts {
                requests: 200,
                errors: 20
            }
        );
        assert!(w.counts("other", &d, 120_000, 60_000).is_empty());
        for i in 0u32..200 {
            w.record(&batch(f64::from(i), 0.0), 130_000 + u64::from(i));
        }
        let len =
            w.inner.lock().expect("lock")[&("d1".to_string(), "web".to_string())]["web"].len();
        assert_eq!(len, MAX_SAMPLES, "bounded");
    }

    #[test]
    fn the_components_of_an_app_add_up() {
        let w = ErrorWindows::default();
        let unit = |name: &str, requests: f64, errors: f64| {
            let mut b = batch(requests, errors);
            b.apps[0].app = name.into();
            b
        };
        w.record(&unit("edge__engine", 0.0, 0.0), 0);
        w.record(&unit("edge__model", 10.0, 0.0), 0);
        w.record(&unit("edge__engine", 100.0, 5.0), 60_000);
        w.record(&unit("edge__model", 60.0, 20.0), 60_000);
        let d = vec!["d1".to_string()];
        assert_eq!(
            w.counts("edge", &d, 60_000, 120_000)["d1"],
            ErrorCounts {
                requests: 150,
                errors: 25
            }
        );
        assert_eq!(
            w.counts("edge__engine", &d, 60_000, 120_000)["d1"],
            ErrorCounts {
                requests: 100,
                errors: 5
            },
            "an app named like a unit keeps its own counts"
        );
    }
}
