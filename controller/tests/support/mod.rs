//! Test harness for end-to-end tests against the real `fleetd` binary: start it on free ports
//! with a temporary data directory, wait for its ready line, talk to it over HTTP (ureq) and
//! MQTT (rumqttc), SIGKILL and restart it on the same data, and kill it on drop.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod agent;
pub mod cli;
pub mod device;
pub mod external;
pub mod fleet;
pub mod gate;
pub mod link;
pub mod oci;
pub mod procs;
pub mod recovery;
pub mod registry;
pub mod tmpfs;

/// The MQTT user name of the admin token (`_token-<id>`).
pub fn admin_username() -> String {
    let id = admin_token()
        .strip_prefix("fleet_")
        .and_then(|r| r.split('_').next())
        .expect("token id");
    fleet_schema::trust::tokens::token_username(id)
}

/// The admin token every fleetd of this test process starts with (`FLEETD_ADMIN_TOKEN`) and
/// every HTTP helper sends; one per process, so parallel tests share it.
pub fn admin_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let id = &fleet_schema::trust::keys::new_secret_hex().expect("random")[..8];
        let secret = fleet_schema::trust::keys::new_secret_hex().expect("random");
        fleet_schema::trust::tokens::api_token(id, &secret)
    })
}

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, Publish, QoS};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long fleetd may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

// Each test binary uses part of the harness.
#[allow(unused_imports)]
pub use fleet_testkit::{free_port, wait_until};

/// A running `fleetd` process.
pub struct Fleetd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The broker fleetd uses when it did not start its own.
    external: Option<external::BrokerRef>,
    /// Extra command-line flags (e.g. `--insecure`).
    args: Vec<String>,
    /// A command fleetd runs under (e.g. `prlimit --nofile=N:N --`), empty for none.
    wrapper: Vec<String>,
    /// HTTP base URL from the ready line, e.g. `http://127.0.0.1:41234`.
    pub http: String,
    /// Port of the embedded MQTT broker.
    pub mqtt_port: u16,
    /// An enrollment token (unlimited uses) agents and simulated devices enroll with.
    pub enroll_token: String,
    starts: u32,
}

/// What an agent or a simulated device needs to join this fleetd.
#[derive(Debug, Clone)]
pub struct Access {
    /// The broker URL.
    pub mqtt_url: String,
    /// fleetd's HTTP base URL.
    pub server: String,
    /// The enrollment token.
    pub enroll_token: String,
    /// The CA to verify fleetd and the broker with, when they speak TLS.
    pub ca: Option<PathBuf>,
}

impl Fleetd {
    /// Starts fleetd with a fresh data directory and free ports.
    pub fn start() -> Fleetd {
        Self::start_with_env(&[])
    }

    /// Starts fleetd with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Fleetd {
        Self::launch(env, &[], None)
    }

    /// Starts fleetd with extra command-line flags.
    pub fn start_with_args(args: &[&str]) -> Fleetd {
        Self::launch(&[], args, None)
    }

    /// Starts fleetd with extra environment variables and command-line flags.
    pub fn start_with(env: &[(&str, &str)], args: &[&str]) -> Fleetd {
        Self::launch(env, args, None)
    }

    /// Starts fleetd with HTTPS and MQTT over TLS, with the certificates of [`test_certs`].
    pub fn start_tls() -> Fleetd {
        Self::start_tls_with(&[])
    }

    /// [`Fleetd::start_tls`] with extra flags (e.g. `--mqtt-client-ca`).
    pub fn start_tls_with(extra: &[&str]) -> Fleetd {
        let dir = test_certs();
        let _ = TEST_CERTS_MADE.set(dir.to_path_buf());
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        let mut args = vec![
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        Self::launch(&[], &args, None)
    }

    /// Starts fleetd with `--insecure`: no authentication of connections and API calls
    /// (messages stay signed). Only tests of the insecure mode use it, and say so.
    pub fn start_insecure() -> Fleetd {
        Self::launch(&[], &["--insecure"], None)
    }

    /// Starts fleetd against a broker it did not start (`--mqtt-url`); for a Mosquitto with
    /// FleetD's password and ACL files, fleetd keeps those files and reloads the broker.
    pub fn start_external(broker: &external::BrokerRef) -> Fleetd {
        Self::launch(&[], &[], Some(broker.clone()))
    }

    /// Starts fleetd under `wrapper` (a command that execs the rest of its arguments, such as
    /// `prlimit --nofile=N:N --`) with extra flags.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Fleetd {
        Self::launch_full(wrapper, &[], args, None, |_| {})
    }

    /// [`Fleetd::start_external`] with extra environment variables.
    pub fn start_external_with(broker: &external::BrokerRef, env: &[(&str, &str)]) -> Fleetd {
        Self::launch(env, &[], Some(broker.clone()))
    }

    fn launch(
        env: &[(&str, &str)],
        args: &[&str],
        external: Option<external::BrokerRef>,
    ) -> Fleetd {
        Self::launch_full(&[], env, args, external, |_| {})
    }

    /// Starts fleetd with extra flags after `prepare` has run on its (empty, existing) data
    /// directory, e.g. to mount a small filesystem there.
    pub fn start_prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Fleetd {
        Self::launch_full(&[], &[], args, None, prepare)
    }

    fn launch_full(
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        external: Option<external::BrokerRef>,
        prepare: impl FnOnce(&Path),
    ) -> Fleetd {
        let mqtt_port = match &external {
            Some(b) => b.port,
            None => free_port(),
        };
        let mut f = Fleetd {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external,
            args: args.iter().map(|a| a.to_string()).collect(),
            wrapper: wrapper.iter().map(|a| a.to_string()).collect(),
            http: String::new(),
            mqtt_port,
            enroll_token: String::new(),
            starts: 0,
        };
        std::fs::create_dir_all(f.data_dir()).expect("create the data directory");
        prepare(&f.data_dir());
        f.spawn();
        f.enroll_token = f.create_enroll_token(&serde_json::json!({"name": "tests"}));
        f
    }

    /// Creates an enrollment token with the given request body; returns the token.
    pub fn create_enroll_token(&self, body: &serde_json::Value) -> String {
        let (status, created) = post_json(&self.url("/api/v1/enrollment-tokens"), body);
        assert_eq!(status, 201, "create an enrollment token: {created}");
        created["token"].as_str().expect("token").to_string()
    }

    /// Creates an API token; returns the token string.
    pub fn create_token(&self, name: &str, scopes: &[&str], apps: &[&str]) -> String {
        let (status, created) = post_json(
            &self.url("/api/v1/tokens"),
            &serde_json::json!({"name": name, "scopes": scopes, "apps": apps}),
        );
        assert_eq!(status, 201, "create token {name}: {created}");
        created["token"].as_str().expect("token").to_string()
    }

    /// The controller's public key, from its key file.
    pub fn controller_key(&self) -> fleet_schema::signing::TrustedKey {
        let pkcs8 = std::fs::read(self.data_dir().join("controller.key")).expect("controller key");
        fleet_schema::trust::SigningKey::from_pkcs8(&pkcs8)
            .expect("controller key parses")
            .trusted()
    }

    /// Opens a presence message, which must be signed by this controller.
    pub fn open_presence(&self, payload: &[u8]) -> fleet_schema::ControllerStatus {
        let key = self.controller_key();
        let opened = fleet_schema::trust::open(
            fleet_schema::trust::OpenParams {
                topic: "fleet/_controller/status",
                signer: &key,
                me: None,
                decrypt: None,
            },
            payload,
            fleet_schema::DEFAULT_MAX_PAYLOAD + 4096,
        )
        .expect("presence is signed by the controller");
        fleet_schema::decode(&opened.body, fleet_schema::DEFAULT_MAX_PAYLOAD)
            .expect("presence decodes")
    }

    /// What an agent needs to join.
    pub fn access(&self) -> Access {
        Access {
            mqtt_url: self.mqtt_url(),
            server: self.http.clone(),
            enroll_token: self.enroll_token.clone(),
            ca: self
                .args
                .iter()
                .any(|a| a == "--tls-cert")
                .then(|| test_certs().join("ca.pem")),
        }
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
        let fleetd = env!("CARGO_BIN_EXE_fleetd");
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(fleetd),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(fleetd);
                c
            }
        };
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            // Port 0 the first time; the same port after a restart, as a real deployment keeps
            // its address (desired states carry download URLs).
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port().unwrap_or(0)))
            .args(match &self.external {
                Some(b) => b.fleetd_args(),
                None => vec![
                    "--mqtt-listen".to_string(),
                    format!("127.0.0.1:{}", self.mqtt_port),
                ],
            })
            .args(&self.args)
            .env("FLEETD_ADMIN_TOKEN", admin_token())
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
                if let Some(ready) = fleet_schema::ReadyLine::parse(&line).transpose() {
                    let _ = tx.send(ready);
                }
            }
        });
        self.child = Some(child);
        let ready = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(ready) => ready.unwrap_or_else(|e| panic!("{e}")),
            Err(_) => {
                self.kill9();
                panic!(
                    "fleetd printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        self.http = ready.http;
        assert_eq!(
            ready.mqtt.port, self.mqtt_port,
            "ready line names the broker port: {}",
            ready.mqtt
        );
    }

    /// The process id of the running fleetd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let scheme = if self.args.iter().any(|a| a == "--tls-cert") {
            "mqtts"
        } else {
            "mqtt"
        };
        match &self.external {
            Some(b) => b.url(),
            None => format!("{scheme}://127.0.0.1:{}", self.mqtt_port),
        }
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

/// A development CA and certificates for this test process (`fleetctl certs dev`), made the
/// first time a test asks; every HTTP helper then trusts that CA.
pub fn test_certs() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("certs dir").keep();
        let out = Command::new(procs::workspace_bin("fleetctl"))
            .args(["certs", "dev", "--out"])
            .arg(&dir)
            .output()
            .expect("run fleetctl certs dev");
        assert!(
            out.status.success(),
            "fleetctl certs dev: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn agent() -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)));
    if let Some(dir) = TEST_CERTS_MADE.get() {
        let pem = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    config.build().into()
}

/// Set once a test made the development certificates (and the HTTP helpers trust their CA).
static TEST_CERTS_MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET as the admin; returns status and body text.
pub fn get(url: &str) -> (u16, String) {
    get_as(url, Some(admin_token()))
}

/// GET with the given token (none: no Authorization header); returns status and body text.
pub fn get_as(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("authorization", bearer(t));
    }
    let mut resp = req.call().expect("HTTP GET");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

/// GET as the admin with extra headers; returns status, headers of interest and raw body.
pub fn get_bytes(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent().get(url);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        req = req.header("authorization", bearer(admin_token()));
    }
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

/// POST raw bytes with a content type as the admin; returns status and body text.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    post_as(url, Some(admin_token()), content_type, body)
}

/// POST raw bytes with the given token (none: no Authorization header).
pub fn post_as(url: &str, token: Option<&str>, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut req = agent().post(url).header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", bearer(t));
    }
    let mut resp = req.send(body).expect("HTTP POST");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

/// DELETE as the admin; returns status and body text.
pub fn delete(url: &str) -> (u16, String) {
    let mut resp = agent()
        .delete(url)
        .header("authorization", bearer(admin_token()))
        .call()
        .expect("HTTP DELETE");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

/// POST a JSON value as the admin; returns status and parsed JSON body.
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

/// Uploads an artifact the way `curl -F metadata=... -F file=@...` does (metadata first).
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
        ("metadata", None, meta.as_bytes()),
        ("file", Some(name), bytes),
    ]);
    let (status, text) = post(&fleetd.url("/api/v1/artifacts"), &ct, &body);
    (status, parse_json(&text))
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
    /// Connects as a tool with the admin token (user `_token-<id>`), clean session, and waits
    /// for the ConnAck.
    pub fn connect(port: u16, id: &str) -> MqttClient {
        Self::connect_as(port, id, Some((&admin_username(), admin_token())))
            .unwrap_or_else(|e| panic!("test MQTT client {id} cannot connect: {e}"))
    }

    /// Connects with the given credentials (none: anonymous); the error when refused.
    pub fn connect_as(
        port: u16,
        id: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<MqttClient, String> {
        Self::connect_over(port, None, id, creds)
    }

    /// [`MqttClient::connect_as`] over TLS (`mqtts`) when `ca` is given, verifying the broker
    /// against that CA.
    pub fn connect_over(
        port: u16,
        ca: Option<&Path>,
        id: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<MqttClient, String> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(
            fleet_testkit::TEST_CLIENT_MAX_PACKET,
            fleet_testkit::TEST_CLIENT_MAX_PACKET,
        )
        .set_keep_alive(Duration::from_secs(30));
        if let Some(ca) = ca {
            let config = fleet_controller::tls::client_config(ca, None)
                .map_err(|e| format!("TLS client configuration: {e}"))?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
        if let Some((u, p)) = creds {
            opts.set_credentials(u, p);
        }
        let (client, mut conn) = Client::new(opts, 100);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    return Ok(MqttClient { client, conn })
                }
                Ok(Err(e)) => return Err(e.to_string()),
                _ => {}
            }
        }
        Err(format!("test MQTT client {id}: no ConnAck"))
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

    /// Publishes (QoS 1) a message the broker must refuse: true when the connection closes
    /// without a PubAck within 10 s (the embedded broker's front ends it); panics on a PubAck.
    pub fn publish_refused(&mut self, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("queue publish");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                    panic!("the broker accepted the publish on {topic}")
                }
                Ok(Err(_)) => return true,
                _ => {}
            }
        }
        false
    }

    /// Subscribes and waits for the SubAck; an error when the broker refused the filter.
    pub fn subscribe_checked(&mut self, filter: &str) -> Result<(), String> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("queue subscribe");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    return match ack.return_codes.first() {
                        Some(rumqttc::SubscribeReasonCode::Success(_)) => Ok(()),
                        other => Err(format!("subscription to {filter} refused: {other:?}")),
                    };
                }
                Ok(Err(e)) => return Err(e.to_string()),
                _ => {}
            }
        }
        Err(format!("no SubAck for {filter}"))
    }

    /// Every publish received until one on `topic` arrives (included), or `None` on timeout.
    pub fn until(&mut self, topic: &str, timeout: Duration) -> Option<Vec<Publish>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let done = p.topic == topic;
                    seen.push(p);
                    if done {
                        return Some(seen);
                    }
                }
                Ok(Err(e)) => panic!("test MQTT connection failed: {e}"),
                _ => {}
            }
        }
        None
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
        refused: None,
    }
}

/// Enrolls a simulated device, publishes its status (sealed, retained, as agents do) and waits
/// until the API knows it; returns the device for further messages.
pub fn announce(fleetd: &Fleetd, status: &fleet_schema::DeviceStatus) -> device::SimDevice {
    let mut dev = device::SimDevice::enroll(&fleetd.access(), &status.device_id);
    dev.publish_status(status);
    let url = fleetd.url(&format!("/api/v1/devices/{}", status.device_id));
    assert!(
        wait_until(Duration::from_secs(10), || get(&url).0 == 200),
        "device {} never appeared in the API; stderr:\n{}",
        status.device_id,
        fleetd.stderr()
    );
    dev
}

/// Reads a path's file to bytes (for tests that inspect the data directory).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Files directly in `dir` and their total size (0, 0 when it is missing): how much a backlog
/// or a staging directory holds.
pub fn dir_usage(dir: &Path) -> (usize, u64) {
    std::fs::read_dir(dir)
        .map(|d| {
            let sizes: Vec<u64> = d
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .collect();
            (sizes.len(), sizes.iter().sum())
        })
        .unwrap_or((0, 0))
}
