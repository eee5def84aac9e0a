//! Test harness for end-to-end tests against the real `fleetd` binary: start it on free ports
//! with a temporary data directory, wait for its ready line, talk to it over HTTP (ureq) and
//! MQTT (rumqttc), SIGKILL and restart it on the same data, and kill it on drop.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod agent;
pub mod cli;
pub mod external;
pub mod fleet;
pub mod oci;
pub mod procs;
pub mod registry;

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, Publish, QoS};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long fleetd may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A TCP port free on every address when returned, for an app or container to listen on soon
/// after. It is taken below the kernel's ephemeral range: a port the kernel hands out for
/// `bind(0)` can meanwhile become the source port of some outgoing connection (the agent's, the
/// broker's), and a listener on it then fails for as long as that connection lives (seen as a
/// container engine's "port is already allocated", exit status 125, under CI load).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768);
    let base = 20_000u32;
    let span = ephemeral_low.saturating_sub(base).max(1_000);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(base + (start + n) % span).expect("below 65536");
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A running `fleetd` process.
pub struct Fleetd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// `--mqtt-url` when fleetd uses a broker it did not start.
    external_url: Option<String>,
    /// HTTP base URL from the ready line, e.g. `http://127.0.0.1:41234`.
    pub http: String,
    /// Port of the embedded MQTT broker.
    pub mqtt_port: u16,
    starts: u32,
}

impl Fleetd {
    /// Starts fleetd with a fresh data directory and free ports.
    pub fn start() -> Fleetd {
        Self::start_with_env(&[])
    }

    /// Starts fleetd with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Fleetd {
        Self::launch(env, None)
    }

    /// Starts fleetd against an already running broker (`--mqtt-url mqtt://HOST:PORT`).
    pub fn start_external(mqtt_url: &str) -> Fleetd {
        Self::launch(&[], Some(mqtt_url))
    }

    fn launch(env: &[(&str, &str)], external_url: Option<&str>) -> Fleetd {
        let mqtt_port = match external_url {
            Some(url) => url
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .unwrap_or_else(|| panic!("broker URL {url:?} must end with :PORT")),
            None => free_port(),
        };
        let mut f = Fleetd {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external_url: external_url.map(str::to_string),
            http: String::new(),
            mqtt_port,
            starts: 0,
        };
        f.spawn();
        f
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("fleetd-{}.stderr", self.starts))
    }

    /// What fleetd wrote on stderr in its current (or last) run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let stderr = std::fs::File::create(self.stderr_path()).expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetd"));
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            // Port 0 the first time; the same port after a restart, as a real deployment keeps
            // its address (desired states carry download URLs).
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port().unwrap_or(0)))
            .args(match &self.external_url {
                Some(url) => ["--mqtt-url".to_string(), url.clone()],
                None => [
                    "--mqtt-listen".to_string(),
                    format!("127.0.0.1:{}", self.mqtt_port),
                ],
            })
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn fleetd");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("fleetd ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        self.child = Some(child);
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                self.kill9();
                panic!(
                    "fleetd printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("ready line {line:?} lacks {name}"))
                .to_string()
        };
        self.http = field("http=");
        let mqtt = field("mqtt=");
        assert!(
            mqtt.ends_with(&format!(":{}", self.mqtt_port)),
            "ready line names the broker port: {line}"
        );
    }

    /// SIGKILLs fleetd and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs fleetd (if running) and starts it again on the same data and broker port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The HTTP port from the ready line (None before the first start).
    pub fn http_port(&self) -> Option<u16> {
        self.http.rsplit(':').next()?.parse().ok()
    }

    /// The broker URL agents and tools connect to.
    pub fn mqtt_url(&self) -> String {
        self.external_url
            .clone()
            .unwrap_or_else(|| format!("mqtt://127.0.0.1:{}", self.mqtt_port))
    }

    /// Full URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = get(&self.url("/metrics"));
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------- HTTP

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET; returns status and body text.
pub fn get(url: &str) -> (u16, String) {
    let mut resp = agent().get(url).call().expect("HTTP GET");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

/// GET with extra headers; returns status, headers of interest and raw body.
pub fn get_bytes(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().expect("HTTP GET");
    let status = resp.status().as_u16();
    let hdrs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .expect("body");
    (status, hdrs, body)
}

/// POST raw bytes with a content type; returns status and body text.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut resp = agent()
        .post(url)
        .header("content-type", content_type)
        .send(body)
        .expect("HTTP POST");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

/// POST a JSON value; returns status and parsed JSON body.
pub fn post_json(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = post(url, "application/json", body.to_string().as_bytes());
    (status, parse_json(&text))
}

/// Parses a JSON body, failing the test with the text when it is not JSON.
pub fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A multipart/form-data body: `(part name, file name, bytes)`, in order.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "fleetd-test-boundary-7d3f9a";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Uploads an artifact the way `curl -F file=@... -F metadata=...` does.
pub fn upload(
    fleetd: &Fleetd,
    name: &str,
    version: &str,
    bytes: &[u8],
) -> (u16, serde_json::Value) {
    let meta = serde_json::json!({
        "name": name, "version": version, "platform": "linux/amd64", "type": "binary"
    })
    .to_string();
    let (ct, body) = multipart(&[
        ("file", Some(name), bytes),
        ("metadata", None, meta.as_bytes()),
    ]);
    let (status, text) = post(&fleetd.url("/api/v1/artifacts"), &ct, &body);
    (status, parse_json(&text))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- MQTT

/// A connected MQTT test client (sync rumqttc) with large packets allowed.
pub struct MqttClient {
    /// The client.
    pub client: Client,
    /// Its connection (events).
    pub conn: Connection,
}

impl MqttClient {
    /// Connects with a clean session and waits for the ConnAck.
    pub fn connect(port: u16, id: &str) -> MqttClient {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = Client::new(opts, 100);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return MqttClient { client, conn },
                Ok(Err(e)) => panic!("test MQTT client {id} cannot connect: {e}"),
                _ => {}
            }
        }
        panic!("test MQTT client {id}: no ConnAck");
    }

    /// Publishes and, for QoS 1, waits for the broker's PubAck.
    pub fn publish(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("queue publish");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return,
                Ok(Err(e)) => panic!("publish on {topic} failed: {e}"),
                _ => {}
            }
        }
        panic!("publish on {topic}: no PubAck");
    }

    /// Subscribes (QoS 1).
    pub fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("queue subscribe");
    }

    /// Waits for a publish on `topic` accepted by `pred`.
    pub fn wait_for(
        &mut self,
        topic: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Publish) -> bool,
    ) -> Option<Publish> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic && pred(&p) => {
                    return Some(p)
                }
                Ok(Err(e)) => panic!("test MQTT connection failed: {e}"),
                _ => {}
            }
        }
        None
    }
}

/// A minimal online status for a device, with labels.
pub fn device_status(id: &str, labels: &[(&str, &str)]) -> fleet_schema::DeviceStatus {
    fleet_schema::DeviceStatus {
        device_id: id.into(),
        online: true,
        agent_version: "test".into(),
        inventory: Some(fleet_schema::Inventory {
            arch: "amd64".into(),
            os: "linux".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        observed_generation: 0,
        apps: vec![],
        reported_at: 0,
    }
}

/// Publishes a device's status (retained, as agents do) and waits until the API knows it.
pub fn announce(fleetd: &Fleetd, status: &fleet_schema::DeviceStatus) {
    let mut c = MqttClient::connect(fleetd.mqtt_port, &format!("agent-{}", status.device_id));
    let payload = fleet_schema::encode(status).expect("encode status");
    c.publish(&format!("fleet/{}/status", status.device_id), payload, true);
    let url = fleetd.url(&format!("/api/v1/devices/{}", status.device_id));
    assert!(
        wait_until(Duration::from_secs(10), || get(&url).0 == 200),
        "device {} never appeared in the API; stderr:\n{}",
        status.device_id,
        fleetd.stderr()
    );
}

/// Reads a path's file to bytes (for tests that inspect the data directory).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
