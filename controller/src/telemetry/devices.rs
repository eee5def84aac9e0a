//! The per-device families: figures from the device's last metrics batch (while fresh) and
//! presence from its last status, labelled by `device` and by the device labels the operator
//! selected with `--metrics-device-label`.

use super::expose::{counter, gauge, label, label_name, Labels};
use super::samples::DeviceSample;
use crate::model::DeviceRecord;
use fleet_schema::DeviceMetrics;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::fmt;

/// The labels of one device's series: `device`, then each selected device label (empty when
/// the device does not carry it, so every series of a family has the same label names).
fn device_labels<'a>(
    device: &'a str,
    rec: Option<&DeviceRecord>,
    selected: &'a [String],
) -> Labels<'a> {
    let mut labels = vec![label("device", device)];
    if selected.is_empty() {
        return labels;
    }
    let own = rec.map(DeviceRecord::labels).unwrap_or_default();
    for key in selected {
        let value = own.get(key).cloned().unwrap_or_default();
        labels.push(label(label_name(key), value));
    }
    labels
}

/// Writes every per-device family. `enrolled` says whether a device is still part of the
/// fleet (a revoked device's presence series disappear at once).
pub fn encode(
    enc: &mut DescriptorEncoder<'_>,
    samples: &[(String, DeviceSample)],
    records: &BTreeMap<String, DeviceRecord>,
    selected: &[String],
    enrolled: &dyn Fn(&str) -> bool,
) -> fmt::Result {
    let fresh: Vec<(Labels<'_>, &DeviceMetrics)> = samples
        .iter()
        .map(|(id, s)| (device_labels(id, records.get(id), selected), &s.device))
        .collect();
    let g = |enc: &mut DescriptorEncoder<'_>,
             name: &str,
             help: &str,
             f: &dyn Fn(&DeviceMetrics) -> f64| {
        gauge(
            enc,
            name,
            help,
            fresh.iter().map(|(l, m)| (l.clone(), f(m))),
        )
    };
    g(
        enc,
        "fleet_device_cpu_percent",
        "CPU use of the device, percent of all cores.",
        &|m| f64::from(m.cpu_percent),
    )?;
    g(
        enc,
        "fleet_device_memory_used_bytes",
        "Memory in use on the device, bytes.",
        &|m| m.memory_used as f64,
    )?;
    g(
        enc,
        "fleet_device_memory_total_bytes",
        "Total memory of the device, bytes.",
        &|m| m.memory_total as f64,
    )?;
    g(
        enc,
        "fleet_device_disk_used_bytes",
        "Disk space in use on the device, bytes.",
        &|m| m.disk_used as f64,
    )?;
    g(
        enc,
        "fleet_device_disk_total_bytes",
        "Disk space of the device, bytes.",
        &|m| m.disk_total as f64,
    )?;
    g(
        enc,
        "fleet_device_load1",
        "One-minute load average of the device.",
        &|m| f64::from(m.load1),
    )?;
    counter(
        enc,
        "fleet_device_network_received_bytes",
        "Network bytes the device received.",
        fresh.iter().map(|(l, m)| (l.clone(), m.network_rx)),
    )?;
    counter(
        enc,
        "fleet_device_network_transmitted_bytes",
        "Network bytes the device sent.",
        fresh.iter().map(|(l, m)| (l.clone(), m.network_tx)),
    )?;

    let known: Vec<(Labels<'_>, &DeviceRecord)> = records
        .iter()
        .filter(|(id, _)| enrolled(id))
        .map(|(id, r)| (device_labels(id, Some(r), selected), r))
        .collect();
    gauge(
        enc,
        "fleet_device_online",
        "1 while the device's agent is connected.",
        known.iter().map(|(l, r)| (l.clone(), i64::from(r.online))),
    )?;
    gauge(
        enc,
        "fleet_device_last_seen_timestamp_seconds",
        "When fleetd last heard from the device, Unix seconds.",
        known
            .iter()
            .map(|(l, r)| (l.clone(), r.last_seen as f64 / 1000.0)),
    )?;
    gauge(
        enc,
        "fleet_device_info",
        "Always 1; the agent version the device last reported, as a label.",
        known.iter().map(|(l, r)| {
            let mut labels = l.clone();
            let version = r
                .status
                .as_ref()
                .map(|s| s.agent_version.clone())
                .unwrap_or_default();
            labels.push(label("agent_version", version));
            (labels, 1)
        }),
    )
}
