//! The metrics bridge: the fleet's telemetry in the Prometheus/OpenMetrics text format on
//! `GET /metrics`, encoded with `prometheus-client`.
//!
//! Agents send a sealed metrics batch every 10 s; the MQTT bridge verifies it and hands it to
//! [`Telemetry::record`], which keeps the newest figures per device and app in memory
//! ([`samples`]). Each scrape then writes, from those figures and from the database:
//! - [`apps`]: per app on each device (`device`, `app`, `version`): CPU, memory, fds, threads,
//!   disk and network bytes, uptime, restarts, health, custom counters;
//! - [`devices`]: per device (`device` plus the labels chosen with `--metrics-device-label`):
//!   CPU, memory, disk, load, network, online, last seen, agent version;
//! - [`fleet`]: devices known, devices per app version, deployments per state, rollout
//!   progress, rollback triggers fired; fleetd's own counters come from
//!   [`crate::metrics::Metrics`] and API latency from [`latency`].
//!
//! Figures not reported again within the staleness window (`--metrics-stale-secs`, default
//! 60 s: six missed reports) are dropped, so the series of a device that left or of an app
//! that was removed disappear. `--metrics-per-device=false` replaces the per-device and per-app
//! series by per-app sums over the fleet, for very large fleets.

pub mod apps;
pub mod devices;
pub mod expose;
pub mod fleet;
pub mod latency;
pub mod samples;

use crate::metrics::Metrics;
use crate::model::{DeploymentRecord, DeviceRecord};
use fleet_schema::{DesiredState, MetricsBatch, UnixMillis};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use samples::{DeviceSample, Samples};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Default staleness window, seconds (six missed 10-second reports).
pub const DEFAULT_STALE_SECS: u64 = 60;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label names a selected device label may not take (they would clash with the bridge's own).
const RESERVED: [&str; 2] = ["device", "agent_version"];

/// The bridge's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Export per-device and per-app series (turn off for very large fleets: per-app sums
    /// over the fleet are exported instead).
    #[arg(long, env = "FLEETD_METRICS_PER_DEVICE", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_per_device: bool,
    /// A device label (as given at enrollment or by the agent, e.g. `site`) to add to every
    /// per-device series, so dashboards can group by it; repeat or separate with commas.
    #[arg(long, env = "FLEETD_METRICS_DEVICE_LABELS", value_delimiter = ',')]
    pub metrics_device_label: Vec<String>,
    /// Seconds after a device's (or an app's) last metrics report when its series disappear.
    #[arg(long, env = "FLEETD_METRICS_STALE_SECS", default_value_t = DEFAULT_STALE_SECS)]
    pub metrics_stale_secs: u64,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self {
            metrics_per_device: true,
            metrics_device_label: vec![],
            metrics_stale_secs: DEFAULT_STALE_SECS,
        }
    }
}

/// A selected device label that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-device-label {0:?}: the bridge already uses the label name {1:?}")]
pub struct LabelClash(String, String);

/// The bridge's state: its settings, the newest figures, the API latency histogram.
#[derive(Debug, Default)]
pub struct Telemetry {
    args: TelemetryArgs,
    samples: Mutex<Samples>,
    /// API request latency.
    pub latency: latency::HttpLatency,
}

impl Telemetry {
    /// A bridge with these settings (refuses device labels that clash with its own).
    pub fn new(args: TelemetryArgs) -> Result<Self, LabelClash> {
        for key in &args.metrics_device_label {
            let name = expose::label_name(key);
            if RESERVED.contains(&name.as_str()) || name.starts_with("__") {
                return Err(LabelClash(key.clone(), name));
            }
        }
        Ok(Self {
            args,
            ..Self::default()
        })
    }

    /// Keeps a verified batch's figures (received at `now`).
    pub fn record(&self, batch: MetricsBatch, now: UnixMillis) {
        self.lock().record(batch, now);
    }

    /// The fresh figures, after dropping the stale ones.
    fn fresh(&self, now: UnixMillis) -> Vec<(String, DeviceSample)> {
        let mut s = self.lock();
        s.prune(now, self.args.metrics_stale_secs.saturating_mul(1000));
        let mut out: Vec<_> = s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples
            .lock()
            .expect("telemetry lock is never poisoned")
    }
}

/// What one scrape reads from the database.
#[derive(Debug, Default)]
pub struct DbFacts {
    /// Every device record.
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Every deployment.
    pub deployments: Vec<DeploymentRecord>,
    /// Every desired state.
    pub desired: BTreeMap<String, DesiredState>,
    /// Ids of the enrolled devices.
    pub enrolled: HashSet<String>,
}

/// One scrape's inputs, owned (a registered collector must be `'static`).
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    mqtt_connected: bool,
    samples: Vec<(String, DeviceSample)>,
    facts: DbFacts,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.metrics.encode(&mut enc, self.mqtt_connected)?;
        let enrolled = |id: &str| self.facts.enrolled.contains(id);
        fleet::encode(
            &mut enc,
            &fleet::FleetFacts {
                devices: &self.facts.devices,
                deployments: &self.facts.deployments,
                desired: &self.facts.desired,
                enrolled: &enrolled,
            },
        )?;
        let args = &self.metrics.telemetry.args;
        if args.metrics_per_device {
            devices::encode(
                &mut enc,
                &self.samples,
                &self.facts.devices,
                &args.metrics_device_label,
                &enrolled,
            )?;
        }
        apps::encode(
            &mut enc,
            &self.samples,
            &self.facts.devices,
            args.metrics_per_device,
        )
    }
}

/// Renders the whole exposition at `now`.
pub fn render(
    metrics: Arc<Metrics>,
    mqtt_connected: bool,
    facts: DbFacts,
    now: UnixMillis,
) -> Result<String, std::fmt::Error> {
    let samples = metrics.telemetry.fresh(now);
    let latency = metrics.telemetry.latency.family();
    let mut registry = Registry::default();
    registry.register(
        "fleetd_http_request_duration_seconds",
        "API request latency through to the response headers, by method, route and status.",
        latency,
    );
    registry.register_collector(Box::new(Scrape {
        metrics,
        mqtt_connected,
        samples,
        facts,
    }));
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
