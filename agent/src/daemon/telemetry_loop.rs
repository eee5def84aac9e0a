//! The daemon's telemetry duties, driven from its event loop: tail app logs into the ring and
//! rate-limited batches, sample metrics every interval (and enforce the memory limit on the
//! sampled resident size), answer history requests, and hand everything to the publisher,
//! which sends it or keeps it in the offline backlog.

use super::Daemon;
use crate::bus::{now_millis, PubCmd};
use crate::config::Telemetry as Settings;
use crate::layout;
use crate::supervisor::SupEvent;
use crate::telemetry::counters::Counters;
use crate::telemetry::logs::{Ring, TokenBucket};
use crate::telemetry::tail::{self, Tailer};
use fleet_schema::{
    AgentRequest, AppMetrics, DeviceMetrics, LogBatch, LogEntry, MetricsBatch, Topic,
    DEFAULT_MAX_PAYLOAD,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest wait before pending log lines are published.
pub const LOG_FLUSH: Duration = Duration::from_secs(1);
/// Most lines waiting for the next batch; beyond it lines are dropped and counted.
pub const MAX_PENDING: usize = 1000;
/// Most lines in one batch (keeps a batch far below the payload cap).
pub const MAX_BATCH: usize = 200;
/// Log markers of an allocation failure, used to report a memory-limit exit as such.
const OOM_MARKERS: [&str; 5] = [
    "cannot allocate",
    "out of memory",
    "memoryerror",
    "memory allocation of",
    "std::bad_alloc",
];

/// Telemetry state of the daemon.
#[derive(Debug)]
pub(super) struct Telem {
    pub(super) counters: Counters,
    pub(super) metrics_base: Option<String>,
    /// Every agent limit hit (see [`crate::limits`]), shared with the forwarders.
    pub(super) limits: std::sync::Arc<crate::limits::LimitHits>,
    settings: Settings,
    tailers: BTreeMap<String, Tailer>,
    ring: Ring,
    bucket: TokenBucket,
    pending: Vec<LogEntry>,
    dropped: u64,
    cpu_prev: BTreeMap<String, (u64, Instant)>,
    dev_prev: Option<(u64, u64)>,
    next_metrics: Instant,
    next_poll: Instant,
    next_flush: Instant,
}

impl Telem {
    /// Fresh telemetry state; the first metrics go out one interval after `now`. App counter
    /// keys derive from `counters_secret`.
    pub(super) fn new(
        settings: Settings,
        counters_secret: [u8; 32],
        counter_limits: crate::telemetry::counters::CounterLimits,
        now: Instant,
    ) -> Self {
        let limits = std::sync::Arc::<crate::limits::LimitHits>::default();
        Self {
            counters: Counters::with_secret(counters_secret)
                .bounded(counter_limits, limits.clone()),
            metrics_base: None,
            limits,
            ring: Ring::new(settings.log_ring),
            bucket: TokenBucket::new(settings.log_rate, settings.log_rate.saturating_mul(5), now),
            next_metrics: now + settings.metrics_interval,
            settings,
            tailers: BTreeMap::new(),
            pending: Vec::new(),
            dropped: 0,
            cpu_prev: BTreeMap::new(),
            dev_prev: None,
            next_poll: now,
            next_flush: now + LOG_FLUSH,
        }
    }

    /// When [`Daemon::telemetry_tick`] next has work.
    pub(super) fn deadline(&self) -> Instant {
        self.next_metrics.min(self.next_poll).min(self.next_flush)
    }
}

impl Daemon {
    /// Starts following an app's log file (from its current end) unless already followed.
    pub(super) fn ensure_tailer(&mut self, app: &str) {
        if !self.telem.tailers.contains_key(app) {
            let out = layout::log_file(&self.cfg.data_dir, app);
            let err = layout::err_log_file(&self.cfg.data_dir, app);
            self.telem
                .tailers
                .insert(app.to_string(), Tailer::at_end(app, &out, &err));
        }
    }

    /// Does whatever telemetry work is due.
    pub(super) fn telemetry_tick(&mut self, now: Instant) {
        if now >= self.telem.next_poll {
            self.poll_logs(now);
            self.telem.next_poll = now + tail::POLL;
        }
        if now >= self.telem.next_flush {
            self.flush_logs();
            self.telem.next_flush = now + LOG_FLUSH;
        }
        if now >= self.telem.next_metrics {
            self.publish_metrics(now);
            self.telem.next_metrics = now + self.telem.settings.metrics_interval;
        }
    }

    /// Reads new lines of every followed app into the ring and the pending batch.
    pub(super) fn poll_logs(&mut self, now: Instant) {
        let ts = now_millis();
        let max_file = self.telem.settings.log_file_max;
        let t = &mut self.telem;
        for tailer in t.tailers.values_mut() {
            let lines = tailer.poll();
            for e in tail::entries(tailer.app(), lines, ts) {
                t.ring.push(e.clone());
                if t.pending.len() < MAX_PENDING && t.bucket.take(now) {
                    t.pending.push(e);
                } else {
                    t.dropped += 1;
                }
            }
            let rotated = match tailer.rotate_if_larger(max_file) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(app = tailer.app(), error = %e, "cannot rotate app log");
                    continue;
                }
            };
            for (stream, n) in rotated.into_iter().filter(|(_, n)| *n > 0) {
                // Counted as dropped on the bus, and said in the app's own log stream.
                t.dropped += n;
                let marker = tail::skipped_marker(tailer.app(), stream, n, ts);
                t.ring.push(marker.clone());
                if t.pending.len() < MAX_PENDING {
                    t.pending.push(marker);
                }
                t.limits.hit("log_file_bytes", n, || {
                    format!(
                        "{} {} log reached {max_file} bytes before it was read; {n} lines dropped",
                        tailer.app(),
                        stream.as_str()
                    )
                });
            }
        }
    }

    fn flush_logs(&mut self) {
        if self.telem.pending.is_empty() && self.telem.dropped == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.telem.pending);
        let dropped = std::mem::take(&mut self.telem.dropped);
        self.send_log_batches(&pending, dropped, false);
    }

    /// Publishes `entries` on the logs topic in batches of at most [`MAX_BATCH`] (one empty
    /// batch when there are none, so `dropped` is still reported); `dropped` rides on the first.
    fn send_log_batches(&self, entries: &[LogEntry], mut dropped: u64, history: bool) {
        let mut chunks: Vec<Vec<LogEntry>> = entries.chunks(MAX_BATCH).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for entries in chunks {
            let batch = LogBatch {
                device_id: self.cfg.device_id.to_string(),
                entries,
                dropped: std::mem::take(&mut dropped),
                history,
            };
            self.send_telemetry(Topic::Logs(self.cfg.device_id.clone()), &batch);
        }
    }

    fn send_telemetry<T: serde::Serialize>(&self, topic: Topic, value: &T) {
        match fleet_schema::encode(value) {
            Ok(payload) if payload.len() <= DEFAULT_MAX_PAYLOAD => {
                let _ = self.publisher.send(PubCmd::Telemetry { topic, payload });
            }
            Ok(_) => tracing::warn!(%topic, "telemetry message over the payload cap; dropped"),
            Err(e) => tracing::error!(%topic, error = %e, "cannot encode telemetry"),
        }
    }

    /// Answers a request from `fleet/<device>/req`.
    pub(super) fn on_request(&mut self, payload: &[u8], now: Instant) {
        let req: AgentRequest = match fleet_schema::decode(payload, DEFAULT_MAX_PAYLOAD) {
            Ok(r) => r,
            Err(e) => {
                let topic = Topic::Req(self.cfg.device_id.clone()).to_string();
                return self.refuse(&topic, &e.to_string());
            }
        };
        match req {
            AgentRequest::LogHistory { app, lines } => {
                self.poll_logs(now);
                let n = usize::try_from(lines).unwrap_or(usize::MAX);
                let recent = self.telem.ring.recent(app.as_deref(), n);
                tracing::info!(app = ?app, lines = recent.len(), "sending log history");
                self.send_log_batches(&recent, 0, true);
            }
            AgentRequest::Unsupported => tracing::debug!("ignoring unknown request kind"),
        }
    }

    /// When an app with a memory limit exits, its last lines tell whether an allocation
    /// failed; if so the exit is reported as a memory-limit stop.
    pub(super) fn oom_reason(&mut self, app: &str, now: Instant) -> Option<String> {
        let limit = self.spec_for(app).resources.memory_limit?;
        self.poll_logs(now);
        let oom = self.telem.ring.recent(Some(app), 5).iter().any(|e| {
            let m = e.message.to_ascii_lowercase();
            OOM_MARKERS.iter().any(|k| m.contains(k))
        });
        oom.then(|| {
            format!("memory limit exceeded: allocation failed under the limit of {limit} bytes")
        })
    }

    fn publish_metrics(&mut self, now: Instant) {
        let groups: Vec<(String, String, u32)> = self
            .sups
            .iter()
            .filter_map(|((a, v), e)| e.sup.pid().map(|p| (a.clone(), v.clone(), p)))
            .collect();
        let pgids: Vec<u32> = groups.iter().map(|g| g.2).collect();
        let (samples, ticks) = self.exec.sample_groups(&pgids);
        let ticks = ticks as f64;
        let mut apps = Vec::new();
        let mut breaches = Vec::new();
        for (app, version, pid) in groups {
            let s = samples.get(&pid).copied().unwrap_or_default();
            let cpu_percent = match self.telem.cpu_prev.insert(app.clone(), (s.cpu_ticks, now)) {
                Some((prev, at)) if now > at => {
                    let secs = now.duration_since(at).as_secs_f64();
                    (s.cpu_ticks.saturating_sub(prev) as f64 / ticks / secs * 100.0) as f32
                }
                _ => 0.0,
            };
            let key = (app.clone(), version.clone());
            let Some(entry) = self.sups.get(&key) else {
                continue;
            };
            // A container's limit is the engine's; the group here is only its CLI.
            let container =
                crate::runtime::container::runs_in_container(self.desired.as_ref(), &app);
            if let Some(limit) = self
                .spec_for(&app)
                .resources
                .memory_limit
                .filter(|_| !container)
            {
                if s.rss_bytes > limit {
                    breaches.push((
                        key.clone(),
                        format!(
                            "memory limit exceeded: resident {} bytes > limit {limit} bytes",
                            s.rss_bytes
                        ),
                    ));
                }
            }
            let (health, health_message) = entry.health.as_ref().map_or_else(
                || ("unknown".to_string(), String::new()),
                |h| {
                    (
                        h.state().to_string(),
                        h.message().unwrap_or_default().to_string(),
                    )
                },
            );
            apps.push(AppMetrics {
                app: app.clone(),
                cpu_percent,
                memory_bytes: s.rss_bytes,
                disk_io_read: s.read_bytes,
                disk_io_write: s.write_bytes,
                network_rx: 0,
                network_tx: 0,
                fds: s.fds,
                threads: s.threads,
                restart_count: entry.sup.restart_count(),
                uptime_seconds: entry
                    .started
                    .map_or(0, |t| now.saturating_duration_since(t).as_secs()),
                custom_metrics: self.telem.counters.get(&app),
                health,
                health_message,
            });
        }
        for (key, reason) in breaches {
            tracing::warn!(app = %key.0, version = %key.1, %reason, "stopping app");
            self.sup_event(&key, SupEvent::LimitExceeded(reason), now);
        }
        let d = self.exec.sample_device();
        let cpu_percent = match self.telem.dev_prev.replace((d.cpu_busy, d.cpu_total)) {
            Some((busy, total)) if d.cpu_total > total => {
                (d.cpu_busy.saturating_sub(busy) as f64 / (d.cpu_total - total) as f64 * 100.0)
                    as f32
            }
            _ => 0.0,
        };
        let batch = MetricsBatch {
            device_id: self.cfg.device_id.to_string(),
            timestamp: now_millis(),
            device: DeviceMetrics {
                cpu_percent,
                memory_used: d.mem_total.saturating_sub(d.mem_available),
                memory_total: d.mem_total,
                disk_used: d.disk_used,
                disk_total: d.disk_total,
                load1: d.load1,
                network_rx: d.net_rx,
                network_tx: d.net_tx,
            },
            apps,
        };
        self.send_telemetry(Topic::Metrics(self.cfg.device_id.clone()), &batch);
    }
}
