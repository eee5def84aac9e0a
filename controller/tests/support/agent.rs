//! A real `fleet-agent` process for end-to-end tests, with its own data directory. Dropping it
//! stops the agent and kills anything still running from its data directory, so no test leaves
//! a process behind.

use super::procs::{kill_processes_under, processes_under, signal, workspace_bin};
use super::Access;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One agent process.
pub struct Agent {
    /// The device id it runs as.
    pub device_id: String,
    access: Access,
    labels: Vec<(String, String)>,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent for `device_id` that enrolls with (and then joins) the fleetd of
    /// `access`.
    pub fn start(device_id: &str, access: &Access, labels: &[(&str, &str)]) -> Self {
        Self::start_with_args(device_id, access, labels, &[])
    }

    /// Starts an agent with extra command-line flags (e.g. `--trusted-key`).
    pub fn start_with_args(
        device_id: &str,
        access: &Access,
        labels: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let mut agent = Self {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            device_id: device_id.to_string(),
            access: access.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir: tempfile::tempdir().expect("temp dir for the agent"),
            child: None,
        };
        agent.spawn();
        agent
    }

    /// Starts an agent after `prepare` has run on its (empty, existing) data directory, e.g.
    /// to mount a small filesystem there.
    pub fn start_prepared(
        device_id: &str,
        access: &Access,
        args: &[&str],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let mut agent = Self {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            device_id: device_id.to_string(),
            access: access.clone(),
            labels: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir for the agent"),
            child: None,
        };
        std::fs::create_dir_all(agent.data_dir()).expect("create the data directory");
        prepare(&agent.data_dir());
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open agent log");
        let token_file = self.dir.path().join("enroll.token");
        std::fs::write(&token_file, &self.access.enroll_token).expect("write the enrollment token");
        let mut cmd = Command::new(workspace_bin("fleet-agent"));
        cmd.arg("--device-id")
            .arg(&self.device_id)
            .arg("--mqtt-url")
            .arg(&self.access.mqtt_url)
            .arg("--server")
            .arg(&self.access.server)
            .arg("--enroll-token-file")
            .arg(&token_file)
            .args(
                self.access
                    .ca
                    .iter()
                    .flat_map(|ca| [std::ffi::OsStr::new("--ca"), ca.as_os_str()]),
            )
            .arg("--data-dir")
            .arg(self.data_dir());
        for (k, v) in &self.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        cmd.args(&self.extra_args);
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn fleet-agent"));
    }

    /// Opens a desired state published for this agent's device, with the keys in its data
    /// directory (its device key and the bus key from its enrollment record).
    pub fn open_cmd(&self, payload: &[u8]) -> fleet_schema::DesiredState {
        self.try_open_cmd(payload)
            .expect("desired state sealed for this device")
    }

    /// Like [`Agent::open_cmd`], `None` when the payload is not a desired state sealed for it.
    pub fn try_open_cmd(&self, payload: &[u8]) -> Option<fleet_schema::DesiredState> {
        let data = self.data_dir();
        let key = fleet_schema::trust::SigningKey::from_pkcs8(
            &std::fs::read(data.join("device.key")).expect("device key"),
        )
        .expect("device key parses");
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("enrollment.json")).expect("enrollment record"),
        )
        .expect("enrollment record parses");
        let bus = fleet_schema::trust::BusKey::from_hex(rec["bus_key"].as_str().expect("bus_key"))
            .expect("bus key");
        let controller = fleet_schema::signing::TrustedKey::from_hex(
            rec["controller_key"].as_str().expect("controller_key"),
        )
        .expect("controller key");
        let topic = format!("fleet/{}/cmd", self.device_id);
        let opened = fleet_schema::trust::open(
            fleet_schema::trust::OpenParams {
                topic: &topic,
                signer: &controller,
                me: Some(key.id()),
                decrypt: Some(&bus),
            },
            payload,
            fleet_schema::DEFAULT_MAX_PAYLOAD + 4096,
        )
        .ok()?;
        fleet_schema::decode(&opened.body, fleet_schema::DEFAULT_MAX_PAYLOAD).ok()
    }

    /// Opens a report (status, metrics, logs) this agent published on `topic`, checking it is
    /// sealed by the agent's device key.
    pub fn open_report<T: serde::de::DeserializeOwned>(&self, topic: &str, payload: &[u8]) -> T {
        let key = fleet_schema::trust::SigningKey::from_pkcs8(
            &std::fs::read(self.data_dir().join("device.key")).expect("device key"),
        )
        .expect("device key parses");
        let opened = fleet_schema::trust::open(
            fleet_schema::trust::OpenParams {
                topic,
                signer: &key.trusted(),
                me: None,
                decrypt: None,
            },
            payload,
            fleet_schema::DEFAULT_MAX_PAYLOAD + 4096,
        )
        .expect("report sealed by the agent's key");
        fleet_schema::decode(&opened.body, fleet_schema::DEFAULT_MAX_PAYLOAD).expect("decodes")
    }

    /// The agent's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Everything the agent wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        // The apps' own output (including a container engine's errors) explains most failures.
        if let Ok(dir) = std::fs::read_dir(self.data_dir().join("logs")) {
            for e in dir.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                if !tail.is_empty() {
                    out.push_str(&format!("\n--- {} (last lines) ---\n", e.path().display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the agent process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the agent (its apps keep running, as after a power-loss of the agent alone).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the agent again on the same data directory with other extra flags (e.g. a new
    /// set of trusted keys).
    pub fn restart_with_args(&mut self, args: &[&str]) {
        self.kill9();
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.spawn();
    }

    /// Stops the agent with SIGTERM and waits up to 15 s for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
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

    /// App processes started by this agent: (pid, exe) for executables under `apps/`.
    pub fn app_processes(&self) -> Vec<(i32, PathBuf)> {
        processes_under(&self.data_dir().join("apps"))
    }

    /// Pids of processes running `app` at `version` from this agent's install directory.
    pub fn app_pids(&self, app: &str, version: &str) -> Vec<i32> {
        let dir = self.data_dir().join("apps").join(app).join(version);
        self.app_processes()
            .into_iter()
            .filter(|(_, exe)| exe.starts_with(dir.canonicalize().unwrap_or(dir.clone())))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The app's captured output (stdout, then stderr).
    pub fn app_log(&self, app: &str) -> String {
        ["out", "err"]
            .map(|s| {
                std::fs::read_to_string(self.data_dir().join("logs").join(format!("{app}.{s}.log")))
                    .unwrap_or_default()
            })
            .concat()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        kill_processes_under(&self.data_dir());
    }
}
