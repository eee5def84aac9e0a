//! The agent's settings: command-line flags, optionally a TOML file with the same settings
//! (flags win), validated once here so the rest of the agent works with checked values.

pub use crate::cli::Cli;
use fleet_schema::DeviceId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Telemetry settings (metrics, logs, offline backlog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// Metrics sampling and publishing interval.
    pub metrics_interval: std::time::Duration,
    /// Local counters endpoint address.
    pub metrics_listen: String,
    /// Offline backlog bounds.
    pub spool: crate::telemetry::spool::Bounds,
    /// Log lines per second (burst: five seconds' worth).
    pub log_rate: u32,
    /// Size at which an app's log file is rotated, bytes.
    pub log_file_max: u64,
    /// Lines kept in the in-memory ring for history requests.
    pub log_ring: usize,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            metrics_interval: std::time::Duration::from_secs(10),
            metrics_listen: "127.0.0.1:0".into(),
            spool: crate::telemetry::spool::Bounds {
                max_messages: 2000,
                max_bytes: 4 << 20,
            },
            log_rate: 100,
            log_file_max: 1 << 20,
            log_ring: 1000,
        }
    }
}

/// The settings file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    device_id: Option<String>,
    mqtt_url: Option<String>,
    server: Option<String>,
    enroll_token: Option<String>,
    enroll_token_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    metrics_interval_ms: Option<u64>,
    metrics_listen: Option<String>,
    spool_max_messages: Option<usize>,
    spool_max_bytes: Option<u64>,
    log_rate: Option<u32>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    require_signatures: Option<bool>,
    archive_max_bytes: Option<u64>,
    archive_max_entries: Option<u64>,
    systemd_scope: Option<String>,
    systemd_unit_dir: Option<PathBuf>,
    forward_listen: Option<std::net::IpAddr>,
    // The limits (serde's flatten does not combine with deny_unknown_fields).
    forward_max_connections: Option<usize>,
    log_file_max_bytes: Option<u64>,
    counters_per_app: Option<usize>,
    counter_apps: Option<usize>,
    counter_idle_secs: Option<u64>,
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required setting is absent from both flags and file.
    #[error("{0} is required (flag --{0} or key {1} in the config file)")]
    Missing(&'static str, &'static str),
    /// The device id is invalid.
    #[error("invalid device id: {0}")]
    DeviceId(#[from] fleet_schema::DeviceIdError),
    /// The broker URL is not mqtt(s)://host[:port].
    #[error("invalid --mqtt-url: {0}")]
    MqttUrl(#[from] fleet_schema::MqttUrlError),
    /// The server URL is not http(s)://...
    #[error(
        "invalid --server {0:?}: expected http://HOST:PORT or https://HOST:PORT (fleetd's API)"
    )]
    Server(String),
    /// The enrollment token file cannot be read.
    #[error("cannot read the enrollment token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A trusted key is neither hex nor a readable file holding hex.
    #[error("invalid trusted key: {0}")]
    TrustedKey(String),
    /// A label is not KEY=VALUE.
    #[error("invalid --label {0:?}: expected KEY=VALUE with a non-empty key")]
    Label(String),
    /// The systemd scope is not `system` or `user`.
    #[error("invalid --systemd-scope: {0}")]
    SystemdScope(String),
    /// A limit setting is unusable.
    #[error("invalid limit: {0}")]
    Limit(String),
}

/// A secret setting: its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This device.
    pub device_id: DeviceId,
    /// The broker.
    pub mqtt: fleet_schema::MqttUrl,
    /// fleetd's HTTP API base URL (no trailing slash).
    pub server: String,
    /// The enrollment token, when the device has one.
    pub enroll_token: Option<Secret>,
    /// TLS material for the broker and fleetd.
    pub tls: crate::http::TlsFiles,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Labels for the inventory.
    pub labels: BTreeMap<String, String>,
    /// Metrics, logs and backlog settings.
    pub telemetry: Telemetry,
    /// Signature policy and archive limits.
    pub artifacts: crate::fetch::verify::ArtifactSettings,
    /// Which systemd manager runs `runtime.type: systemd` apps, and where their units go.
    pub systemd: crate::runtime::systemd::Settings,
    /// Resource limits (forwarder connections, log file size, counter slots).
    pub limits: crate::limits::AgentLimits,
    /// Where blue-green forwarders listen.
    pub forward_listen: std::net::IpAddr,
}

impl Config {
    /// Merges flags over the optional config file and validates the result.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let device = cli
            .device_id
            .clone()
            .or(file.device_id)
            .ok_or(ConfigError::Missing("device-id", "device_id"))?;
        let url = cli
            .mqtt_url
            .clone()
            .or(file.mqtt_url)
            .ok_or(ConfigError::Missing("mqtt-url", "mqtt_url"))?;
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or(ConfigError::Missing("data-dir", "data_dir"))?;
        let mqtt: fleet_schema::MqttUrl = url.parse()?;
        let server = cli
            .server
            .clone()
            .or(file.server)
            .ok_or(ConfigError::Missing("server", "server"))?;
        if !(server.starts_with("http://") || server.starts_with("https://"))
            || server.contains('@')
        {
            return Err(ConfigError::Server(server));
        }
        let token_file = cli.enroll_token_file.clone().or(file.enroll_token_file);
        let enroll_token = match (cli.enroll_token.clone().or(file.enroll_token), token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::TokenFile { path, source })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty())
        .map(Secret);
        let tls = crate::http::TlsFiles {
            ca: cli.ca.clone().or(file.ca),
            client_cert: cli.client_cert.clone().or(file.client_cert),
            client_key: cli.client_key.clone().or(file.client_key),
        };
        let mut labels = file.labels;
        for l in &cli.labels {
            let (k, v) = l
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::Label(l.clone()))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let file_limits = crate::limits::LimitSettings {
            forward_max_connections: file.forward_max_connections,
            log_file_max_bytes: file.log_file_max_bytes,
            counters_per_app: file.counters_per_app,
            counter_apps: file.counter_apps,
            counter_idle_secs: file.counter_idle_secs,
        };
        let limits = crate::limits::AgentLimits::resolve(&cli.limits, &file_limits)
            .map_err(ConfigError::Limit)?;
        let d = Telemetry::default();
        let telemetry = Telemetry {
            metrics_interval: std::time::Duration::from_millis(
                cli.metrics_interval_ms
                    .or(file.metrics_interval_ms)
                    .unwrap_or(d.metrics_interval.as_millis() as u64)
                    .max(100),
            ),
            metrics_listen: cli
                .metrics_listen
                .clone()
                .or(file.metrics_listen)
                .unwrap_or(d.metrics_listen),
            spool: crate::telemetry::spool::Bounds {
                max_messages: cli
                    .spool_max_messages
                    .or(file.spool_max_messages)
                    .unwrap_or(d.spool.max_messages),
                max_bytes: cli
                    .spool_max_bytes
                    .or(file.spool_max_bytes)
                    .unwrap_or(d.spool.max_bytes),
            },
            log_rate: cli.log_rate.or(file.log_rate).unwrap_or(d.log_rate),
            log_file_max: limits.log_file_max_bytes,
            ..d
        };
        let artifacts = crate::fetch::verify::ArtifactSettings::resolve(
            file.trusted_keys.iter().chain(&cli.trusted_keys),
            cli.require_signatures || file.require_signatures.unwrap_or(false),
            cli.archive_max_bytes.or(file.archive_max_bytes),
            cli.archive_max_entries.or(file.archive_max_entries),
        )
        .map_err(ConfigError::TrustedKey)?;
        let systemd = crate::runtime::systemd::Settings {
            scope: match cli
                .systemd_scope
                .as_deref()
                .or(file.systemd_scope.as_deref())
            {
                Some(s) => {
                    crate::runtime::systemd::Scope::parse(s).map_err(ConfigError::SystemdScope)?
                }
                None => crate::runtime::systemd::Scope::default(),
            },
            unit_dir: cli.systemd_unit_dir.clone().or(file.systemd_unit_dir),
        };
        Ok(Self {
            device_id: DeviceId::parse(&device)?,
            mqtt,
            server: server.trim_end_matches('/').to_string(),
            enroll_token,
            tls,
            data_dir,
            labels,
            telemetry,
            artifacts,
            systemd,
            limits,
            forward_listen: cli
                .forward_listen
                .or(file.forward_listen)
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn flags_alone() {
        let c = Config::from_cli(&cli(&[
            "--device-id",
            "dev-1",
            "--mqtt-url",
            "mqtt://127.0.0.1:1884",
            "--server",
            "http://127.0.0.1:7878/",
            "--data-dir",
            "/tmp/x",
            "--label",
            "site=a",
            "--label",
            "tier=b=c",
        ]))
        .expect("valid");
        assert_eq!(c.device_id.as_str(), "dev-1");
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("127.0.0.1", 1884));
        assert_eq!(c.server, "http://127.0.0.1:7878");
        assert_eq!(c.enroll_token, None);
        assert_eq!(c.labels.get("tier").map(String::as_str), Some("b=c"));
        assert_eq!(c.telemetry, Telemetry::default(), "defaults");
        assert_eq!(c.systemd, crate::runtime::systemd::Settings::default());
        assert_eq!(c.limits, crate::limits::AgentLimits::default());
        assert_eq!(
            c.forward_listen.to_string(),
            "127.0.0.1",
            "forwarders stay local"
        );
    }

    #[test]
    fn file_with_flag_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!("device_id = \"from-file\"\nmqtt_url = \"mqtts://broker\"\nserver = \"https://fleet\"\nenroll_token_file = \"{}\"\ndata_dir = \"/var/lib/fleet\"\nmetrics_interval_ms = 2000\nforward_max_connections = 16\nlog_file_max_bytes = 4096\nforward_listen = \"0.0.0.0\"\nsystemd_scope = \"user\"\nsystemd_unit_dir = \"/u\"\n[labels]\nsite = \"file\"\nrack = \"3\"\n", dir.path().join("token").display()),
        )
        .expect("write");
        std::fs::write(dir.path().join("token"), "enroll_abc\n").expect("write token");
        let p = path.to_str().expect("utf-8 path");
        let c = Config::from_cli(&cli(&[
            "--config",
            p,
            "--device-id",
            "flag",
            "--label",
            "site=flag",
        ]))
        .expect("valid");
        assert_eq!(c.device_id.as_str(), "flag");
        assert_eq!((c.mqtt.port, c.mqtt.tls), (8883, true));
        assert_eq!(c.enroll_token, Some(Secret("enroll_abc".into())));
        assert!(
            !format!("{c:?}").contains("enroll_abc"),
            "the token is never printed"
        );
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/fleet"));
        assert_eq!(c.limits.forward_max_connections, 16);
        assert_eq!(
            c.telemetry.log_file_max, 4096,
            "the log limit reaches the tailer"
        );
        assert_eq!(c.forward_listen.to_string(), "0.0.0.0");
        assert_eq!(c.labels.get("site").map(String::as_str), Some("flag"));
        assert_eq!(c.labels.get("rack").map(String::as_str), Some("3"));
        assert_eq!(c.systemd.scope, crate::runtime::systemd::Scope::User);
        assert_eq!(c.systemd.unit_dir, Some(PathBuf::from("/u")));
        assert_eq!(
            c.telemetry.metrics_interval,
            std::time::Duration::from_secs(2)
        );

        std::fs::write(&path, "device_idd = \"x\"\n").expect("write");
        let err = Config::from_cli(&cli(&["--config", p])).expect_err("typo refused");
        assert!(err.to_string().contains("device_idd"), "{err}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let base = [
            "--mqtt-url",
            "mqtt://h:1",
            "--data-dir",
            "/d",
            "--server",
            "http://h:2",
        ];
        let mut args = vec!["--device-id", "_controller"];
        args.extend(base);
        assert!(matches!(
            Config::from_cli(&cli(&args)),
            Err(ConfigError::DeviceId(_))
        ));
        let mut args = vec!["--device-id", "ok"];
        args.extend(base);
        args.extend(["--label", "=v"]);
        assert!(matches!(
            Config::from_cli(&cli(&args)),
            Err(ConfigError::Label(_))
        ));
        let mut args = vec!["--device-id", "ok", "--server", "ftp://x"];
        args.extend(&base[..4]);
        assert!(matches!(
            Config::from_cli(&cli(&args)),
            Err(ConfigError::Server(_))
        ));
        let mut args = vec!["--device-id", "ok", "--mqtt-url", "http://h:1"];
        args.extend(&base[2..]);
        assert!(matches!(
            Config::from_cli(&cli(&args)),
            Err(ConfigError::MqttUrl(_))
        ));
        assert!(matches!(
            Config::from_cli(&cli(&["--device-id", "x"])),
            Err(ConfigError::Missing("mqtt-url", _))
        ));
        let mut args = vec!["--device-id", "ok", "--systemd-scope", "session"];
        args.extend(base);
        let e = Config::from_cli(&cli(&args)).expect_err("bad scope");
        assert!(e.to_string().contains("system, user"), "{e}");
    }
}
