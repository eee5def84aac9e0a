//! The measured part of a run: connect the simulated fleet, wait until fleetd knows every
//! device, upload an artifact, deploy it to `sim=1`, and time how fast the fleet converges.

use crate::api::Api;
use crate::fleet::{device_id, run_device, FleetShared, SimEvent, SimEventKind};
use crate::report::{Machine, Report, Spread};
use anyhow::{anyhow, bail, Context, Result};
use fleet_schema::api::{
    CreateDeployment, DeploymentCreated, DeploymentView, DeviceProgress, DeviceView, TargetSpec,
    UploadMetadata,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// The app and version the benchmark deploys.
const APP: &str = "sim-app";
const VERSION: &str = "1.0.0";

/// What a run needs to know.
pub struct Plan {
    /// Number of simulated devices.
    pub devices: usize,
    /// Broker label for the report.
    pub broker: String,
    /// fleetd's HTTP base URL.
    pub http: String,
    /// The broker the devices connect to.
    pub mqtt_host: String,
    /// Its port.
    pub mqtt_port: u16,
    /// New connections per second (0: only bounded by `connect_concurrency`).
    pub connect_rate: f64,
    /// MQTT handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// The deployment strategy (`None`: all at once).
    pub strategy: Option<fleet_schema::api::StrategySpec>,
    /// fleetd's process id, to read its CPU time.
    pub fleetd_pid: Option<u32>,
}

/// Where a run stands, so a timeout or error can say how far it got.
#[derive(Default)]
pub struct Phase {
    step: Mutex<&'static str>,
    received: AtomicUsize,
    acked: AtomicUsize,
    api_succeeded: AtomicUsize,
}

impl Phase {
    /// The current step, with the deployment counters once it started.
    pub fn describe(&self, devices: usize) -> String {
        let step = *self
            .step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if step != DEPLOYING {
            return step.to_string();
        }
        format!(
            "{step}: desired state received by {}/{devices} devices, new version acknowledged \
             for {}/{devices}, API reports {}/{devices} succeeded",
            self.received.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.api_succeeded.load(Ordering::Relaxed),
        )
    }
}

const DEPLOYING: &str = "deploying";

fn enter(phase: &Phase, step: &'static str) {
    *phase
        .step
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = step;
}

fn bar(show: bool, len: usize, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs the benchmark against an already started fleetd.
pub async fn run(plan: &Plan, phase: &Phase) -> Result<Report> {
    let n = plan.devices;
    let api = Api::new(&plan.http);
    let (tx, mut events) = mpsc::unbounded_channel::<SimEvent>();
    let shared = Arc::new(FleetShared {
        host: plan.mqtt_host.clone(),
        port: plan.mqtt_port,
        app: APP.into(),
        version: VERSION.into(),
        events: tx,
        connection_errors: Default::default(),
        bad_payloads: Default::default(),
    });

    enter(phase, "connecting the simulated devices");
    let cpu = || plan.fleetd_pid.and_then(crate::cpu::cpu_seconds);
    let cpu_start = cpu();
    let started = Instant::now();
    let spawner = tokio::spawn(spawn_fleet(
        n,
        Arc::clone(&shared),
        plan.connect_rate,
        plan.connect_concurrency,
    ));
    let connecting = bar(
        plan.progress,
        n,
        "connecting [{bar:40}] {pos}/{len} ({elapsed})",
    );
    let mut connected = 0;
    while connected < n {
        let ev = events.recv().await.context("device event channel closed")?;
        if ev.kind == SimEventKind::Connected {
            connected += 1;
            connecting.inc(1);
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    connecting.finish_and_clear();
    let _fleet: JoinSet<()> = spawner.await.context("spawning the fleet")??;

    enter(phase, "waiting until fleetd lists every device");
    loop {
        let devices: Vec<DeviceView> = api.get("/api/v1/devices").await?;
        let online = devices
            .iter()
            .filter(|d| d.online && d.id.starts_with("sim-"))
            .count();
        if online >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registered_s = started.elapsed().as_secs_f64();
    let cpu_registered = cpu();

    enter(phase, "uploading the artifact");
    let meta = UploadMetadata {
        name: APP.into(),
        version: VERSION.into(),
        kind: "binary".into(),
        platform: None,
        platforms: Vec::new(),
        labels: BTreeMap::new(),
        ..Default::default()
    };
    api.upload(meta, b"#!/bin/sh\necho fleet-sim\n".to_vec())
        .await
        .context("uploading the benchmark artifact")?;

    enter(phase, DEPLOYING);
    let request = CreateDeployment {
        application: APP.into(),
        version: VERSION.into(),
        strategy: plan.strategy.clone(),
        target: TargetSpec {
            devices: Vec::new(),
            selector: BTreeMap::from([("sim".to_string(), "1".to_string())]),
            ..TargetSpec::default()
        },
    };
    let cpu_deploy_start = cpu();
    let t0 = Instant::now();
    let created: DeploymentCreated = api.post("/api/v1/deployments", request).await?;
    let create_deployment_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if created.devices.len() != n {
        bail!(
            "deployment {} targets {} devices, expected {n}",
            created.id,
            created.devices.len()
        );
    }
    let converging = bar(
        plan.progress,
        n,
        "deploying  [{bar:40}] {pos}/{len} reported {msg} ({elapsed})",
    );
    let (sim, api_ms) = tokio::try_join!(
        collect_sim_side(&mut events, n, t0, &converging, phase),
        poll_until_succeeded(&api, &created.id, n, t0, &converging, phase),
    )?;
    converging.finish_and_clear();
    let cpu_end = cpu();
    let view: DeploymentView = api
        .get(&format!("/api/v1/deployments/{}", created.id))
        .await?;
    let step_sizes = cumulative_steps(&view);
    let per_change_ms =
        |from: Option<f64>, to: Option<f64>| from.zip(to).map(|(a, b)| (b - a) * 1000.0 / n as f64);

    Ok(Report {
        machine: Machine::detect(),
        broker: plan.broker.clone(),
        devices: n,
        connect_s,
        registered_s,
        create_deployment_ms,
        desired_received: Spread::of(&sim.0),
        new_version_reported: Spread::of(&sim.1),
        api_all_succeeded_ms: api_ms,
        connection_errors: shared.connection_errors.load(Ordering::Relaxed),
        bad_payloads: shared.bad_payloads.load(Ordering::Relaxed),
        strategy: plan
            .strategy
            .as_ref()
            .map_or_else(|| "all-at-once".to_string(), |s| s.kind.clone()),
        step_sizes,
        fleetd_cpu_ms_per_registration: per_change_ms(cpu_start, cpu_registered),
        fleetd_cpu_ms_per_update: per_change_ms(cpu_deploy_start, cpu_end),
    })
}

/// Devices updated by the end of each rollout step (cumulative), as fleetd reports them.
fn cumulative_steps(view: &DeploymentView) -> Vec<usize> {
    view.rollout
        .iter()
        .flat_map(|r| r.steps.iter())
        .scan(0, |total, s| {
            *total += s.devices.len();
            Some(*total)
        })
        .collect()
}

/// Starts the device tasks at the configured rate, at most `concurrency` handshakes at once.
async fn spawn_fleet(
    n: usize,
    shared: Arc<FleetShared>,
    rate: f64,
    concurrency: usize,
) -> Result<JoinSet<()>> {
    let handshakes = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pace = (rate > 0.0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    let mut set = JoinSet::new();
    for index in 0..n {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let permit = Arc::clone(&handshakes)
            .acquire_owned()
            .await
            .map_err(|e| anyhow!("handshake limiter closed: {e}"))?;
        set.spawn(run_device(
            index,
            device_id(index, n),
            Arc::clone(&shared),
            Some(permit),
        ));
    }
    Ok(set)
}

/// Per-device latencies since `t0`: (desired state received, new version acknowledged).
type SimLatencies = (Vec<Duration>, Vec<Duration>);

async fn collect_sim_side(
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
    n: usize,
    t0: Instant,
    bar: &ProgressBar,
    phase: &Phase,
) -> Result<SimLatencies> {
    let mut received = vec![None; n];
    let mut acked = vec![None; n];
    let (mut r, mut a) = (0, 0);
    while r < n || a < n {
        let ev = events.recv().await.context("device event channel closed")?;
        let slot = match ev.kind {
            SimEventKind::DesiredReceived => &mut received[ev.device],
            SimEventKind::NewVersionAcked => &mut acked[ev.device],
            SimEventKind::Connected => continue,
        };
        if slot.is_none() {
            *slot = Some(ev.at.saturating_duration_since(t0));
            match ev.kind {
                SimEventKind::DesiredReceived => {
                    r += 1;
                    phase.received.store(r, Ordering::Relaxed);
                }
                _ => {
                    a += 1;
                    phase.acked.store(a, Ordering::Relaxed);
                    bar.inc(1);
                }
            }
        }
    }
    Ok((
        received.into_iter().flatten().collect(),
        acked.into_iter().flatten().collect(),
    ))
}

/// Polls the deployment every 100 ms until all `n` devices succeeded; returns ms since `t0`.
async fn poll_until_succeeded(
    api: &Api,
    id: &str,
    n: usize,
    t0: Instant,
    bar: &ProgressBar,
    phase: &Phase,
) -> Result<f64> {
    let path = format!("/api/v1/deployments/{id}");
    loop {
        let view: DeploymentView = api.get(&path).await?;
        let succeeded = view
            .devices
            .values()
            .filter(|p| matches!(p, DeviceProgress::Succeeded))
            .count();
        phase.api_succeeded.store(succeeded, Ordering::Relaxed);
        bar.set_message(format!("· API {succeeded} succeeded"));
        if succeeded >= n {
            return Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if view.state == "failed" {
            bail!(
                "deployment {id} failed: {:?}",
                view.devices
                    .values()
                    .find(|p| matches!(p, DeviceProgress::Failed { .. }))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
