//! The bridge's exposition from known figures: every family, the labels, the aggregated mode,
//! and (when Debian's `promtool` is installed) the format checked by Prometheus' own linter.

use super::*;
use fleet_schema::{AppMetrics, DeviceMetrics, DeviceStatus};

fn record(id: &str, site: &str, version: &str) -> DeviceRecord {
    // Built from JSON as a device sends it, so fields added later keep their defaults.
    let status: DeviceStatus = serde_json::from_value(serde_json::json!({
        "device_id": id,
        "online": true,
        "agent_version": "0.1.0",
        "inventory": {"labels": {"site": site}},
        "observed_generation": 1,
        "apps": [{"name": "web", "version": version, "phase": "running", "restart_count": 0}],
        "reported_at": 0,
    }))
    .expect("a valid status");
    DeviceRecord::apply(None, status, 5_000)
}

fn batch(id: &str, requests: f64) -> MetricsBatch {
    MetricsBatch {
        device_id: id.into(),
        timestamp: 0,
        device: DeviceMetrics {
            memory_used: 1000,
            load1: 0.25,
            ..DeviceMetrics::default()
        },
        apps: vec![AppMetrics {
            app: "web".into(),
            memory_bytes: 4096,
            health: "healthy".into(),
            custom_metrics: [("requests".to_string(), requests)].into(),
            ..AppMetrics::default()
        }],
    }
}

fn scrape(args: TelemetryArgs, now: UnixMillis) -> String {
    let metrics = Arc::new(Metrics::with_telemetry(
        Telemetry::new(args).expect("valid settings"),
    ));
    metrics.telemetry.record(batch("d1", 7.0), 10_000);
    metrics.telemetry.record(batch("d2", 5.0), 10_000);
    let devices: BTreeMap<String, DeviceRecord> = [
        ("d1".to_string(), record("d1", "north", "1.0.0")),
        ("d2".to_string(), record("d2", "south", "1.0.0")),
        ("gone".to_string(), record("gone", "south", "1.0.0")),
    ]
    .into();
    let facts = DbFacts {
        enrolled: ["d1".to_string(), "d2".to_string()].into(),
        devices,
        ..DbFacts::default()
    };
    render(metrics, true, facts, now).expect("renders")
}

#[test]
fn per_device_and_per_app_series_carry_their_labels() {
    let args = TelemetryArgs {
        metrics_device_label: vec!["site".into()],
        ..TelemetryArgs::default()
    };
    let text = scrape(args, 20_000);
    for line in [
        r#"fleet_app_memory_bytes{device="d1",app="web",version="1.0.0"} 4096"#,
        r#"fleet_app_custom_metric{device="d1",app="web",version="1.0.0",metric="requests"} 7.0"#,
        r#"fleet_app_health{device="d2",app="web",version="1.0.0",state="healthy"} 1"#,
        r#"fleet_app_health{device="d2",app="web",version="1.0.0",state="unhealthy"} 0"#,
        r#"fleet_device_load1{device="d1",site="north"} 0.25"#,
        r#"fleet_device_online{device="d2",site="south"} 1"#,
        r#"fleet_device_info{device="d1",site="north",agent_version="0.1.0"} 1"#,
        r#"fleetd_app_version_devices{app="web",version="1.0.0"} 2"#,
        "fleetd_devices 2",
        "fleetd_mqtt_connected 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(
        !text.contains(r#"device="gone""#),
        "a revoked device has no series"
    );
    promtool(&text);
}

#[test]
fn stale_figures_disappear_and_aggregation_drops_the_device_label() {
    let text = scrape(TelemetryArgs::default(), 10_000 + 61_000);
    assert!(!text.contains("fleet_app_memory_bytes{"), "{text}");
    assert!(text.contains(r#"fleet_device_online{device="d1"} 1"#));

    let args = TelemetryArgs {
        metrics_per_device: false,
        ..TelemetryArgs::default()
    };
    let text = scrape(args, 20_000);
    for line in [
        r#"fleet_app_memory_bytes{app="web",version="1.0.0"} 8192"#,
        r#"fleet_app_custom_metric{app="web",version="1.0.0",metric="requests"} 12.0"#,
        r#"fleet_app_devices{app="web",version="1.0.0"} 2"#,
        r#"fleet_app_health{app="web",version="1.0.0",state="healthy"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("fleet_device_"), "no per-device series");
    promtool(&text);
}

#[test]
fn a_device_label_may_not_take_the_bridge_s_own_names() {
    for key in ["device", "agent-version", "__name"] {
        let args = TelemetryArgs {
            metrics_device_label: vec![key.into()],
            ..TelemetryArgs::default()
        };
        assert!(Telemetry::new(args).is_err(), "{key}");
    }
}

/// Lints the exposition with `promtool check metrics` when it is installed.
fn promtool(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: exposition format not linted");
        return;
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lint remarks (naming style) are fine; a parse error is not.
    assert!(
        !said.contains("error while linting") && !said.contains("text format parsing error"),
        "{said}"
    );
}
