//! The per-app families: one series per app on each device (labels `device`, `app`,
//! `version`), or, with per-device series turned off, one per app and version summed over the
//! fleet (labels `app`, `version`).

use super::expose::{counter, gauge, label, Labels};
use super::samples::DeviceSample;
use crate::model::DeviceRecord;
use fleet_schema::AppMetrics;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::fmt;

/// Health states always written for each app, so a dashboard can count each.
pub const HEALTH_STATES: [&str; 3] = ["healthy", "unhealthy", "unknown"];

/// One app's figures with the labels of its series (several devices' figures summed when
/// aggregated).
struct Row<'a> {
    labels: Labels<'a>,
    m: AppMetrics,
    /// How many devices were summed (1 per device).
    devices: u64,
    /// Per health state, how many devices report it.
    health: [u64; 3],
}

/// The version a device reports running for `app` ("" when it has not said).
fn version_of<'a>(rec: Option<&'a DeviceRecord>, app: &str) -> &'a str {
    rec.and_then(|r| r.status.as_ref())
        .and_then(|s| s.apps.iter().find(|a| a.name == app))
        .map(|a| a.serving_version())
        .unwrap_or("")
}

fn health_index(h: &str) -> usize {
    match h {
        "healthy" => 0,
        "unhealthy" => 1,
        _ => 2,
    }
}

fn rows<'a>(
    samples: &'a [(String, DeviceSample)],
    records: &'a BTreeMap<String, DeviceRecord>,
    per_device: bool,
) -> Vec<Row<'a>> {
    let mut out: Vec<Row<'a>> = Vec::new();
    let mut grouped: BTreeMap<(&'a str, &'a str), usize> = BTreeMap::new();
    for (device, sample) in samples {
        let rec = records.get(device);
        for (app, s) in &sample.apps {
            let version = version_of(rec, app);
            let mut health = [0; 3];
            health[health_index(&s.metrics.health)] = 1;
            if per_device {
                out.push(Row {
                    labels: vec![
                        label("device", device.as_str()),
                        label("app", app.as_str()),
                        label("version", version),
                    ],
                    m: s.metrics.clone(),
                    devices: 1,
                    health,
                });
                continue;
            }
            match grouped.get(&(app.as_str(), version)) {
                Some(&i) => {
                    let row = &mut out[i];
                    add(&mut row.m, &s.metrics);
                    row.devices += 1;
                    for (sum, h) in row.health.iter_mut().zip(health) {
                        *sum += h;
                    }
                }
                None => {
                    grouped.insert((app.as_str(), version), out.len());
                    out.push(Row {
                        labels: vec![label("app", app.as_str()), label("version", version)],
                        m: s.metrics.clone(),
                        devices: 1,
                        health,
                    });
                }
            }
        }
    }
    out
}

/// Adds `b`'s figures into `a` (aggregation over devices).
fn add(a: &mut AppMetrics, b: &AppMetrics) {
    a.cpu_percent += b.cpu_percent;
    a.memory_bytes += b.memory_bytes;
    a.disk_io_read += b.disk_io_read;
    a.disk_io_write += b.disk_io_write;
    a.network_rx += b.network_rx;
    a.network_tx += b.network_tx;
    a.fds += b.fds;
    a.threads += b.threads;
    a.restart_count += b.restart_count;
    for (k, v) in &b.custom_metrics {
        *a.custom_metrics.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// Writes every per-app family.
pub fn encode(
    enc: &mut DescriptorEncoder<'_>,
    samples: &[(String, DeviceSample)],
    records: &BTreeMap<String, DeviceRecord>,
    per_device: bool,
) -> fmt::Result {
    let rows = rows(samples, records, per_device);
    let g = |enc: &mut DescriptorEncoder<'_>,
             name: &str,
             help: &str,
             f: &dyn Fn(&AppMetrics) -> f64| {
        gauge(
            enc,
            name,
            help,
            rows.iter().map(|r| (r.labels.clone(), f(&r.m))),
        )
    };
    let c = |enc: &mut DescriptorEncoder<'_>,
             name: &str,
             help: &str,
             f: &dyn Fn(&AppMetrics) -> u64| {
        counter(
            enc,
            name,
            help,
            rows.iter().map(|r| (r.labels.clone(), f(&r.m))),
        )
    };
    g(
        enc,
        "fleet_app_cpu_percent",
        "CPU use of the app, percent of one core.",
        &|m| f64::from(m.cpu_percent),
    )?;
    g(
        enc,
        "fleet_app_memory_bytes",
        "Resident memory of the app, bytes.",
        &|m| m.memory_bytes as f64,
    )?;
    g(
        enc,
        "fleet_app_open_fds",
        "Open file descriptors of the app.",
        &|m| f64::from(m.fds),
    )?;
    g(enc, "fleet_app_threads", "Threads of the app.", &|m| {
        f64::from(m.threads)
    })?;
    c(
        enc,
        "fleet_app_disk_read_bytes",
        "Bytes the app read from disk.",
        &|m| m.disk_io_read,
    )?;
    c(
        enc,
        "fleet_app_disk_written_bytes",
        "Bytes the app wrote to disk.",
        &|m| m.disk_io_write,
    )?;
    // Network bytes only where the agent measures them (a container's own namespace).
    let measured = || {
        rows.iter()
            .filter(|r| r.m.network_rx > 0 || r.m.network_tx > 0)
    };
    counter(
        enc,
        "fleet_app_network_received_bytes",
        "Network bytes the app received (where measured).",
        measured().map(|r| (r.labels.clone(), r.m.network_rx)),
    )?;
    counter(
        enc,
        "fleet_app_network_transmitted_bytes",
        "Network bytes the app sent (where measured).",
        measured().map(|r| (r.labels.clone(), r.m.network_tx)),
    )?;
    if per_device {
        g(
            enc,
            "fleet_app_uptime_seconds",
            "Seconds since the app's process started.",
            &|m| m.uptime_seconds as f64,
        )?;
    } else {
        gauge(
            enc,
            "fleet_app_devices",
            "Devices reporting the app at this version.",
            rows.iter().map(|r| (r.labels.clone(), r.devices)),
        )?;
    }
    c(
        enc,
        "fleet_app_restarts",
        "Restarts of the app's current version.",
        &|m| u64::from(m.restart_count),
    )?;
    gauge(
        enc,
        "fleet_app_health",
        "1 for the app's health state (per device), or the number of devices in it (aggregated).",
        rows.iter().flat_map(|r| {
            HEALTH_STATES.iter().zip(r.health).map(|(state, n)| {
                let mut labels = r.labels.clone();
                labels.push(label("state", *state));
                (labels, n)
            })
        }),
    )?;
    gauge(
        enc,
        "fleet_app_custom_metric",
        "A value the app reports itself (label metric names it), as the agent last sent it.",
        rows.iter().flat_map(|r| {
            r.m.custom_metrics.iter().map(|(name, v)| {
                let mut labels = r.labels.clone();
                labels.push(label("metric", name.clone()));
                (labels, *v)
            })
        }),
    )
}
