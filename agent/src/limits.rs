//! The agent's side of issue 10's rule "nothing grows without bound": every bound the agent
//! enforces (forwarder connections, log file size, app counter slots) is a setting of its
//! config (see docs/limits.md), and each time one is hit it is counted here and logged at most
//! once per [`LOG_INTERVAL`] per limit, never once per event, so a flood does not become a
//! flood of log lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one limit may be logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Counts of limits hit, by limit name, with the time each was last logged (shared by the
/// daemon and the tasks it spawns).
#[derive(Debug, Default)]
pub struct LimitHits {
    hits: Mutex<BTreeMap<&'static str, Hit>>,
}

#[derive(Debug, Default)]
struct Hit {
    count: u64,
    logged_at: Option<Instant>,
    logged_count: u64,
}

impl LimitHits {
    /// Counts `n` hits of `limit` (a snake_case name such as `forward_connections`) and logs
    /// `what` as a warning unless this limit was logged within the last [`LOG_INTERVAL`]; the
    /// line says how many hits happened since the previous one. True when it logged.
    pub fn hit(&self, limit: &'static str, n: u64, what: impl FnOnce() -> String) -> bool {
        self.hit_at(limit, n, Instant::now(), what)
    }

    /// [`LimitHits::hit`] at a given instant (tests).
    pub fn hit_at(
        &self,
        limit: &'static str,
        n: u64,
        now: Instant,
        what: impl FnOnce() -> String,
    ) -> bool {
        let mut map = self.hits.lock().expect("limit lock is never poisoned");
        let hit = map.entry(limit).or_default();
        hit.count += n;
        let due = hit
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
        if due {
            let since = hit.count - hit.logged_count;
            hit.logged_at = Some(now);
            hit.logged_count = hit.count;
            tracing::warn!(
                limit,
                hits_since_last_log = since,
                total = hit.count,
                "limit reached: {}",
                what()
            );
        }
        due
    }

    /// How many times `limit` was hit since start.
    pub fn count(&self, limit: &str) -> u64 {
        let map = self.hits.lock().expect("limit lock is never poisoned");
        map.get(limit).map_or(0, |h| h.count)
    }
}

/// The agent's limits as given: a flag or a TOML key of the same name each (flags win).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct LimitSettings {
    /// Most connections one blue-green port forwarder holds open at once; further ones are
    /// closed at once (default 1024).
    pub forward_max_connections: Option<usize>,
    /// Size at which an app's stdout or stderr log file is rotated to `<file>.1`, bytes
    /// (default 1 MiB).
    pub log_file_max_bytes: Option<u64>,
    /// Most counter names one app may hold at the counters endpoint (default 64).
    pub counters_per_app: Option<usize>,
    /// Most apps holding counters at once (default 64).
    pub counter_apps: Option<usize>,
    /// Seconds after which a counter (and an app) not posted is forgotten (default 600).
    pub counter_idle_secs: Option<u64>,
}

/// The agent's limits, checked (see docs/limits.md, fleet-agent table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Open connections per blue-green port forwarder.
    pub forward_max_connections: usize,
    /// Size at which an app's log file is rotated, bytes.
    pub log_file_max_bytes: u64,
    /// Bounds of the app counters table.
    pub counters: crate::telemetry::counters::CounterLimits,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            forward_max_connections: 1024,
            log_file_max_bytes: 1 << 20,
            counters: crate::telemetry::counters::CounterLimits::default(),
        }
    }
}

impl AgentLimits {
    /// `cli` over `file` over the defaults; a zero is refused naming the setting (it would
    /// refuse everything).
    pub fn resolve(cli: &LimitSettings, file: &LimitSettings) -> Result<Self, String> {
        fn pick<T: Copy + PartialEq + Default>(
            name: &str,
            cli: Option<T>,
            file: Option<T>,
            default: T,
        ) -> Result<T, String> {
            match cli.or(file) {
                Some(v) if v == T::default() => Err(format!("{name} must be above 0")),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        }
        let d = Self::default();
        Ok(Self {
            forward_max_connections: pick(
                "forward_max_connections",
                cli.forward_max_connections,
                file.forward_max_connections,
                d.forward_max_connections,
            )?,
            log_file_max_bytes: pick(
                "log_file_max_bytes",
                cli.log_file_max_bytes,
                file.log_file_max_bytes,
                d.log_file_max_bytes,
            )?,
            counters: crate::telemetry::counters::CounterLimits {
                per_app: pick(
                    "counters_per_app",
                    cli.counters_per_app,
                    file.counters_per_app,
                    d.counters.per_app,
                )?,
                apps: pick(
                    "counter_apps",
                    cli.counter_apps,
                    file.counter_apps,
                    d.counters.apps,
                )?,
                idle: Duration::from_secs(pick(
                    "counter_idle_secs",
                    cli.counter_idle_secs,
                    file.counter_idle_secs,
                    d.counters.idle.as_secs(),
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_hit_and_logs_once_per_interval() {
        let hits = LimitHits::default();
        let t0 = Instant::now();
        assert!(hits.hit_at("x", 1, t0, || "first".into()));
        assert!(!hits.hit_at("x", 5, t0 + Duration::from_secs(1), || "again".into()));
        assert!(hits.hit_at("y", 1, t0, || "another limit".into()));
        assert!(hits.hit_at("x", 1, t0 + LOG_INTERVAL, || "a minute on".into()));
        assert_eq!(hits.count("x"), 7);
        assert_eq!(hits.count("z"), 0);
    }

    #[test]
    fn settings_resolve_flags_over_file_over_defaults() {
        let file = LimitSettings {
            forward_max_connections: Some(10),
            counter_idle_secs: Some(5),
            ..LimitSettings::default()
        };
        let cli = LimitSettings {
            forward_max_connections: Some(20),
            ..LimitSettings::default()
        };
        let l = AgentLimits::resolve(&cli, &file).expect("valid");
        assert_eq!(l.forward_max_connections, 20);
        assert_eq!(l.counters.idle, Duration::from_secs(5));
        assert_eq!(l.log_file_max_bytes, 1 << 20);
        let zero = LimitSettings {
            log_file_max_bytes: Some(0),
            ..LimitSettings::default()
        };
        let err = AgentLimits::resolve(&zero, &file).expect_err("zero refused");
        assert!(err.contains("log_file_max_bytes"), "{err}");
    }
}
