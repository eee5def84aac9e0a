//! The agent's I/O shell: one event loop that owns all state, feeds events into the pure
//! supervisors and reconciler, carries out the actions they return ([`actions`]) and publishes
//! the resulting status. Every effect on the device (download, install, launch, signal,
//! persist, probe the file system) goes through one [`executor::Executor`]: on a device the
//! [`device::DeviceExecutor`], in the unit tests a fake. Event handling takes the time as an
//! argument (`now`) instead of reading the clock (only timestamps put on the wire read the
//! wall clock). Everything slow (downloads, installs, waiting for
//! processes) runs in tasks that report back as [`Event`]s, so the loop never blocks for long.
//!
//! Files: `mod.rs` the loop and state; `actions.rs` reconciler actions and supervisor effects;
//! `startup.rs` restoring state and adopting processes; `messages.rs` desired states and
//! controller messages; `trust.rs` opening sealed messages, re-enrollment; `status.rs` the
//! observed state and the status; `probing.rs` health probes; `routing.rs` blue-green traffic;
//! `units.rs` systemd apps; `telemetry_loop.rs` logs and metrics; `executor.rs` the effects
//! interface, `device.rs` and `device_systemd.rs` its implementation on the device; `tests/`
//! the loop's unit tests on a fake executor.

mod actions;
pub mod device;
mod device_systemd;
pub mod executor;
mod messages;
mod probing;
mod routing;
mod startup;
mod status;
mod telemetry_loop;
mod trust;
mod units;

#[cfg(test)]
mod tests;

use crate::bus::{self, BusEvent, PubCmd};
use crate::config::Config;
use crate::reconcile::{self, AppObserved};
use crate::runtime::health::HealthTracker;
use crate::store::{ProcRecord, Store};
use crate::supervisor::{self, Policy, Supervisor};
use crate::telemetry::spool::Spool;
use executor::Executor;
use fleet_schema::backoff::Backoff;
use fleet_schema::{AppSpec, DesiredState, DeviceStatus, Inventory};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// First retry delay after a failed download or install.
pub const FETCH_RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Longest retry delay after failed downloads or installs.
pub const FETCH_RETRY_MAX: Duration = Duration::from_secs(300);
/// How often an adopted process (not our child) is checked for liveness.
pub const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// Longest wait for the offline status and disconnect to go out at shutdown.
const SHUTDOWN_PUBLISH_WAIT: Duration = Duration::from_secs(3);

/// Why fetching a version failed.
#[derive(Debug)]
pub struct FetchFailure {
    /// The error, as reported in `last_error`.
    pub error: String,
    /// Worth retrying without counting as the device's failure (see
    /// [`crate::fetch::download::DownloadError::is_transient`]).
    pub transient: bool,
}

/// Something that happened, reported to the event loop.
#[derive(Debug)]
pub enum Event {
    /// From the MQTT session.
    Bus(BusEvent),
    /// A download finished.
    Downloaded {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// The failure; `None` when cancelled by shutdown.
        result: Result<(), Option<FetchFailure>>,
    },
    /// An install finished.
    Installed {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// The failure, with whether it is worth retrying.
        result: Result<(), FetchFailure>,
    },
    /// A supervised process ended.
    Exited {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// Which process.
        pid: u32,
        /// How it ended.
        how: String,
    },
    /// A health probe finished.
    Probed {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// The process probed.
        pid: u32,
        /// The verdict.
        result: Result<(), String>,
    },
    /// The answer to a re-enrollment request.
    Reenrolled(crate::identity::enroll::Attempt),
    /// A report of the task following a systemd unit (see `daemon/units.rs`).
    Unit {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// Which start of the unit reports (stale reports are ignored).
        token: u64,
        /// What happened, as the supervisor takes it.
        event: supervisor::SupEvent,
    },
}

/// Per-app state kept by the shell.
#[derive(Debug)]
struct AppState {
    obs: AppObserved,
    retry: Backoff,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            obs: AppObserved::default(),
            retry: Backoff::new(FETCH_RETRY_INITIAL, FETCH_RETRY_MAX),
        }
    }
}

/// A supervisor and the recorded identity of its current process.
#[derive(Debug)]
struct SupEntry {
    sup: Supervisor,
    record: Option<ProcRecord>,
    /// Health of the current process, when the app has a health check.
    health: Option<HealthTracker>,
    /// When the current process started (or was adopted), for uptime.
    started: Option<Instant>,
    /// Since when the supervisor has reported it running (blue-green validation).
    running_since: Option<Instant>,
    /// Service port to the internal port this instance listens on (blue-green with ports).
    ports: BTreeMap<u16, u16>,
}

impl SupEntry {
    fn new(sup: Supervisor) -> Self {
        Self {
            sup,
            record: None,
            health: None,
            started: None,
            running_since: None,
            ports: BTreeMap::new(),
        }
    }
}

/// The running agent.
pub struct Daemon {
    cfg: Config,
    /// Carries out every effect on the device.
    exec: Box<dyn Executor>,
    /// The desired state as accepted (signed, stored, reported on).
    accepted: Option<DesiredState>,
    /// What the agent works on: `accepted` with every multi-component app expanded into one
    /// unit per component (`crate::components`).
    desired: Option<DesiredState>,
    apps: BTreeMap<String, AppState>,
    sups: BTreeMap<(String, String), SupEntry>,
    status: watch::Sender<DeviceStatus>,
    publisher: mpsc::UnboundedSender<PubCmd>,
    inventory: Inventory,
    rejected_payloads: u64,
    last_controller_at: Option<u64>,
    /// fleetd's HTTP base URL from its presence message (for fresh download URLs).
    controller_url: Option<String>,
    shutting_down: bool,
    telem: telemetry_loop::Telem,
    /// Blue-green traffic forwarders by app and service port.
    traffic: BTreeMap<String, BTreeMap<u16, crate::traffic::forward::Forwarder>>,
    /// Apps that run as systemd units.
    units: units::Units,
    /// Pinned controller key, bus key, refusals, re-enrollment.
    trust: trust::AgentTrust,
}

/// Completes on SIGTERM or SIGINT, naming which.
async fn stop_signal() -> std::io::Result<&'static str> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    })
}

/// Runs the agent until SIGTERM or SIGINT, then stops the apps and goes offline. A device that
/// has not enrolled yet enrolls first (and exits cleanly if stopped while waiting).
pub async fn run(cfg: Config, store: Store) -> std::io::Result<()> {
    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    let (bus_tx, mut bus_rx) = mpsc::unbounded_channel();
    let (pub_tx, pub_rx) = mpsc::unbounded_channel();
    let mut exec = device::DeviceExecutor::new(&cfg, store, event_tx.clone());
    let inventory = exec.inventory(&cfg.labels);
    let key = Arc::new(
        crate::identity::load_or_create_key(&crate::layout::device_key(&cfg.data_dir))
            .map_err(std::io::Error::other)?,
    );
    let record_path = crate::layout::enrollment(&cfg.data_dir);
    let existing = crate::identity::record::EnrollmentRecord::load(&record_path)
        .map_err(std::io::Error::other)?;
    let mut asker = crate::identity::enroll::Asker {
        server: cfg.server.clone(),
        device: cfg.device_id.clone(),
        key: key.clone(),
        token: cfg.enroll_token.as_ref().map(|t| t.0.clone()),
        pinned: None,
        last_at: existing.as_ref().map_or(0, |r| r.last_request_at),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let record = match existing {
        Some(r) => r,
        None => {
            tracing::info!(device = %cfg.device_id, key_id = key.id(), server = %cfg.server, token = cfg.enroll_token.is_some(), "not enrolled yet; enrolling");
            let stop = async {
                let _ = stop_signal().await;
            };
            let Some(rec) =
                crate::identity::enroll_until_accepted(asker.clone(), inventory.clone(), stop)
                    .await
            else {
                tracing::info!("stopped before enrollment completed");
                return Ok(());
            };
            rec.save(&record_path).map_err(std::io::Error::other)?;
            rec
        }
    };
    asker.pinned = Some(record.controller().map_err(std::io::Error::other)?);
    asker.last_at = record.last_request_at;
    let creds = bus::Credentials {
        username: record.mqtt_username.clone(),
        password: record.mqtt_password.clone(),
    };
    let (creds_tx, creds_rx) = watch::channel(creds.clone());
    let signer = Arc::new(crate::identity::signer::Signer::new(
        key.clone(),
        crate::layout::bus_epoch(&cfg.data_dir),
    ));
    let session = bus::Session {
        device: cfg.device_id.clone(),
        url: cfg.mqtt.clone(),
        tls: if cfg.mqtt.tls {
            Some(crate::tls::client_config(&cfg.tls).map_err(std::io::Error::other)?)
        } else {
            None
        },
        signer: signer.clone(),
    };
    let trust = trust::AgentTrust::new(record, asker, creds_tx).map_err(std::io::Error::other)?;
    let counters_secret =
        crate::identity::load_or_create_secret(&crate::layout::counters_secret(&cfg.data_dir))
            .map_err(std::io::Error::other)?;
    let cfg_telemetry = cfg.telemetry.clone();
    let counter_limits = cfg.limits.counters;
    let spool = match Spool::open(&cfg.data_dir.join("spool"), cfg.telemetry.spool) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the offline backlog; telemetry is not kept while offline");
            None
        }
    };
    let (status_tx, status_rx) = watch::channel(bus::offline_status(&cfg.device_id));
    let (client, eventloop) = rumqttc::AsyncClient::new(bus::options(&session, &creds), 64);
    let mut daemon = Daemon {
        cfg,
        exec: Box::new(exec),
        accepted: None,
        desired: None,
        apps: BTreeMap::new(),
        sups: BTreeMap::new(),
        status: status_tx,
        publisher: pub_tx,
        inventory,
        rejected_payloads: 0,
        last_controller_at: None,
        controller_url: None,
        shutting_down: false,
        telem: telemetry_loop::Telem::new(
            cfg_telemetry,
            counters_secret,
            counter_limits,
            Instant::now(),
        ),
        traffic: BTreeMap::new(),
        units: units::Units::default(),
        trust,
    };
    match crate::telemetry::counters::serve(
        &daemon.cfg.telemetry.metrics_listen,
        daemon.telem.counters.clone(),
    )
    .await
    {
        Ok(url) => {
            tracing::info!(%url, "app counters endpoint listening");
            daemon.telem.metrics_base = Some(url);
        }
        Err(e) => tracing::warn!(error = %e, "cannot start the app counters endpoint"),
    }
    daemon.restore(Instant::now());
    daemon.step(Instant::now());
    let poll = tokio::spawn(bus::poll_loop(eventloop, session, creds_rx, bus_tx));
    let publisher = tokio::spawn(bus::publisher(
        client,
        daemon.cfg.device_id.clone(),
        signer,
        status_rx,
        pub_rx,
        spool,
    ));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tracing::info!(device = %daemon.cfg.device_id, "agent started");

    let stop_by = loop {
        let now = Instant::now();
        let wake = daemon.next_deadline(now);
        tokio::select! {
            Some(ev) = event_rx.recv() => daemon.handle(ev, Instant::now()),
            Some(ev) = bus_rx.recv() => daemon.handle(Event::Bus(ev), Instant::now()),
            _ = sleep_until(wake) => {}
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
        daemon.step(Instant::now());
    };

    tracing::info!(signal = stop_by, "stopping apps");
    daemon.begin_shutdown(Instant::now());
    let longest_grace = daemon
        .sups
        .values()
        .map(|e| e.sup.policy().stop_grace)
        .max()
        .unwrap_or(supervisor::STOP_GRACE);
    let give_up = Instant::now() + longest_grace + Duration::from_secs(3);
    while daemon.any_live() && Instant::now() < give_up {
        let wake = daemon
            .next_deadline(Instant::now())
            .map_or(give_up, |t| t.min(give_up));
        tokio::select! {
            Some(ev) = event_rx.recv() => daemon.handle(ev, Instant::now()),
            Some(ev) = bus_rx.recv() => daemon.handle(Event::Bus(ev), Instant::now()),
            _ = sleep_until(Some(wake)) => {}
        }
        daemon.step(Instant::now());
    }
    let (done_tx, done_rx) = oneshot::channel();
    let _ = daemon.publisher.send(PubCmd::Shutdown(
        Box::new(bus::offline_status(&daemon.cfg.device_id)),
        done_tx,
    ));
    let _ = tokio::time::timeout(SHUTDOWN_PUBLISH_WAIT, done_rx).await;
    let _ = tokio::time::timeout(SHUTDOWN_PUBLISH_WAIT, poll).await;
    publisher.abort();
    tracing::info!("agent stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let sups = self.sups.values().filter_map(|e| e.sup.deadline());
        let probes = self
            .sups
            .values()
            .filter_map(|e| e.health.as_ref().and_then(HealthTracker::deadline));
        let retry = reconcile::next_retry(&self.observed()).filter(|t| *t > now);
        sups.chain(probes)
            .chain(retry)
            .chain(self.bluegreen_deadline(now))
            .chain(std::iter::once(self.telem.deadline()))
            .min()
    }

    fn any_live(&self) -> bool {
        self.sups.values().any(|e| e.sup.is_live())
    }

    fn handle(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Bus(b) => self.on_bus(b, now),
            Event::Downloaded {
                app,
                version,
                result,
            } => self.on_downloaded(&app, &version, result, now),
            Event::Installed {
                app,
                version,
                result,
            } => self.on_installed(&app, &version, result, now),
            Event::Exited {
                app,
                version,
                pid,
                how,
            } => self.on_exited(&app, &version, pid, how, now),
            Event::Probed {
                app,
                version,
                pid,
                result,
            } => self.on_probed(&app, &version, pid, result, now),
            Event::Unit {
                app,
                version,
                token,
                event,
            } => self.on_unit(&app, &version, token, event, now),
            Event::Reenrolled(outcome) => self.on_reenrolled(outcome),
        }
    }

    /// The spec of an app as the desired state gives it (defaults when it is not desired).
    fn spec_for(&self, app: &str) -> AppSpec {
        self.desired
            .as_ref()
            .and_then(|d| d.apps.iter().find(|a| a.name == app))
            .map(|a| a.spec.clone())
            .unwrap_or_default()
    }

    /// Takes `d` as the accepted desired state (and its units as the one to work on).
    fn accept(&mut self, d: Option<DesiredState>) {
        self.desired = d.as_ref().map(crate::components::expand);
        self.accepted = d;
    }

    /// The supervisor policy of an app.
    fn policy_for(&self, app: &str) -> Policy {
        Policy::from_spec(&self.spec_for(app))
    }

    /// Lets time pass for the supervisors, reconciles, records progress and publishes.
    fn step(&mut self, now: Instant) {
        let keys: Vec<(String, String)> = self.sups.keys().cloned().collect();
        for key in keys {
            let effects = match self.sups.get_mut(&key) {
                Some(e) => e.sup.on_tick(now),
                None => continue,
            };
            self.run_effects(&key, effects, now);
        }
        self.start_probes(now);
        self.route_traffic(now);
        if !self.shutting_down {
            for _ in 0..4 {
                let actions = reconcile::reconcile(self.desired.as_ref(), &self.observed(), now);
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    self.execute(action, now);
                }
            }
        }
        self.settle_units();
        self.sups.retain(|_, e| !e.sup.is_stopped());
        self.route_traffic(now);
        self.record_current();
        self.telemetry_tick(now);
        self.publish_status();
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.exec.cancel_downloads();
        self.release_units();
        let keys: Vec<(String, String)> = self.sups.keys().cloned().collect();
        for key in keys {
            self.sup_event(&key, supervisor::SupEvent::Stop, now);
        }
        self.step(now);
    }
}
