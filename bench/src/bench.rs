//! The measured part of a run: connect the simulated fleet, wait until fleetd knows every
//! device, upload an artifact, deploy it to `sim=1`, and time how fast the fleet converges.

use crate::api::Api;
use crate::cpu::CpuProbe;
use crate::deploy::{self, Watch};
use crate::fleet::{device_id, run_device, FleetShared, SimEvent, SimEventKind};
use crate::report::{CpuFigures, Machine, RepeatRound, Report, Spread, UpdateCpu};
use anyhow::{anyhow, bail, Context, Result};
use fleet_schema::api::{
    CreateDeployment, DeploymentCreated, DeploymentView, DeviceView, TargetSpec, UploadMetadata,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// The app and version the benchmark deploys.
pub(crate) const APP: &str = "sim-app";
const VERSION: &str = "1.0.0";
/// The version of the second, steady-state deployment.
const VERSION_2: &str = "2.0.0";

/// Least time between two polls of the device list while the fleet registers.
const REGISTRATION_POLL: Duration = Duration::from_millis(200);

/// What a run needs to know.
pub struct Plan {
    /// Number of simulated devices.
    pub devices: usize,
    /// Broker label for the report.
    pub broker: String,
    /// fleetd's HTTP base URL.
    pub http: String,
    /// The admin token fleetd was started with.
    pub token: String,
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
    /// The processes whose CPU time is read (fleetd, and Mosquitto when used).
    pub cpu: CpuProbe,
    /// The simulated devices' MQTT keep-alive.
    pub keep_alive: Duration,
    /// The simulated devices' connection timeout (TCP connect plus ConnAck).
    pub connect_timeout: Duration,
    /// Also measure the metrics bridge (devices report metrics, `/metrics` is scraped).
    pub scrape: bool,
}

/// Where a run stands, so a timeout or error can say how far it got.
#[derive(Default)]
pub struct Phase {
    step: Mutex<&'static str>,
    /// Devices that received the desired state.
    pub(crate) received: AtomicUsize,
    /// Devices whose new-version status the broker acknowledged.
    pub(crate) acked: AtomicUsize,
    /// Devices the API reports succeeded.
    pub(crate) api_succeeded: AtomicUsize,
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

pub(crate) const DEPLOYING: &str = "deploying";

pub(crate) fn enter(phase: &Phase, step: &'static str) {
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

/// A fleet enrolled, connected and listed online by fleetd, with the timings of getting there.
pub struct ConnectedFleet {
    /// fleetd's API as the admin.
    pub api: Api,
    /// Settings and sinks shared by the devices.
    pub shared: Arc<FleetShared>,
    /// The devices' timing events.
    pub events: mpsc::UnboundedReceiver<SimEvent>,
    /// The device tasks (aborted when dropped).
    pub tasks: JoinSet<()>,
    /// Seconds to enroll every device.
    pub enroll_s: f64,
    /// fleetd CPU per enrollment.
    pub enrollment: crate::cpu::CpuSample,
    /// Seconds until every device had its first ConnAck.
    pub connect_s: f64,
    /// Seconds until fleetd listed every device online.
    pub registered_s: f64,
    /// CPU counters when the devices started connecting.
    pub cpu_start: crate::cpu::CpuSample,
    /// CPU counters when fleetd listed every device online.
    pub cpu_registered: crate::cpu::CpuSample,
}

/// Enrolls the plan's devices, connects them (`prepare` sets up the shared state first, e.g.
/// the metrics flow or churn) and waits until fleetd lists every one online.
pub async fn connect_fleet(
    plan: &Plan,
    phase: &Phase,
    prepare: impl FnOnce(&mut FleetShared),
) -> Result<ConnectedFleet> {
    let n = plan.devices;
    let api = Api::new(&plan.http, &plan.token);

    enter(phase, "enrolling the simulated devices");
    let created: fleet_schema::trust::tokens::EnrollTokenCreated = api
        .post(
            "/api/v1/enrollment-tokens",
            fleet_schema::trust::tokens::CreateEnrollToken {
                name: "fleet-sim".into(),
                ..Default::default()
            },
        )
        .await?;
    let enrolling = bar(
        plan.progress,
        n,
        "enrolling [{bar:40}] {pos}/{len} ({elapsed})",
    );
    let enroll_started = Instant::now();
    let cpu_enroll_start = plan.cpu.sample();
    let (http, token, bar2) = (plan.http.clone(), created.token, enrolling.clone());
    let ends =
        tokio::task::spawn_blocking(move || crate::enroll::enroll_fleet(&http, &token, n, &bar2))
            .await
            .map_err(|e| anyhow!("enrollment workers failed: {e}"))??;
    let enroll_s = enroll_started.elapsed().as_secs_f64();
    let enrollment = plan.cpu.sample().since(&cpu_enroll_start).ms_per(n);
    enrolling.finish_and_clear();
    // With Mosquitto, fleetd writes the password file and reloads the broker shortly after the
    // last enrollment; devices that connect before that are refused and retry.
    let (tx, mut events) = mpsc::unbounded_channel::<SimEvent>();
    let mut shared = FleetShared::new(
        (plan.mqtt_host.clone(), plan.mqtt_port),
        (APP, VERSION),
        tx,
        plan.keep_alive,
        plan.connect_timeout,
    );
    prepare(&mut shared);
    let shared = Arc::new(shared);
    enter(phase, "connecting the simulated devices");
    let cpu_start = plan.cpu.sample();
    let started = Instant::now();
    let spawner = tokio::spawn(spawn_fleet(
        ends,
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
    let tasks: JoinSet<()> = spawner.await.context("spawning the fleet")??;

    enter(phase, "waiting until fleetd lists every device");
    loop {
        let asked = Instant::now();
        let devices: Vec<DeviceView> = api.get("/api/v1/devices").await?;
        let online = devices
            .iter()
            .filter(|d| d.online && d.id.starts_with("sim-"))
            .count();
        if online >= n {
            break;
        }
        tokio::time::sleep(deploy::poll_pause(asked.elapsed()).max(REGISTRATION_POLL)).await;
    }
    let registered_s = started.elapsed().as_secs_f64();
    let cpu_registered = plan.cpu.sample();
    Ok(ConnectedFleet {
        api,
        shared,
        events,
        tasks,
        enroll_s,
        enrollment,
        connect_s,
        registered_s,
        cpu_start,
        cpu_registered,
    })
}

/// Runs the benchmark against an already started fleetd.
pub async fn run(plan: &Plan, phase: &Phase) -> Result<Report> {
    let n = plan.devices;
    let ConnectedFleet {
        api,
        shared,
        mut events,
        tasks: _fleet,
        enroll_s,
        enrollment,
        connect_s,
        registered_s,
        cpu_start,
        cpu_registered,
    } = connect_fleet(plan, phase, |shared| {
        if plan.scrape {
            shared.metrics.enable();
        }
    })
    .await?;

    let first = deploy_round(plan, phase, &api, &mut events, VERSION).await?;
    enter(phase, "measuring fleetd's idle and API polling cost");
    let overheads = deploy::overheads(&api, &first.id, plan.cpu).await?;
    // A second deployment to the same fleet: topics, subscriptions and retained messages now
    // exist, so this is the steady-state cost of a release.
    shared.set_version(VERSION_2);
    for c in [&phase.received, &phase.acked, &phase.api_succeeded] {
        c.store(0, Ordering::Relaxed);
    }
    let repeat = deploy_round(plan, phase, &api, &mut events, VERSION_2).await?;
    let registration = cpu_registered.since(&cpu_start).ms_per(n);
    let figures = |r: &Round| {
        let update = r.api_side.cpu_at_done.since(&r.cpu_start).ms_per(n);
        let polling_ms_per_device = overheads
            .ms_per_poll
            .map(|ms| ms * r.api_side.polls as f64 / n as f64);
        UpdateCpu {
            fleetd_ms_per_update: update.fleetd,
            fleetd_ms_per_update_excl_polls: update
                .fleetd
                .zip(polling_ms_per_device)
                .map(|(all, polls)| (all - polls).max(0.0)),
            mosquitto_ms_per_update: update.mosquitto,
            sim_ms_per_update: update.sim,
            api_polls: r.api_side.polls,
        }
    };
    let (u1, u2) = (figures(&first), figures(&repeat));
    let cpu = CpuFigures {
        fleetd_ms_per_enrollment: enrollment.fleetd,
        fleetd_ms_per_registration: registration.fleetd,
        fleetd_ms_per_update: u1.fleetd_ms_per_update,
        fleetd_ms_per_update_excl_polls: u1.fleetd_ms_per_update_excl_polls,
        mosquitto_ms_per_registration: registration.mosquitto,
        mosquitto_ms_per_update: u1.mosquitto_ms_per_update,
        sim_ms_per_update: u1.sim_ms_per_update,
        api_polls: u1.api_polls,
        fleetd_ms_per_api_poll: overheads.ms_per_poll,
        fleetd_idle_percent: overheads.idle_percent,
    };
    let repeat_report = RepeatRound {
        api_all_succeeded_ms: repeat.api_side.all_succeeded_ms,
        step_sizes: repeat.step_sizes.clone(),
        missing_acks: repeat.sim.missing_acks,
        cpu: u2,
    };
    let scrape = if plan.scrape {
        enter(phase, "measuring the metrics bridge");
        Some(crate::scrape::measure(&plan.http, &plan.token, plan.cpu.fleetd, &shared).await?)
    } else {
        None
    };
    let errors = shared.errors.snapshot();

    Ok(Report {
        machine: Machine::detect(),
        broker: plan.broker.clone(),
        devices: n,
        keep_alive_s: plan.keep_alive.as_secs(),
        connect_timeout_s: plan.connect_timeout.as_secs(),
        enroll_s,
        connect_s,
        registered_s,
        create_deployment_ms: first.create_ms,
        desired_received: Spread::of(&first.sim.received),
        new_version_reported: Spread::of(&first.sim.acked),
        api_all_succeeded_ms: first.api_side.all_succeeded_ms,
        missing_desired: first.sim.missing_desired,
        missing_acks: first.sim.missing_acks,
        connection_errors: errors.values().sum(),
        connection_error_kinds: errors,
        duplicate_client_id_drops: None,
        bad_payloads: shared.bad_payloads.load(Ordering::Relaxed),
        strategy: plan
            .strategy
            .as_ref()
            .map_or_else(|| "all-at-once".to_string(), |s| s.kind.clone()),
        step_sizes: first.step_sizes,
        cpu,
        repeat: repeat_report,
        scrape,
    })
}

/// One measured deployment of `version` to the whole fleet.
struct Round {
    id: String,
    create_ms: f64,
    cpu_start: crate::cpu::CpuSample,
    sim: deploy::SimSide,
    api_side: deploy::ApiSide,
    step_sizes: Vec<usize>,
}

/// Uploads `version`, deploys it with the plan's strategy to every simulated device, and
/// measures until the API reports every device succeeded.
async fn deploy_round(
    plan: &Plan,
    phase: &Phase,
    api: &Api,
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
    version: &str,
) -> Result<Round> {
    let n = plan.devices;
    enter(phase, "uploading the artifact");
    let meta = UploadMetadata {
        name: APP.into(),
        version: version.into(),
        kind: "binary".into(),
        platform: None,
        platforms: Vec::new(),
        labels: BTreeMap::new(),
        ..Default::default()
    };
    let body = format!("#!/bin/sh\necho fleet-sim {version}\n").into_bytes();
    api.upload(meta, body)
        .await
        .context("uploading the benchmark artifact")?;

    enter(phase, DEPLOYING);
    let request = CreateDeployment {
        application: APP.into(),
        version: version.into(),
        strategy: plan.strategy.clone(),
        target: TargetSpec {
            devices: Vec::new(),
            selector: BTreeMap::from([("sim".to_string(), "1".to_string())]),
            ..TargetSpec::default()
        },
    };
    let cpu_start = plan.cpu.sample();
    let t0 = Instant::now();
    let created: DeploymentCreated = api.post("/api/v1/deployments", request).await?;
    let create_ms = t0.elapsed().as_secs_f64() * 1000.0;
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
    let watch = Watch {
        api,
        id: &created.id,
        n,
        t0,
        bar: &converging,
        phase,
        probe: plan.cpu,
    };
    let (sim, api_side) = deploy::measure(&watch, events).await?;
    converging.finish_and_clear();
    let view: DeploymentView = api
        .get(&format!("/api/v1/deployments/{}", created.id))
        .await?;
    Ok(Round {
        id: created.id,
        create_ms,
        cpu_start,
        sim,
        api_side,
        step_sizes: cumulative_steps(&view),
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
    ends: Vec<fleet_schema::trust::device::DeviceEnd>,
    shared: Arc<FleetShared>,
    rate: f64,
    concurrency: usize,
) -> Result<JoinSet<()>> {
    let n = ends.len();
    let handshakes = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pace = (rate > 0.0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    let mut set = JoinSet::new();
    for (index, end) in ends.into_iter().enumerate() {
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
            end,
            Arc::clone(&shared),
            Some(permit),
        ));
    }
    Ok(set)
}
