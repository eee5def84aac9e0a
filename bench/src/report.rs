//! The benchmark's result: figures, the machine they were measured on, and their rendering as
//! a table or JSON.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub nproc: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// The first `model name` (x86) or `Model`/`Hardware` (ARM boards) in /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

/// The spread of per-device latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The last device: the figure that says "the whole fleet".
    pub max_ms: f64,
}

impl Spread {
    /// Computes the spread of `samples` (nearest-rank percentiles).
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Self {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// CPU time per device, in milliseconds, from `/proc/<pid>/stat` (utime + stime, 10 ms ticks).
/// fleetd's figures include its embedded broker when it runs one; an external Mosquitto is
/// counted on its own; the simulator is never charged to either.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuFigures {
    /// fleetd, while every device enrolled over HTTP (signature check, key exchange, registry
    /// write, MQTT credentials; with Mosquitto also the password file it rewrites).
    pub fleetd_ms_per_enrollment: Option<f64>,
    /// fleetd, from the first connection until the API listed every device online (includes
    /// the benchmark's `GET /api/v1/devices` every 200 ms).
    pub fleetd_ms_per_registration: Option<f64>,
    /// fleetd, from the deployment request until the API reported every device succeeded: one
    /// desired-state change and one status change per device, plus the benchmark's polling.
    pub fleetd_ms_per_update: Option<f64>,
    /// The same without the benchmark's polling (`api_polls` times `fleetd_ms_per_api_poll`).
    pub fleetd_ms_per_update_excl_polls: Option<f64>,
    /// Mosquitto during registration.
    pub mosquitto_ms_per_registration: Option<f64>,
    /// Mosquitto during the deployment.
    pub mosquitto_ms_per_update: Option<f64>,
    /// This simulator during the deployment (all N simulated devices).
    pub sim_ms_per_update: Option<f64>,
    /// `GET /api/v1/deployments/{id}` calls made during the deployment.
    pub api_polls: u64,
    /// fleetd's CPU for one such call (measured after the rollout, net of the idle rate).
    pub fleetd_ms_per_api_poll: Option<f64>,
    /// fleetd's CPU with the fleet connected and nothing happening, percent of one CPU.
    pub fleetd_idle_percent: Option<f64>,
}

/// fleetd's (and Mosquitto's) CPU per device for one deployment round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateCpu {
    /// fleetd, from the deployment request until the API reported every device succeeded.
    pub fleetd_ms_per_update: Option<f64>,
    /// The same without the benchmark's polling.
    pub fleetd_ms_per_update_excl_polls: Option<f64>,
    /// Mosquitto during the round.
    pub mosquitto_ms_per_update: Option<f64>,
    /// This simulator during the round.
    pub sim_ms_per_update: Option<f64>,
    /// `GET /api/v1/deployments/{id}` calls made during the round.
    pub api_polls: u64,
}

/// The second deployment of a run (version 2.0.0 to the same fleet): every topic,
/// subscription and retained message already exists, so it shows the steady-state cost of a
/// release, where the first also pays for the broker creating per-device topics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepeatRound {
    /// Until the API reported every device succeeded, milliseconds.
    pub api_all_succeeded_ms: f64,
    /// Devices updated by the end of each rollout step (cumulative).
    pub step_sizes: Vec<usize>,
    /// Devices whose new-version status had no broker acknowledgement when the round ended.
    pub missing_acks: usize,
    /// CPU per device.
    pub cpu: UpdateCpu,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// "embedded" or "mosquitto".
    pub broker: String,
    /// Simulated devices.
    pub devices: usize,
    /// The simulated devices' MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// The simulated devices' connection timeout (TCP connect plus ConnAck), seconds.
    pub connect_timeout_s: u64,
    /// Time to enroll every device over HTTP (key generation, signed request, key exchange),
    /// seconds; before the connections, not part of `connect_s`.
    pub enroll_s: f64,
    /// Time until every device had its first ConnAck, seconds.
    pub connect_s: f64,
    /// Time from the first connection attempt until the API listed every device online, seconds.
    pub registered_s: f64,
    /// Latency of `POST /api/v1/deployments`, milliseconds.
    pub create_deployment_ms: f64,
    /// (a) From sending the deployment request until each device received its desired state.
    pub desired_received: Spread,
    /// (b) Until each device's status with the new version was acknowledged by the broker.
    pub new_version_reported: Spread,
    /// (c) Until `GET /api/v1/deployments/{id}` reported every device succeeded, milliseconds.
    /// This ends the deployment phase: the API is the source of truth.
    pub api_all_succeeded_ms: f64,
    /// Devices with no desired state seen by the simulator when the phase ended (plus grace).
    pub missing_desired: usize,
    /// Devices whose new-version status had no broker acknowledgement when the phase ended
    /// (plus grace), although fleetd had it.
    pub missing_acks: usize,
    /// MQTT connection errors during the run (each followed by a reconnect).
    pub connection_errors: u64,
    /// The same by "connect" (before a device's first ConnAck) or "reconnect", and kind.
    pub connection_error_kinds: BTreeMap<String, u64>,
    /// Embedded broker only: connections it dropped because the same client id connected again
    /// (rumqttd's "Duplicate client_id" log lines in fleetd's log).
    pub duplicate_client_id_drops: Option<u64>,
    /// Undecodable desired-state payloads.
    pub bad_payloads: u64,
    /// The deployment strategy.
    pub strategy: String,
    /// Devices updated by the end of each rollout step (cumulative).
    pub step_sizes: Vec<usize>,
    /// CPU time per device.
    pub cpu: CpuFigures,
    /// The second, steady-state deployment.
    pub repeat: RepeatRound,
    /// The metrics bridge (`--scrape`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape: Option<crate::scrape::ScrapeReport>,
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

impl Report {
    /// The report as a two-column table.
    pub fn render_table(&self) -> String {
        let rows: Vec<(String, String)> = vec![
            (
                "machine".into(),
                format!("{} CPUs, {}", self.machine.nproc, self.machine.cpu_model),
            ),
            ("broker".into(), self.broker.clone()),
            ("devices".into(), self.devices.to_string()),
            (
                "connect (all ConnAck)".into(),
                format!("{:.2} s", self.connect_s),
            ),
            (
                "enroll every device (HTTP, before connecting)".to_string(),
                format!("{:.2} s", self.enroll_s),
            ),
            (
                "registered (API lists all)".into(),
                format!("{:.2} s", self.registered_s),
            ),
            (
                "create deployment (POST)".into(),
                ms(self.create_deployment_ms),
            ),
            spread_row("(a) desired state received", &self.desired_received),
            spread_row("(b) new version reported", &self.new_version_reported),
            (
                "(c) API: all succeeded".into(),
                ms(self.api_all_succeeded_ms),
            ),
            ("device acks missing".into(), self.missing_acks.to_string()),
            (
                "desired states missing".into(),
                self.missing_desired.to_string(),
            ),
            (
                "connection errors".into(),
                error_kinds(self.connection_errors, &self.connection_error_kinds),
            ),
            (
                "duplicate client id drops".into(),
                self.duplicate_client_id_drops
                    .map_or_else(|| "n/a".into(), |n| n.to_string()),
            ),
            ("bad payloads".into(), self.bad_payloads.to_string()),
            ("strategy".into(), self.strategy.clone()),
            (
                "rollout steps (cumulative devices)".into(),
                format!("{:?}", self.step_sizes),
            ),
            (
                "fleetd CPU per device enrollment".into(),
                cpu_ms(self.cpu.fleetd_ms_per_enrollment),
            ),
            (
                "fleetd CPU per device registration".into(),
                cpu_ms(self.cpu.fleetd_ms_per_registration),
            ),
            (
                "fleetd CPU per device update".into(),
                cpu_ms(self.cpu.fleetd_ms_per_update),
            ),
            (
                "  of which the benchmark's API polls".into(),
                format!(
                    "{} polls x {}",
                    self.cpu.api_polls,
                    cpu_ms(self.cpu.fleetd_ms_per_api_poll)
                ),
            ),
            (
                "fleetd CPU per device update, excl. polls".into(),
                cpu_ms(self.cpu.fleetd_ms_per_update_excl_polls),
            ),
            (
                "mosquitto CPU per registration / update".into(),
                format!(
                    "{} / {}",
                    cpu_ms(self.cpu.mosquitto_ms_per_registration),
                    cpu_ms(self.cpu.mosquitto_ms_per_update)
                ),
            ),
            (
                "fleet-sim CPU per device update".into(),
                cpu_ms(self.cpu.sim_ms_per_update),
            ),
            (
                "fleetd idle CPU".into(),
                self.cpu
                    .fleetd_idle_percent
                    .map_or_else(|| "unknown".into(), |p| format!("{p:.1}% of one CPU")),
            ),
        ];
        let r = &self.repeat;
        let mut rows = rows;
        rows.push((
            "repeat deployment: (c) all succeeded".into(),
            format!(
                "{} (steps {:?}, {} acks missing)",
                ms(r.api_all_succeeded_ms),
                r.step_sizes,
                r.missing_acks
            ),
        ));
        rows.push((
            "repeat deployment: fleetd CPU / device update".into(),
            format!(
                "{} (excl. {} API polls: {})",
                cpu_ms(r.cpu.fleetd_ms_per_update),
                r.cpu.api_polls,
                cpu_ms(r.cpu.fleetd_ms_per_update_excl_polls)
            ),
        ));
        if r.cpu.mosquitto_ms_per_update.is_some() {
            rows.push((
                "repeat deployment: Mosquitto CPU / device update".into(),
                cpu_ms(r.cpu.mosquitto_ms_per_update),
            ));
        }
        if let Some(s) = &self.scrape {
            let times: Vec<String> = s.scrape_ms.iter().map(|t| ms(*t)).collect();
            rows.push(("metrics bridge: GET /metrics".into(), times.join(", ")));
            rows.push((
                "metrics bridge: body".into(),
                format!(
                    "{:.1} MiB, {} series",
                    s.body_bytes as f64 / 1048576.0,
                    s.series
                ),
            ));
            rows.push((
                "metrics bridge: fleetd RSS".into(),
                format!(
                    "{:.0} MiB before metrics, {:.0} MiB with every device's figures, {:.0} MiB after the scrapes",
                    s.rss_before_mib, s.rss_with_metrics_mib, s.rss_after_scrapes_mib
                ),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

fn error_kinds(total: u64, kinds: &BTreeMap<String, u64>) -> String {
    if kinds.is_empty() {
        return total.to_string();
    }
    let detail: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{total} ({})", detail.join("; "))
}

fn cpu_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| format!("{v:.3} ms"))
}

fn spread_row(name: &str, s: &Spread) -> (String, String) {
    (
        name.to_string(),
        format!(
            "all {} (p50 {}, p99 {})",
            ms(s.max_ms),
            ms(s.p50_ms),
            ms(s.p99_ms)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Spread::of(&samples);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Spread::of(&[]), Spread::default());
        let one = Spread::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.max_ms), (7.0, 7.0));
    }

    #[test]
    fn cpu_model_is_found() {
        let x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R)"));
        let arm = "processor : 0\nHardware : BCM2835\nModel : Raspberry Pi 4\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("Raspberry Pi 4"));
        assert_eq!(cpu_model(""), None);
    }
}
