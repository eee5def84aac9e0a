//! Harness for the agent's runtime tests: an embedded MQTT broker, a real `fleet-agent`
//! process whose data directory is prepared with an installed app, an accepted desired state
//! (so no download is needed) and an enrollment (a device key, the pinned key of this test
//! process's stand-in controller, a bus key), a bus observer, and cleanup that leaves no process
//! behind. The test plays the controller: it seals what it sends to the agent with that key.
#![allow(dead_code)]

use fleet_agent::identity::record::EnrollmentRecord;
use fleet_agent::layout;
use fleet_agent::store::{AppRecord, Store};
use fleet_schema::trust::{seal, BusKey, SealParams, SigningKey, Stamp};
use fleet_schema::{AppSpec, ArtifactRef, DesiredApp, DesiredState};
use fleet_testkit::{Mosquitto, MosquittoAuth};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A real MQTT broker for one test: the test kit's Mosquitto on a free port, open to anyone (the
/// test plays every party), killed on drop; None (after the kit's skip-or-fail rule) when
/// Mosquitto is not installed. The agent's tests use an external broker on purpose: the
/// embedded one lives in fleetd's crates, and the agent's dependency tree (dev-dependencies
/// included) stays free of the broker.
pub fn broker() -> Option<Mosquitto> {
    Mosquitto::start(MosquittoAuth::Open)
}

/// Writes a private (0600) file.
fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("open private file");
    f.write_all(bytes).expect("write private file");
}

// Each test binary uses part of the harness.
#[allow(unused_imports)]
pub use fleet_testkit::{free_port, wait_until};

/// One app to install: name, shell script body, spec.
pub struct TestApp {
    /// Name.
    pub name: &'static str,
    /// `#!/bin/bash` script body.
    pub script: String,
    /// How to run it.
    pub spec: AppSpec,
}

/// The desired state for `apps` at `generation`.
pub fn desired(device: &str, generation: u64, apps: &[TestApp]) -> DesiredState {
    DesiredState {
        device_id: device.into(),
        generation,
        apps: apps
            .iter()
            .map(|a| DesiredApp {
                name: a.name.into(),
                version: "1.0.0".into(),
                artifact: ArtifactRef {
                    name: a.name.into(),
                    version: "1.0.0".into(),
                    size: 1,
                    sha256: "00".into(),
                    url: "http://127.0.0.1:9/unused".into(),
                    ..Default::default()
                },
                deployment_id: None,
                spec: a.spec.clone(),
                rollout: None,
                components: Vec::new(),
            })
            .collect(),
        issued_at: 0,
    }
}

/// The key of the controller the agents of this test process pinned.
pub fn controller_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("keygen").0)
}

/// The payload of a sealed message, without checking its signature (observers of the bus; the
/// agent's signatures are checked by fleetd's tests and `signed_reports` below).
pub fn body_of(payload: &[u8]) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(with = "serde_bytes")]
        b: Vec<u8>,
    }
    fleet_schema::decode::<Envelope>(payload, 4 << 20)
        .ok()
        .map(|e| e.b)
}

/// A real agent process.
pub struct AgentProc {
    /// Device id.
    pub device: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    /// The device's key (written into its data directory before it starts).
    pub key: SigningKey,
    bus: BusKey,
    stamp: std::sync::atomic::AtomicU64,
}

impl AgentProc {
    /// Installs `apps` (version 1.0.0, desired generation 1) and starts the agent against
    /// `mqtt_port` with extra flags.
    pub fn start(device: &str, mqtt_port: u16, apps: &[TestApp], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let data = data.canonicalize().expect("canonical");
        {
            let store = Store::open(&layout::database(&data)).expect("store");
            store
                .set_desired(&desired(device, 1, apps))
                .expect("desired");
            for a in apps {
                let exe = layout::executable(&data, a.name, "1.0.0");
                std::fs::create_dir_all(exe.parent().expect("parent")).expect("mkdir");
                std::fs::write(&exe, format!("#!/bin/bash\n{}\n", a.script)).expect("script");
                std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                store
                    .set_app(
                        a.name,
                        &AppRecord {
                            installed: ["1.0.0".to_string()].into(),
                            current: None,
                        },
                    )
                    .expect("app record");
            }
        }
        // Enrolled beforehand, as a device provisioned at the factory would be.
        let (key, pkcs8) = SigningKey::generate().expect("keygen");
        write_private(&layout::device_key(&data), &pkcs8);
        let bus = BusKey(fleet_schema::trust::keys::random_bytes().expect("random"));
        let record = EnrollmentRecord {
            controller_key: hex::encode(controller_key().public()),
            bus_key: bus.to_hex(),
            mqtt_username: device.to_string(),
            mqtt_password: "unused-by-an-open-broker".into(),
            enrolled_at: 1,
            last_request_at: 1,
        };
        record
            .save(&layout::enrollment(&data))
            .expect("enrollment record");
        let mut args = vec![
            "--device-id".to_string(),
            device.to_string(),
            "--mqtt-url".into(),
            format!("mqtt://127.0.0.1:{mqtt_port}"),
            "--server".into(),
            "http://127.0.0.1:9".into(),
            "--data-dir".into(),
            data.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Self {
            device: device.to_string(),
            dir,
            child: None,
            args,
            key,
            bus,
            stamp: std::sync::atomic::AtomicU64::new(1),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        // FLEET_AGENT_BIN / FLEET_AGENT_RUNNER run another build of the agent, e.g. an ARM
        // one under qemu-user (bench/arm-smoke.sh).
        let bin = std::env::var("FLEET_AGENT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleet-agent").to_string());
        let runner = std::env::var("FLEET_AGENT_RUNNER").unwrap_or_default();
        let mut words = runner.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
    }

    /// Seals `body` for `topic` as the controller would for this device: signed by the
    /// pinned controller key, addressed to the device's key, encrypted under its bus key.
    pub fn sealed(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        seal(
            SealParams {
                topic,
                signer: controller_key(),
                to: Some(self.key.id()),
                stamp: Stamp {
                    epoch: 1,
                    seq: self.stamp.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                },
                encrypt: Some(&self.bus),
            },
            body,
        )
        .expect("seals")
    }

    /// A desired state, sealed for this device's `cmd` topic.
    pub fn cmd(&self, desired: &DesiredState) -> Vec<u8> {
        let topic = format!("fleet/{}/cmd", self.device);
        self.sealed(&topic, &fleet_schema::encode(desired).expect("encode"))
    }

    /// A request, sealed for this device's `req` topic.
    pub fn req(&self, req: &fleet_schema::AgentRequest) -> Vec<u8> {
        let topic = format!("fleet/{}/req", self.device);
        self.sealed(&topic, &fleet_schema::encode(req).expect("encode"))
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data").canonicalize().expect("data")
    }

    /// The agent's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// An app's captured output (stdout, then stderr).
    pub fn app_log(&self, app: &str) -> String {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        read(layout::log_file(&self.data(), app)) + &read(layout::err_log_file(&self.data(), app))
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Stops the agent (SIGTERM) and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGTERM and wait (the agent stops its apps).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log of {} ---\n{}", self.device, self.log());
        }
        self.stop();
        for pid in pids_with_env(&format!("FLEET_DEVICE_ID={}", self.device)) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Pids of live processes whose environment contains `entry` (e.g. `FLEET_DEVICE_ID=x`).
pub fn pids_with_env(entry: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

/// A subscriber collecting (topic, payload) from the broker.
pub struct Observer {
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    client: Client,
}

impl Observer {
    /// Subscribes to `filters` and waits for the SubAck.
    pub fn start(port: u16, filters: &[String]) -> Self {
        let mut opts = MqttOptions::new(
            format!("observer-{}-{}", std::process::id(), free_port()),
            "127.0.0.1",
            port,
        );
        opts.set_max_packet_size(
            fleet_testkit::TEST_CLIENT_MAX_PACKET,
            fleet_testkit::TEST_CLIENT_MAX_PACKET,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = Client::new(opts, 64);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let filters = filters.to_vec();
        let sub = client.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = sub.subscribe(f.as_str(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("observer subscribed");
        Self { rx, client }
    }

    /// Publishes a message.
    pub fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("publish");
    }

    /// Waits until `f` accepts a decoded message on `topic`; panics with `what` on timeout.
    pub fn wait_for<T: serde::de::DeserializeOwned, R>(
        &self,
        topic: &str,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&T) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, payload)) if t == topic => {
                    let body = body_of(&payload).unwrap_or(payload);
                    if let Ok(v) = fleet_schema::decode::<T>(&body, 4 << 20) {
                        if let Some(r) = f(&v) {
                            return r;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// The next message on any subscribed topic, waiting at most `d`.
    pub fn next(&self, d: Duration) -> Option<(String, Vec<u8>)> {
        self.rx.recv_timeout(d).ok()
    }

    /// Everything received on `topic` for `d`.
    pub fn collect<T: serde::de::DeserializeOwned>(&self, topic: &str, d: Duration) -> Vec<T> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok((t, payload)) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if t == topic {
                let body = body_of(&payload).unwrap_or(payload);
                if let Ok(v) = fleet_schema::decode::<T>(&body, 4 << 20) {
                    out.push(v);
                }
            }
        }
        out
    }
}
