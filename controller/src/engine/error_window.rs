//! Per device and app, a bounded window of the app's own `requests` and `errors` counters from
//! `fleet/<device>/metrics`, so the error-rate trigger can compute the rate over the last
//! minutes. In memory: after a restart the window refills within one window length.

use crate::engine::rollout::snapshot::ErrorCounts;
use fleet_schema::MetricsBatch;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Most samples kept per device and app (bounds memory whatever the reporting rate).
const MAX_SAMPLES: usize = 64;
/// Samples older than this are dropped (longer than any trigger window we default to).
const MAX_AGE_MS: u64 = 15 * 60_000;

/// One sample of the cumulative counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: u64,
    requests: f64,
    errors: f64,
}

/// The windows of every device and app.
#[derive(Debug, Default)]
pub struct ErrorWindows {
    inner: Mutex<HashMap<(String, String), VecDeque<Sample>>>,
}

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
            let q = map
                .entry((batch.device_id.clone(), app.app.clone()))
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
    /// of the counters; a counter that went down restarted, and its latest value counts).
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
            let Some(q) = map.get(&(d.clone(), app.to_string())) else {
                continue;
            };
            let recent: Vec<&Sample> = q
                .iter()
                .filter(|s| now.saturating_sub(s.at) <= window_ms)
                .collect();
            let (Some(first), Some(last)) = (recent.first(), recent.last()) else {
                continue;
            };
            let delta = |a: f64, b: f64| if b >= a { b - a } else { b };
            let requests = delta(first.requests, last.requests).max(0.0) as u64;
            let errors = delta(first.errors, last.errors).max(0.0) as u64;
            out.insert(d.clone(), ErrorCounts { requests, errors });
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
        let len = w.inner.lock().expect("lock")[&("d1".to_string(), "web".to_string())].len();
        assert_eq!(len, MAX_SAMPLES, "bounded");
    }
}
