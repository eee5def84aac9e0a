//! The daemon's event handling on a fake executor and a simulated clock: each test sets up what
//! the device persisted, feeds the daemon the events the real executor would report, and checks
//! the effects it asked for, the status it would publish and what it persisted.

mod fake;
mod scenarios;

use super::executor::Executor;
use super::{telemetry_loop, trust, units, Daemon, Event, FetchFailure};
use crate::bus::Credentials;
use crate::config::{Cli, Config};
use crate::identity::enroll::Asker;
use crate::identity::record::EnrollmentRecord;
use crate::store::{AppRecord, ProcRecord};
use fake::{Call, FakeExecutor, World};
use fleet_schema::trust::SigningKey;
use fleet_schema::{
    AppStatus, ArtifactRef, ArtifactType, DesiredApp, DesiredState, DeviceStatus, Inventory,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const DEVICE: &str = "dev-1";

/// A desired state for this device with the given apps and versions.
fn desired(generation: u64, apps: &[(&str, &str)]) -> DesiredState {
    DesiredState {
        device_id: DEVICE.into(),
        generation,
        apps: apps
            .iter()
            .map(|(name, version)| DesiredApp {
                name: (*name).into(),
                version: (*version).into(),
                artifact: ArtifactRef {
                    name: (*name).into(),
                    version: (*version).into(),
                    kind: ArtifactType::Binary,
                    size: 1,
                    sha256: "00".into(),
                    url: format!("http://store.invalid/{name}/{version}"),
                    ..Default::default()
                },
                deployment_id: None,
                spec: Default::default(),
                rollout: None,
                components: Vec::new(),
            })
            .collect(),
        issued_at: 0,
    }
}

/// A world where the agent had accepted `want`, installed `on_disk` versions of `app`, made
/// `current` its current one and left `running` (version, pid) running.
fn world(
    want: DesiredState,
    app: &str,
    on_disk: &[&str],
    current: &str,
    running: Option<(&str, u32)>,
) -> World {
    let mut w = World {
        desired: Some(want),
        next_pid: 1000,
        ..World::default()
    };
    w.apps.insert(
        app.into(),
        AppRecord {
            installed: on_disk.iter().map(|v| (*v).to_string()).collect(),
            current: Some(current.into()),
        },
    );
    w.on_disk = on_disk
        .iter()
        .map(|v| (app.to_string(), (*v).to_string()))
        .collect();
    if let Some((version, pid)) = running {
        w.alive.insert(pid);
        w.procs.insert(
            (app.into(), version.into()),
            ProcRecord {
                app: app.into(),
                version: version.into(),
                pid,
                start_time: 7,
                exe: format!("/data/apps/{app}/{version}/{app}"),
            },
        );
    }
    w
}

/// A daemon over a fake executor, driven on a simulated clock.
struct Harness {
    daemon: Daemon,
    exec: FakeExecutor,
    now: Instant,
    // Kept so the daemon's sends succeed; their traffic is not under test here.
    _published: mpsc::UnboundedReceiver<crate::bus::PubCmd>,
    _status: watch::Receiver<DeviceStatus>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a daemon on `world` as the agent does: restore, then the first step.
    fn start(world: World) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().to_str().expect("temporary paths are UTF-8");
        let cli = Cli::parse_from([
            "fleet-agent",
            "--device-id",
            DEVICE,
            "--mqtt-url",
            "mqtt://127.0.0.1:1",
            "--server",
            "http://127.0.0.1:1",
            "--data-dir",
            data,
        ]);
        let cfg = Config::from_cli(&cli).expect("test settings are valid");
        let (publisher, published) = mpsc::unbounded_channel();
        let (status, status_rx) = watch::channel(crate::bus::offline_status(&cfg.device_id));
        let exec = FakeExecutor::new(world);
        let now = Instant::now();
        let telem =
            telemetry_loop::Telem::new(cfg.telemetry.clone(), [7; 32], cfg.limits.counters, now);
        let mut daemon = Daemon {
            units: units::Units::default(),
            trust: test_trust(&cfg),
            exec: Box::new(exec.clone()) as Box<dyn Executor>,
            accepted: None,
            desired: None,
            apps: BTreeMap::new(),
            sups: BTreeMap::new(),
            status,
            publisher,
            inventory: Inventory::default(),
            rejected_payloads: 0,
            last_controller_at: None,
            controller_url: None,
            shutting_down: false,
            telem,
            traffic: BTreeMap::new(),
            cfg,
        };
        daemon.restore(now);
        daemon.step(now);
        Harness {
            daemon,
            exec,
            now,
            _published: published,
            _status: status_rx,
            _dir: dir,
        }
    }

    /// The effects asked for since the last look.
    fn calls(&self) -> Vec<Call> {
        self.exec.world().take_calls()
    }

    /// A new desired state arrives (already opened and checked).
    fn desire(&mut self, d: DesiredState) {
        self.daemon.take_desired(d);
        self.daemon.step(self.now);
    }

    /// The real executor reports `ev`.
    fn report(&mut self, ev: Event) {
        self.daemon.handle(ev, self.now);
        self.daemon.step(self.now);
    }

    /// Time passes.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.daemon.step(self.now);
    }

    fn downloaded(&mut self, app: &str, version: &str) {
        self.report(Event::Downloaded {
            app: app.into(),
            version: version.into(),
            result: Ok(()),
        });
    }

    /// The install the daemon asked for succeeds (and prunes what it did not keep).
    fn installed(&mut self, app: &str, version: &str) {
        self.exec.world().finish_install(app, version);
        self.report(Event::Installed {
            app: app.into(),
            version: version.into(),
            result: Ok(()),
        });
    }

    fn install_failed(&mut self, app: &str, version: &str, error: &str) {
        self.exec
            .world()
            .installing
            .remove(&(app.to_string(), version.to_string()));
        self.report(Event::Installed {
            app: app.into(),
            version: version.into(),
            result: Err(FetchFailure {
                error: error.into(),
                transient: false,
            }),
        });
    }

    /// A process ends.
    fn exited(&mut self, app: &str, version: &str, pid: u32) {
        self.exec.world().alive.remove(&pid);
        self.report(Event::Exited {
            app: app.into(),
            version: version.into(),
            pid,
            how: "signal 15 (SIGTERM)".into(),
        });
    }

    /// The app's entry in the status the daemon would publish now.
    fn status(&self, app: &str) -> AppStatus {
        self.daemon
            .full_status()
            .apps
            .into_iter()
            .find(|a| a.name == app)
            .unwrap_or_else(|| panic!("status has no app {app}"))
    }

    /// The app record the daemon persisted.
    fn persisted(&self, app: &str) -> AppRecord {
        self.exec
            .world()
            .apps
            .get(app)
            .cloned()
            .unwrap_or_else(|| panic!("no record persisted for {app}"))
    }
}

/// Trust material for a daemon that never opens a message in these tests.
fn test_trust(cfg: &Config) -> trust::AgentTrust {
    let (device_key, _) = SigningKey::generate().expect("key generation works");
    let (controller, _) = SigningKey::generate().expect("key generation works");
    let record = EnrollmentRecord {
        controller_key: hex::encode(controller.public()),
        bus_key: "11".repeat(32),
        mqtt_username: DEVICE.into(),
        mqtt_password: "secret".into(),
        enrolled_at: 0,
        last_request_at: 0,
    };
    let asker = Asker {
        server: cfg.server.clone(),
        device: cfg.device_id.clone(),
        key: Arc::new(device_key),
        token: None,
        pinned: None,
        last_at: 0,
        agent_version: "test".into(),
    };
    let (creds, _) = watch::channel(Credentials {
        username: record.mqtt_username.clone(),
        password: record.mqtt_password.clone(),
    });
    trust::AgentTrust::new(record, asker, creds).expect("the test record is valid")
}
