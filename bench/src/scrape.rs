//! The metrics-bridge benchmark (`fleet-sim --scrape`): every simulated device reports a
//! sealed metrics batch with two apps every 10 s, as the agent does, and the run measures what
//! the bridge costs: `GET /metrics` time and body size, and fleetd's resident memory before
//! the metrics flowed, with them stored, and after the scrapes.

use crate::fleet::FleetShared;
use crate::publish::StatusPublisher;
use anyhow::{Context, Result};
use fleet_schema::{AppMetrics, DeviceMetrics, MetricsBatch};
use rumqttc::AsyncClient;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a device reports (the agent's default interval).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Scrapes measured.
const SCRAPES: usize = 5;

/// Whether the simulated devices report metrics now.
#[derive(Debug, Default)]
pub struct MetricsFlow {
    enabled: AtomicBool,
    on: AtomicBool,
}

impl MetricsFlow {
    /// Devices start their report loops (idle until [`MetricsFlow::start`]).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether devices run report loops.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Starts the reports.
    pub fn start(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

/// One device's batch: the deployed app and a sidecar, with request counters.
pub fn batch(device: &str, app: &str, tick: u64) -> MetricsBatch {
    let one = |name: &str, memory: u64| AppMetrics {
        app: name.into(),
        cpu_percent: 1.5,
        memory_bytes: memory,
        disk_io_read: 4096 * tick,
        disk_io_write: 1024 * tick,
        fds: 12,
        threads: 4,
        uptime_seconds: 10 * tick,
        custom_metrics: [
            ("requests".to_string(), (100 * tick) as f64),
            ("errors".to_string(), tick as f64),
        ]
        .into(),
        health: "healthy".into(),
        ..AppMetrics::default()
    };
    MetricsBatch {
        device_id: device.into(),
        timestamp: crate::fleet::now_ms(),
        device: DeviceMetrics {
            cpu_percent: 7.0,
            memory_used: 200 << 20,
            memory_total: 1 << 30,
            disk_used: 2 << 30,
            disk_total: 16 << 30,
            load1: 0.3,
            network_rx: 1000 * tick,
            network_tx: 500 * tick,
        },
        apps: vec![one(app, 20 << 20), one("sim-sidecar", 8 << 20)],
    }
}

/// A device's report loop (started at its first ConnAck): a batch every [`INTERVAL`], phase
/// spread by the device index, while the flow is on.
pub async fn report(
    index: usize,
    id: String,
    client: AsyncClient,
    publisher: Arc<StatusPublisher>,
    shared: Arc<FleetShared>,
) {
    let topic = match fleet_schema::DeviceId::parse(&id) {
        Ok(device) => fleet_schema::Topic::Metrics(device),
        Err(e) => return tracing::error!("simulated device {id:?}: {e}"),
    };
    let name = topic.to_string();
    let offset = Duration::from_millis((index as u64 * 7919) % INTERVAL.as_millis() as u64);
    tokio::time::sleep(offset).await;
    let mut tick = 0;
    loop {
        if shared.metrics.is_on() {
            tick += 1;
            let body = match fleet_schema::encode(&batch(&id, &shared.app, tick)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("{topic}: cannot encode metrics: {e}");
                    return;
                }
            };
            match publisher.with_end(|end| end.seal(&name, &body)) {
                Ok(sealed) => {
                    if let Err(e) = crate::wire::try_publish(&client, &topic, sealed) {
                        tracing::debug!("{topic}: publish refused by the client: {e}");
                    }
                }
                Err(e) => tracing::error!("{topic}: cannot seal metrics: {e}"),
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// What the bridge cost.
#[derive(Debug, Clone, Serialize)]
pub struct ScrapeReport {
    /// fleetd's resident memory with the fleet connected, before any metrics, MiB.
    pub rss_before_mib: f64,
    /// ... once every device reported metrics (the stored figures), MiB.
    pub rss_with_metrics_mib: f64,
    /// ... after the scrapes, MiB.
    pub rss_after_scrapes_mib: f64,
    /// Scrape times (`GET /metrics` through to the last byte), ms, in order.
    pub scrape_ms: Vec<f64>,
    /// Body size of the last scrape, bytes.
    pub body_bytes: usize,
    /// Samples (series) in the last scrape.
    pub series: usize,
}

fn rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Turns the reports on, waits until every device reported, and scrapes.
pub async fn measure(
    http: &str,
    token: &str,
    fleetd: Option<u32>,
    shared: &FleetShared,
) -> Result<ScrapeReport> {
    let rss_before_mib = rss_mib(fleetd);
    shared.metrics.start();
    tokio::time::sleep(INTERVAL + Duration::from_secs(3)).await;
    let rss_with_metrics_mib = rss_mib(fleetd);
    let (url, auth) = (format!("{http}/metrics"), format!("Bearer {token}"));
    let (scrape_ms, body) = tokio::task::spawn_blocking(move || -> Result<(Vec<f64>, String)> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(120)))
                .build(),
        );
        let mut times = Vec::new();
        let mut body = String::new();
        for _ in 0..SCRAPES {
            let started = Instant::now();
            body = agent
                .get(&url)
                .header("authorization", &auth)
                .call()
                .with_context(|| format!("GET {url}"))?
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_string()
                .context("reading /metrics")?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok((times, body))
    })
    .await
    .context("scrape worker")??;
    Ok(ScrapeReport {
        rss_before_mib,
        rss_with_metrics_mib,
        rss_after_scrapes_mib: rss_mib(fleetd),
        scrape_ms,
        body_bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
    })
}
