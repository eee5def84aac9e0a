//! The soak mode (`fleet-sim --soak SECS`): a simulated fleet with real churn for a long time,
//! to show that nothing in fleetd grows without bound. Devices report metrics and log lines
//! every 10 s, a few percent of them drop off the bus every few seconds and come back after a
//! while (persistent sessions, re-announced status), and a new deployment of one of three
//! versions starts every few seconds, superseding the one in flight. fleetd's resident memory,
//! open file descriptors, threads and data directory are sampled over time and judged at the
//! end: after a warm-up, the last quarter of the run must not exceed the second quarter by more
//! than a margin.

use crate::api::Api;
use crate::bench::{connect_fleet, enter, ConnectedFleet, Phase, Plan};
use crate::publish::StatusPublisher;
use anyhow::{Context, Result};
use fleet_schema::api::{CreateDeployment, DeploymentCreated, TargetSpec, UploadMetadata};
use fleet_schema::{LogBatch, LogEntry, LogLevel};
use rumqttc::AsyncClient;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a device sends a batch of log lines.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Lines per batch.
const LOG_LINES: usize = 5;
/// The versions the soak deploys in turn.
const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "1.2.0"];
/// Growth tolerated between the second and the last quarter of a run (fraction), on top of
/// [`RSS_SLACK_MIB`] for memory.
const GROWTH_MARGIN: f64 = 0.10;
/// Memory noise tolerated in absolute terms (allocator pages, caches warming up), MiB.
const RSS_SLACK_MIB: f64 = 16.0;

/// The soak's knobs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// How long to run.
    pub duration: Duration,
    /// How often to sample fleetd.
    pub sample_every: Duration,
    /// How often some devices drop off the bus.
    pub churn_every: Duration,
    /// Percentage of the fleet dropped at each churn tick.
    pub churn_percent: f64,
    /// How often a new deployment starts.
    pub deploy_every: Duration,
    /// fleetd's process id.
    pub fleetd_pid: Option<u32>,
    /// fleetd's data directory.
    pub data_dir: PathBuf,
}

/// Disconnections and log traffic for the soak; inert unless enabled.
#[derive(Debug, Default)]
pub struct Churn {
    enabled: AtomicBool,
    clients: Mutex<HashMap<usize, AsyncClient>>,
    offline_until: Mutex<HashMap<usize, Instant>>,
    /// Devices taken off the bus so far.
    pub disconnects: AtomicU64,
}

impl Churn {
    /// Devices register their clients and report logs from now on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether the soak runs.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Device `index` is connected through `client` (kept so the soak can disconnect it).
    pub fn register(&self, index: usize, client: &AsyncClient) {
        if self.enabled() {
            lock(&self.clients).insert(index, client.clone());
        }
    }

    /// Until when device `index` must stay off the bus, if it was taken off.
    pub fn offline_until(&self, index: usize) -> Option<Instant> {
        let mut map = lock(&self.offline_until);
        let until = map.get(&index).copied()?;
        if until <= Instant::now() {
            map.remove(&index);
            return None;
        }
        Some(until)
    }

    /// Takes device `index` off the bus for `gap` (a clean MQTT disconnect; the device's
    /// reconnect loop waits until the gap is over, then resumes its persistent session).
    pub fn take_offline(&self, index: usize, gap: Duration) {
        let Some(client) = lock(&self.clients).remove(&index) else {
            return; // not connected right now
        };
        lock(&self.offline_until).insert(index, Instant::now() + gap);
        if client.try_disconnect().is_ok() {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A device's log loop (started at its first ConnAck): [`LOG_LINES`] lines every
/// [`LOG_INTERVAL`], sealed like the agent's, QoS 0 as topics.md says.
pub async fn report_logs(
    index: usize,
    id: String,
    client: AsyncClient,
    publisher: Arc<StatusPublisher>,
) {
    let topic = match fleet_schema::DeviceId::parse(&id) {
        Ok(device) => fleet_schema::Topic::Logs(device),
        Err(e) => return tracing::error!("simulated device {id:?}: {e}"),
    };
    let name = topic.to_string();
    let offset = Duration::from_millis((index as u64 * 7919) % LOG_INTERVAL.as_millis() as u64);
    tokio::time::sleep(offset).await;
    let mut line = 0u64;
    loop {
        let entries = (0..LOG_LINES)
            .map(|_| {
                line += 1;
                LogEntry {
                    timestamp: crate::fleet::now_ms(),
                    app: "sim-app".into(),
                    stream: "stdout".into(),
                    level: if line.is_multiple_of(10) {
                        LogLevel::Warn
                    } else {
                        LogLevel::Info
                    },
                    message: format!("request {line} served in {} ms", line % 97),
                }
            })
            .collect();
        let batch = LogBatch {
            device_id: id.clone(),
            entries,
            ..LogBatch::default()
        };
        let sealed = fleet_schema::encode(&batch)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                publisher
                    .with_end(|end| end.seal(&name, &b))
                    .map_err(|e| e.to_string())
            });
        match sealed {
            Ok(bytes) => {
                if let Err(e) = crate::wire::try_publish(&client, &topic, bytes) {
                    tracing::debug!("{topic}: publish refused by the client: {e}");
                }
            }
            Err(e) => tracing::error!("{topic}: cannot seal logs: {e}"),
        }
        tokio::time::sleep(LOG_INTERVAL).await;
    }
}

/// fleetd at one moment of the soak.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// Bytes under the data directory (database, artifacts, log store), MiB.
    pub data_mib: f64,
    /// Deployments created so far.
    pub deployments: u64,
    /// Devices taken off the bus so far.
    pub disconnects: u64,
}

/// The soak's result.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Devices in the fleet.
    pub devices: usize,
    /// Seconds the soak ran (after the fleet connected).
    pub duration_s: f64,
    /// Deployments created.
    pub deployments: u64,
    /// Deployment requests fleetd refused (with the first error).
    pub deployment_errors: u64,
    /// The first refusal, if any.
    pub first_deployment_error: Option<String>,
    /// Device disconnections caused by the churn.
    pub disconnects: u64,
    /// Connection errors seen by the devices, by kind.
    pub connection_errors: BTreeMap<String, u64>,
    /// The samples, in order.
    pub samples: Vec<Sample>,
    /// Growth of each figure from the second to the last quarter, and whether it is bounded.
    pub verdict: Vec<Growth>,
}

/// One figure's growth between the second and the last quarter of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// Which figure.
    pub figure: &'static str,
    /// Its maximum in the second quarter.
    pub second_quarter_max: f64,
    /// Its maximum in the last quarter.
    pub last_quarter_max: f64,
    /// Within the margin.
    pub bounded: bool,
}

impl SoakReport {
    /// Whether every figure stayed bounded.
    pub fn passed(&self) -> bool {
        self.verdict.iter().all(|g| g.bounded)
    }

    /// The samples (at most ~20 rows) and the verdict as tables.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: {} devices for {:.0} s, {} deployments ({} refused), {} device disconnects",
            self.devices,
            self.duration_s,
            self.deployments,
            self.deployment_errors,
            self.disconnects
        );
        if let Some(e) = &self.first_deployment_error {
            let _ = writeln!(out, "first refused deployment: {e}");
        }
        let _ = writeln!(
            out,
            "{:>8}  {:>9}  {:>6}  {:>7}  {:>9}  {:>11}  {:>11}",
            "t (s)", "RSS MiB", "fds", "threads", "data MiB", "deployments", "disconnects"
        );
        let step = self.samples.len().div_ceil(20).max(1);
        let last = self.samples.len().saturating_sub(1);
        for (i, s) in self.samples.iter().enumerate() {
            if i % step == 0 || i == last {
                let _ = writeln!(
                    out,
                    "{:>8.0}  {:>9.1}  {:>6}  {:>7}  {:>9.1}  {:>11}  {:>11}",
                    s.t_s, s.rss_mib, s.fds, s.threads, s.data_mib, s.deployments, s.disconnects
                );
            }
        }
        let _ = writeln!(
            out,
            "\n{:<10}  {:>16}  {:>14}  bounded",
            "figure", "2nd quarter max", "last quarter max"
        );
        for g in &self.verdict {
            let _ = writeln!(
                out,
                "{:<10}  {:>16.1}  {:>16.1}  {}",
                g.figure,
                g.second_quarter_max,
                g.last_quarter_max,
                if g.bounded { "yes" } else { "NO" }
            );
        }
        let errors: u64 = self.connection_errors.values().sum();
        let _ = writeln!(
            out,
            "device connection errors: {errors} {:?}",
            self.connection_errors
        );
        out
    }
}

/// A figure's name, how to read it from a sample, and the absolute slack allowed on top of
/// [`GROWTH_MARGIN`].
type Figure = (&'static str, fn(&Sample) -> f64, f64);

/// Judges growth: the last quarter's maximum against the second quarter's (the first quarter
/// is warm-up: caches fill, the log store reaches its steady size).
pub fn verdict(samples: &[Sample]) -> Vec<Growth> {
    let n = samples.len();
    let quarter = |q: usize| &samples[n * q / 4..(n * (q + 1) / 4).max(n * q / 4)];
    let figures: [Figure; 4] = [
        ("rss_mib", |s| s.rss_mib, RSS_SLACK_MIB),
        ("fds", |s| s.fds as f64, 16.0),
        ("threads", |s| s.threads as f64, 4.0),
        ("data_mib", |s| s.data_mib, 8.0),
    ];
    figures
        .into_iter()
        .map(|(figure, get, slack)| {
            let max = |part: &[Sample]| part.iter().map(get).fold(0.0, f64::max);
            let (second, last) = (max(quarter(1)), max(quarter(3)));
            Growth {
                figure,
                second_quarter_max: second,
                last_quarter_max: last,
                bounded: n < 4 || last <= second * (1.0 + GROWTH_MARGIN) + slack,
            }
        })
        .collect()
}

fn proc_field(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn sample(settings: &SoakSettings, t0: Instant, deployments: u64, disconnects: u64) -> Sample {
    let pid = settings.fleetd_pid;
    Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_mib: pid.and_then(|p| proc_field(p, "VmRSS:")).unwrap_or(0.0) / 1024.0,
        fds: pid
            .and_then(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
            .map_or(0, |d| d.count() as u64),
        threads: pid.and_then(|p| proc_field(p, "Threads:")).unwrap_or(0.0) as u64,
        data_mib: dir_bytes(&settings.data_dir) as f64 / (1024.0 * 1024.0),
        deployments,
        disconnects,
    }
}

/// A small deterministic generator (xorshift), enough to pick devices to drop.
struct Pick(u64);

impl Pick {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

async fn upload_versions(api: &Api) -> Result<()> {
    for version in VERSIONS {
        let meta = UploadMetadata {
            name: crate::bench::APP.into(),
            version: version.into(),
            kind: "binary".into(),
            ..Default::default()
        };
        let body = format!("#!/bin/sh\necho fleet-sim soak {version}\n").into_bytes();
        api.upload(meta, body)
            .await
            .with_context(|| format!("uploading soak version {version}"))?;
    }
    Ok(())
}

/// Runs the soak against an already started fleetd.
pub async fn run(plan: &Plan, phase: &Phase, settings: &SoakSettings) -> Result<SoakReport> {
    let ConnectedFleet {
        api,
        shared,
        tasks: _fleet,
        ..
    } = connect_fleet(plan, phase, |shared| {
        shared.metrics.enable();
        shared.metrics.start();
        shared.churn.enable();
    })
    .await?;
    enter(phase, "uploading the soak's versions");
    upload_versions(&api).await?;
    enter(phase, "soaking");
    let n = plan.devices;
    let t0 = Instant::now();
    let mut pick = Pick(0x9E37_79B9_7F4A_7C15);
    let (mut deployments, mut refused, mut first_error) = (0u64, 0u64, None);
    let mut samples = vec![sample(settings, t0, 0, 0)];
    let mut churn = tokio::time::interval(settings.churn_every);
    let mut deploy = tokio::time::interval(settings.deploy_every);
    let mut sampler = tokio::time::interval(settings.sample_every);
    for i in [&mut churn, &mut deploy, &mut sampler] {
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let end = tokio::time::Instant::now() + settings.duration;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = churn.tick() => {
                let k = ((n as f64 * settings.churn_percent / 100.0).round() as usize).max(1);
                for _ in 0..k {
                    let gap = Duration::from_millis(1000 + pick.next(9000) as u64);
                    shared.churn.take_offline(pick.next(n), gap);
                }
            }
            _ = deploy.tick() => {
                let version = VERSIONS[(deployments + refused) as usize % VERSIONS.len()];
                let request = CreateDeployment {
                    application: crate::bench::APP.into(),
                    version: version.into(),
                    strategy: plan.strategy.clone(),
                    target: TargetSpec {
                        selector: BTreeMap::from([("sim".to_string(), "1".to_string())]),
                        ..TargetSpec::default()
                    },
                };
                match api.post::<_, DeploymentCreated>("/api/v1/deployments", request).await {
                    Ok(_) => deployments += 1,
                    Err(e) => {
                        refused += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            _ = sampler.tick() => {
                let s = sample(settings, t0, deployments, shared.churn.disconnects.load(Ordering::Relaxed));
                eprintln!(
                    "soak t={:>6.0}s rss={:.1}MiB fds={} threads={} data={:.1}MiB deployments={} disconnects={}",
                    s.t_s, s.rss_mib, s.fds, s.threads, s.data_mib, s.deployments, s.disconnects
                );
                samples.push(s);
            }
        }
    }
    samples.push(sample(
        settings,
        t0,
        deployments,
        shared.churn.disconnects.load(Ordering::Relaxed),
    ));
    Ok(SoakReport {
        devices: n,
        duration_s: t0.elapsed().as_secs_f64(),
        deployments,
        deployment_errors: refused,
        first_deployment_error: first_error,
        disconnects: shared.churn.disconnects.load(Ordering::Relaxed),
        connection_errors: shared.errors.snapshot(),
        verdict: verdict(&samples),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: usize, rss: f64, data: f64) -> Sample {
        Sample {
            t_s: t as f64,
            rss_mib: rss,
            fds: 40,
            threads: 10,
            data_mib: data,
            deployments: 0,
            disconnects: 0,
        }
    }

    #[test]
    fn flat_runs_pass_and_growing_ones_fail() {
        let flat: Vec<Sample> = (0..40).map(|t| at(t, 60.0 + (t % 3) as f64, 5.0)).collect();
        assert!(
            verdict(&flat).iter().all(|g| g.bounded),
            "{:?}",
            verdict(&flat)
        );
        let leaking: Vec<Sample> = (0..40).map(|t| at(t, 60.0 + 4.0 * t as f64, 5.0)).collect();
        let v = verdict(&leaking);
        assert!(!v[0].bounded, "memory growing by 4 MiB a sample: {v:?}");
        let filling: Vec<Sample> = (0..40).map(|t| at(t, 60.0, 5.0 + t as f64)).collect();
        assert!(!verdict(&filling)[3].bounded, "data dir growing");
    }

    #[test]
    fn picks_stay_in_range() {
        let mut p = Pick(42);
        assert!((0..1000).all(|_| p.next(7) < 7));
    }
}
