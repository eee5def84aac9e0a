//! The agent's settings: command-line flags, optionally a TOML file with the same settings
//! (flags win), validated once here so the rest of the agent works with checked values.

use clap::Parser;
use fleet_schema::DeviceId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Command-line flags of `fleet-agent`.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleet-agent", version, about = "FleetD device agent")]
pub struct Cli {
    /// This device's id (letters, digits, '-', '_', '.').
    #[arg(long)]
    pub device_id: Option<String>,
    /// The broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// Where the agent keeps its database, downloads, apps and logs.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A label KEY=VALUE reported in the inventory (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A TOML file with device_id, mqtt_url, data_dir and a [labels] table.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The settings file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    device_id: Option<String>,
    mqtt_url: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
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
    /// The broker URL is not mqtt://host[:port].
    #[error("invalid --mqtt-url {0:?}: expected mqtt://HOST:PORT")]
    MqttUrl(String),
    /// A label is not KEY=VALUE.
    #[error("invalid --label {0:?}: expected KEY=VALUE with a non-empty key")]
    Label(String),
}

/// Checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This device.
    pub device_id: DeviceId,
    /// Broker host.
    pub mqtt_host: String,
    /// Broker port.
    pub mqtt_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Labels for the inventory.
    pub labels: BTreeMap<String, String>,
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
        let (mqtt_host, mqtt_port) = parse_mqtt_url(&url)?;
        let mut labels = file.labels;
        for l in &cli.labels {
            let (k, v) = l
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::Label(l.clone()))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(Self {
            device_id: DeviceId::parse(&device)?,
            mqtt_host,
            mqtt_port,
            data_dir,
            labels,
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

/// Splits `mqtt://host[:port]` (also `tcp://`) into host and port (default 1883).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::MqttUrl(url.to_string());
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().map_err(|_| bad())?),
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
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
            "--data-dir",
            "/tmp/x",
            "--label",
            "site=a",
            "--label",
            "tier=b=c",
        ]))
        .expect("valid");
        assert_eq!(c.device_id.as_str(), "dev-1");
        assert_eq!((c.mqtt_host.as_str(), c.mqtt_port), ("127.0.0.1", 1884));
        assert_eq!(c.labels.get("tier").map(String::as_str), Some("b=c"));
    }

    #[test]
    fn file_with_flag_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "device_id = \"from-file\"\nmqtt_url = \"mqtt://broker\"\ndata_dir = \"/var/lib/fleet\"\n[labels]\nsite = \"file\"\nrack = \"3\"\n",
        )
        .expect("write");
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
        assert_eq!(c.mqtt_port, 1883);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/fleet"));
        assert_eq!(c.labels.get("site").map(String::as_str), Some("flag"));
        assert_eq!(c.labels.get("rack").map(String::as_str), Some("3"));

        std::fs::write(&path, "device_idd = \"x\"\n").expect("write");
        let err = Config::from_cli(&cli(&["--config", p])).expect_err("typo refused");
        assert!(err.to_string().contains("device_idd"), "{err}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let base = ["--mqtt-url", "mqtt://h:1", "--data-dir", "/d"];
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
        for url in [
            "http://h:1",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:0",
            "mqtt://h/p",
        ] {
            assert!(parse_mqtt_url(url).is_err(), "{url}");
        }
        assert!(matches!(
            Config::from_cli(&cli(&["--device-id", "x"])),
            Err(ConfigError::Missing("mqtt-url", _))
        ));
    }
}
