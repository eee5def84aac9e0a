//! Formatting of API values for human output: relative times, label sets, app summaries.

use fleet_schema::api::DeviceProgress;
use fleet_schema::{AppStatus, HealthState};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How long ago `ts_ms` was, relative to `now_ms`: "12s ago", "3m ago", "never".
pub fn ago(now_ms: u64, ts_ms: u64) -> String {
    if ts_ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(ts_ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The UTC time of day of `ts_ms`, "HH:MM:SS".
pub fn clock(ts_ms: u64) -> String {
    let s = (ts_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The UTC date and time of `ts_ms`, "YYYY-MM-DD HH:MM UTC".
pub fn date(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        (s / 60) % 60
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Labels as "k=v,k2=v2" ("-" when there are none).
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One app as "name@version phase", plus its health when a check gave a verdict ("[healthy]"),
/// the version still running and the error, if any.
pub fn app(app: &AppStatus) -> String {
    let mut s = format!("{}@{} {}", app.name, app.version, app.phase);
    if app.health != HealthState::Unknown {
        s.push_str(&format!(" [{}]", app.health));
    }
    if let Some(running) = app.running_version.as_deref().filter(|r| *r != app.version) {
        s.push_str(&format!(" (running {running})"));
    }
    if let Some(err) = &app.last_error {
        s.push_str(&format!(" error: {err}"));
    }
    if !app.components.is_empty() {
        let parts: Vec<String> = app
            .components
            .iter()
            .map(|c| {
                let mut p = format!("{} {}", c.name, c.phase);
                if c.health != HealthState::Unknown {
                    p.push_str(&format!(" [{}]", c.health));
                }
                p
            })
            .collect();
        s.push_str(&format!(" {{{}}}", parts.join(", ")));
    }
    s
}

/// All apps of a device, "; "-separated ("-" when there are none).
pub fn apps(apps: &[AppStatus]) -> String {
    if apps.is_empty() {
        return "-".into();
    }
    apps.iter().map(app).collect::<Vec<_>>().join("; ")
}

/// A device's progress in a deployment, as one cell: "succeeded", "in-progress (installing)".
pub fn progress(p: &DeviceProgress) -> String {
    match p {
        DeviceProgress::Pending => "pending".into(),
        DeviceProgress::InProgress { phase } => format!("in-progress ({phase})"),
        DeviceProgress::Succeeded => "succeeded".into(),
        DeviceProgress::Failed { reason } => format!("failed: {reason}"),
        DeviceProgress::Superseded => "superseded".into(),
        DeviceProgress::Waiting => "waiting".into(),
        DeviceProgress::RolledBack => "rolled-back".into(),
    }
}

/// A byte count for humans: "512 B", "3.4 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::AppPhase;

    #[test]
    fn relative_times() {
        assert_eq!(ago(10_000, 0), "never");
        assert_eq!(ago(10_000, 9_000), "1s ago");
        assert_eq!(ago(3_600_000, 1), "59m ago");
        assert_eq!(ago(1_000, 5_000), "0s ago");
        assert_eq!(clock(3_723_000), "01:02:03");
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(951_782_400_000 + 3_723_000), "2000-02-29 01:02 UTC");
        assert_eq!(date(1_767_225_600_000), "2026-01-01 00:00 UTC");
    }

    #[test]
    fn app_summary_names_errors_and_the_running_version() {
        let a = AppStatus {
            name: "web".into(),
            version: "2.0.0".into(),
            phase: AppPhase::Failed,
            restart_count: 0,
            last_error: Some("sha256 mismatch".into()),
            running_version: Some("1.0.0".into()),
            deployment_id: None,
            health: Default::default(),
            health_message: None,
            components: Vec::new(),
        };
        assert_eq!(
            app(&a),
            "web@2.0.0 failed (running 1.0.0) error: sha256 mismatch"
        );
        assert_eq!(apps(&[]), "-");
        let healthy = AppStatus {
            phase: AppPhase::Running,
            health: HealthState::Healthy,
            last_error: None,
            running_version: None,
            ..a
        };
        assert_eq!(app(&healthy), "web@2.0.0 running [healthy]");
        let component =
            |name: &str, phase: AppPhase, health: HealthState| fleet_schema::ComponentStatus {
                name: name.into(),
                artifact_version: "1.0.0".into(),
                phase,
                restart_count: 0,
                last_error: None,
                health,
                health_message: None,
            };
        let several = AppStatus {
            phase: AppPhase::Starting,
            components: vec![
                component("engine", AppPhase::Running, HealthState::Healthy),
                component("model", AppPhase::Starting, HealthState::Unknown),
            ],
            ..healthy
        };
        assert_eq!(
            app(&several),
            "web@2.0.0 starting [healthy] {engine running [healthy], model starting}"
        );
    }

    #[test]
    fn sizes_and_labels() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        let mut l = BTreeMap::new();
        assert_eq!(labels(&l), "-");
        l.insert("site".into(), "a".into());
        l.insert("env".into(), "prod".into());
        assert_eq!(labels(&l), "env=prod,site=a");
    }
}
