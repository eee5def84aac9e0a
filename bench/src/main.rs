//! `fleet-sim`: a fleet simulator and benchmark for FleetD. It starts fleetd (and optionally
//! Mosquitto), connects N simulated devices over real MQTT connections from this one process,
//! deploys an artifact to all of them and reports how fast the fleet converged.

mod api;
mod bench;
mod conn_errors;
mod cpu;
mod deploy;
mod device;
mod enroll;
mod fleet;
mod procs;
mod publish;
mod report;
mod scrape;
mod soak;
mod wire;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark FleetD with N simulated devices in one process.
#[derive(Parser, Debug)]
#[command(name = "fleet-sim", version, about)]
struct Args {
    /// Number of simulated devices.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    devices: u32,
    /// The broker: fleetd's embedded one, or a Mosquitto started for the run.
    #[arg(long, value_enum, default_value_t = Broker::Embedded)]
    broker: Broker,
    /// The fleetd binary (default: `fleetd` next to this executable).
    #[arg(long)]
    fleetd: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// New device connections per second (0: only bounded by --connect-concurrency).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// MQTT handshakes in flight at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// MQTT keep-alive of the simulated devices, seconds (the real agent uses 15; longer keeps
    /// 10,000 devices' pings from loading the broker and from timing out on a busy machine).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(5..=3600))]
    keep_alive: u64,
    /// Seconds a simulated device waits for TCP connect plus ConnAck before it retries. Keep
    /// it long: an abandoned CONNECT stays in a busy broker's backlog, and when the broker gets
    /// to it, it takes over the client id and drops the device's live connection.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=600))]
    connect_timeout: u64,
    /// Keep the temporary directory (fleetd.log, mosquitto.log) and print its path.
    #[arg(long)]
    keep_dir: bool,
    /// Also measure the metrics bridge: every device reports metrics with two apps every 10 s,
    /// then `/metrics` is scraped (time, size) and fleetd's memory is read.
    #[arg(long)]
    scrape: bool,
    /// An extra flag for fleetd (repeat), e.g. `--fleetd-arg=--metrics-per-device=false`.
    #[arg(long, allow_hyphen_values = true)]
    fleetd_arg: Vec<String>,
    /// Deployment strategy: all at once, or a canary in steps of --initial, then --increment
    /// percent of the fleet every --interval.
    #[arg(long, value_enum, default_value_t = Strategy::AllAtOnce)]
    strategy: Strategy,
    /// Canary: percentage of the fleet in the first step.
    #[arg(long, default_value_t = 10)]
    initial: u32,
    /// Canary: percentage added by each further step.
    #[arg(long, default_value_t = 30)]
    increment: u32,
    /// Canary: least time between two steps (fleetd duration syntax).
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Soak instead of benchmarking: run the fleet with churn (disconnects, a deployment every
    /// --deploy-every, metrics and logs every 10 s) for this many seconds, sampling fleetd's
    /// memory, file descriptors, threads and data directory; exits 1 if any of them kept growing.
    #[arg(long, value_name = "SECS")]
    soak: Option<u64>,
    /// Soak: seconds between two samples.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    sample_every: u64,
    /// Soak: seconds between two churn ticks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    churn_every: u64,
    /// Soak: percentage of the fleet taken off the bus (for 1-10 s) at each churn tick.
    #[arg(long, default_value_t = 5.0)]
    churn_percent: f64,
    /// Soak: seconds between two deployments.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    deploy_every: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Every device at once.
    AllAtOnce,
    /// A canary in growing steps.
    Canary,
}

impl Args {
    /// The deployment's strategy as the API takes it (`None`: fleetd's default, all at once).
    fn strategy_spec(&self) -> Option<fleet_schema::api::StrategySpec> {
        match self.strategy {
            Strategy::AllAtOnce => None,
            Strategy::Canary => Some(fleet_schema::api::StrategySpec {
                kind: "canary".into(),
                initial_percentage: Some(self.initial),
                increment_percentage: Some(self.increment),
                increment_interval: Some(self.interval.clone()),
                min_healthy_time: Some("0s".into()),
                progress_deadline: Some("30m".into()),
                ..Default::default()
            }),
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// fleetd's embedded rumqttd.
    Embedded,
    /// A Mosquitto process, with fleetd connected via --mqtt-url.
    Mosquitto,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// A readable table.
    Table,
    /// One JSON document.
    Json,
}

/// The host and port of a plain-TCP broker URL (the simulator's devices do not speak TLS).
fn split_mqtt_url(url: &str) -> Result<(String, u16)> {
    let url: fleet_schema::MqttUrl = url.parse()?;
    if url.tls {
        bail!("broker URL {url}: fleet-sim connects over plain TCP only; give an mqtt:// URL");
    }
    Ok((url.host, url.port))
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if !args.connect_rate.is_finite() || args.connect_rate < 0.0 {
        bail!("--connect-rate must be a non-negative number");
    }
    let devices = args.devices as usize;
    let nofile = procs::raise_nofile_limit()?;
    // This process holds one socket per device, and so does the broker (which inherits the limit).
    if nofile < devices as u64 + 256 {
        bail!(
            "the open-file limit is {nofile}, too low for {devices} devices; raise it (ulimit -Hn)"
        );
    }
    let fleetd_bin = match args.fleetd.clone() {
        Some(p) => p,
        None => procs::default_fleetd()?,
    };

    // Drop order matters: the runtime (device connections) first, then the child processes,
    // then the temporary directory they use.
    let dir = tempfile::Builder::new()
        .prefix("fleet-sim-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut children = procs::Children::default();
    let external = match args.broker {
        Broker::Mosquitto => Some(format!(
            "mqtt://127.0.0.1:{}",
            procs::start_mosquitto(&mut children, dir.path())?
        )),
        Broker::Embedded => None,
    };
    let token = procs::admin_token()?;
    let endpoints = procs::start_fleetd(
        &mut children,
        &fleetd_bin,
        dir.path(),
        external.as_deref(),
        &token,
        &args.fleetd_arg,
    )?;
    let (mqtt_host, mqtt_port) = split_mqtt_url(
        &external
            .clone()
            .unwrap_or_else(|| endpoints.mqtt.to_string()),
    )?;
    let plan = bench::Plan {
        devices,
        broker: format!("{:?}", args.broker).to_lowercase(),
        http: endpoints.http.clone(),
        token,
        mqtt_host,
        mqtt_port,
        connect_rate: args.connect_rate,
        connect_concurrency: args.connect_concurrency,
        progress: args.output == Output::Table && std::io::stderr().is_terminal(),
        strategy: args.strategy_spec(),
        cpu: cpu::CpuProbe {
            fleetd: children.pid("fleetd"),
            mosquitto: children.pid("mosquitto"),
        },
        keep_alive: Duration::from_secs(args.keep_alive),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        scrape: args.scrape,
    };
    let soak = args.soak.map(|secs| soak::SoakSettings {
        duration: Duration::from_secs(secs),
        sample_every: Duration::from_secs(args.sample_every),
        churn_every: Duration::from_secs(args.churn_every),
        churn_percent: args.churn_percent.clamp(0.0, 100.0),
        deploy_every: Duration::from_secs(args.deploy_every),
        fleetd_pid: children.pid("fleetd"),
        data_dir: dir.path().join("fleetd-data"),
    });
    let phase = bench::Phase::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let timeout =
        Duration::from_secs(args.timeout) + soak.as_ref().map_or(Duration::ZERO, |s| s.duration);
    if let Some(settings) = &soak {
        let outcome = runtime.block_on(async {
            match tokio::time::timeout(timeout, soak::run(&plan, &phase, settings)).await {
                Ok(result) => result,
                Err(_) => bail!(
                    "timed out after {} s while {}",
                    timeout.as_secs(),
                    phase.describe(devices)
                ),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        let report = outcome.map_err(|e| {
            let log = procs::log_tail(&dir.path().join("fleetd.log"), 20);
            anyhow::anyhow!("{e:#}\nlast fleetd log lines:\n{log}")
        })?;
        drop(children);
        if args.keep_dir {
            eprintln!("logs kept in {}", dir.keep().display());
        }
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Output::Table => print!("{}", report.render_table()),
        }
        if !report.passed() {
            bail!("fleetd kept growing during the soak (see the table)");
        }
        return Ok(());
    }
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(timeout, bench::run(&plan, &phase)).await {
            Ok(result) => result,
            Err(_) => bail!(
                "timed out after {} s while {}",
                timeout.as_secs(),
                phase.describe(devices)
            ),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let fleetd_log = dir.path().join("fleetd.log");
    let mut report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let fleetd = match children.check_alive() {
                Ok(()) => "fleetd was still running".to_string(),
                Err(dead) => dead.to_string(),
            };
            drop(children);
            let log = procs::log_tail(&fleetd_log, 20);
            let kept = dir.keep();
            bail!(
                "{e:#}\n({fleetd}; logs kept in {})\nlast fleetd log lines:\n{log}",
                kept.display()
            );
        }
    };
    drop(children);
    if args.broker == Broker::Embedded {
        report.duplicate_client_id_drops = Some(procs::count_in_log(
            &fleetd_log,
            procs::RUMQTTD_DUPLICATE_CLIENT_ID,
        ));
    }
    if args.keep_dir {
        eprintln!("logs kept in {}", dir.keep().display());
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report.render_table()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn mqtt_urls_split() {
        assert_eq!(
            split_mqtt_url("mqtt://127.0.0.1:1883").expect("valid"),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            split_mqtt_url("mqtt://[::1]:1884").expect("valid"),
            ("::1".into(), 1884)
        );
        assert_eq!(split_mqtt_url("mqtt://x").expect("valid").1, 1883);
        for bad in ["http://x:1", "mqtt://x:0", "mqtt://u@x:1", "mqtts://x:8883"] {
            assert!(split_mqtt_url(bad).is_err(), "{bad}");
        }
    }
}
