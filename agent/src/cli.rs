//! `fleet-agent`'s command line, parsed by hand from a table of its flags. The agent takes
//! only `--name VALUE`, `--name=VALUE` and switches, so clap's builder (about 0.2 MB of a
//! binary that must fit a small board's 4 MB budget) is replaced by this table, its help text
//! and one match that stores each value; the output and errors keep clap's shape.

use crate::limits::LimitSettings;
use std::ffi::OsString;
use std::path::PathBuf;

/// Command-line flags of `fleet-agent` (see [`FLAGS`] for what each means); [`Config`]
/// merges them over the settings file and validates them.
///
/// [`Config`]: crate::config::Config
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cli {
    /// `--device-id`.
    pub device_id: Option<String>,
    /// `--mqtt-url`.
    pub mqtt_url: Option<String>,
    /// `--server`.
    pub server: Option<String>,
    /// `--enroll-token-file`.
    pub enroll_token_file: Option<PathBuf>,
    /// `--enroll-token`, or the environment variable [`ENROLL_TOKEN_ENV`].
    pub enroll_token: Option<String>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--client-cert`.
    pub client_cert: Option<PathBuf>,
    /// `--client-key`.
    pub client_key: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--label` (repeatable).
    pub labels: Vec<String>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--metrics-interval-ms`.
    pub metrics_interval_ms: Option<u64>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// `--spool-max-messages`.
    pub spool_max_messages: Option<usize>,
    /// `--spool-max-bytes`.
    pub spool_max_bytes: Option<u64>,
    /// `--log-rate`.
    pub log_rate: Option<u32>,
    /// `--trusted-key` (repeatable).
    pub trusted_keys: Vec<String>,
    /// `--require-signatures`.
    pub require_signatures: bool,
    /// `--archive-max-bytes`.
    pub archive_max_bytes: Option<u64>,
    /// `--archive-max-entries`.
    pub archive_max_entries: Option<u64>,
    /// `--systemd-scope`.
    pub systemd_scope: Option<String>,
    /// `--systemd-unit-dir`.
    pub systemd_unit_dir: Option<PathBuf>,
    /// `--forward-listen`.
    pub forward_listen: Option<std::net::IpAddr>,
    /// The resource limit flags (see docs/limits.md).
    pub limits: LimitSettings,
}

/// The environment variable `--enroll-token` falls back to (a flag is visible to other users
/// in the process list; the environment is not).
pub const ENROLL_TOKEN_ENV: &str = "FLEET_ENROLL_TOKEN";

/// One flag: its name without the dashes, the name of its value (`None` for a switch),
/// whether it may be given more than once, and its help text.
#[derive(Debug)]
pub struct Flag {
    /// The name, e.g. `device-id`.
    pub name: &'static str,
    /// The value's name in the help, e.g. `FILE`; `None` for a switch.
    pub value: Option<&'static str>,
    /// Whether the flag may be repeated (each value is kept).
    pub repeatable: bool,
    /// The help text.
    pub help: &'static str,
}

const fn opt(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: Some(value),
        repeatable: false,
        help,
    }
}

const fn many(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: Some(value),
        repeatable: true,
        help,
    }
}

/// Every flag, in the order `--help` lists them.
pub const FLAGS: &[Flag] = &[
    opt("device-id", "DEVICE_ID", "This device's id (letters, digits, '-', '_', '.')"),
    opt("mqtt-url", "MQTT_URL", "The broker, e.g. mqtt://127.0.0.1:1883 or mqtts://fleet.example:8883"),
    opt("server", "SERVER", "fleetd's HTTP API, e.g. https://fleet.example:7878: where the device enrolls and asks for fresh download URLs"),
    opt("enroll-token-file", "FILE", "A file holding the enrollment token (`fleetctl enroll create`); without one the device enrolls as a pending request an operator accepts (`fleetctl device accept ID`). Only needed until the device is enrolled"),
    opt("enroll-token", "ENROLL_TOKEN", "The enrollment token itself (prefer --enroll-token-file or FLEET_ENROLL_TOKEN: a flag is visible to other users in the process list) [env: FLEET_ENROLL_TOKEN]"),
    opt("ca", "FILE", "PEM CA certificate(s) the broker's and fleetd's TLS certificates must chain to (default: the system's CA store)"),
    opt("client-cert", "FILE", "PEM client certificate presented to the broker and fleetd when they ask for one"),
    opt("client-key", "FILE", "PEM private key of --client-cert"),
    opt("data-dir", "DATA_DIR", "Where the agent keeps its database, downloads, apps and logs"),
    many("label", "KEY=VALUE", "A label KEY=VALUE reported in the inventory (repeatable)"),
    opt("config", "CONFIG", "A TOML file with device_id, mqtt_url, server, data_dir, a [labels] table and the settings below (keys as the flags, with '_' for '-')"),
    opt("metrics-interval-ms", "METRICS_INTERVAL_MS", "How often metrics are sampled and published, milliseconds (default 10000)"),
    opt("metrics-listen", "METRICS_LISTEN", "Address of the local endpoint apps report counters to (default 127.0.0.1:0, any port)"),
    opt("spool-max-messages", "SPOOL_MAX_MESSAGES", "Most messages kept in the offline backlog (default 2000)"),
    opt("spool-max-bytes", "SPOOL_MAX_BYTES", "Most bytes kept in the offline backlog (default 4 MiB)"),
    opt("log-rate", "LOG_RATE", "Log lines per second published per device before lines are dropped (default 100)"),
    many("trusted-key", "HEX|FILE", "An ed25519 public key (hex, or a file holding it) whose artifact signatures are trusted (repeatable, so keys can rotate)"),
    Flag {
        name: "require-signatures",
        value: None,
        repeatable: false,
        help: "Refuse artifacts without a valid signature by a trusted key",
    },
    opt("archive-max-bytes", "ARCHIVE_MAX_BYTES", "Largest total unpacked size of an archive artifact, bytes (default 4 GiB)"),
    opt("archive-max-entries", "ARCHIVE_MAX_ENTRIES", "Most entries in an archive artifact (default 100000)"),
    opt("systemd-scope", "system|user", "Which systemd manager runs apps with `runtime.type: systemd`: `system` (default, `systemctl`) or `user` (`systemctl --user`)"),
    opt("systemd-unit-dir", "DIR", "Where their unit files are written; it must be on the manager's unit path (default /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user for the user scope)"),
    opt("forward-listen", "IP", "Address the blue-green forwarders listen on for an app's `runtime.ports` (default 127.0.0.1, where containers publish theirs too; 0.0.0.0 serves the network)"),
    opt("forward-max-connections", "FORWARD_MAX_CONNECTIONS", "Most connections one blue-green port forwarder holds open at once; further ones are closed at once (default 1024)"),
    opt("log-file-max-bytes", "LOG_FILE_MAX_BYTES", "Size at which an app's stdout or stderr log file is rotated to `<file>.1`, bytes (default 1 MiB)"),
    opt("counters-per-app", "COUNTERS_PER_APP", "Most counter names one app may hold at the counters endpoint (default 64)"),
    opt("counter-apps", "COUNTER_APPS", "Most apps holding counters at once (default 64)"),
    opt("counter-idle-secs", "COUNTER_IDLE_SECS", "Seconds after which a counter (and an app) not posted is forgotten (default 600)"),
];

/// Why the command line was not turned into settings. `--help` and `--version` are here too,
/// as clap has them: the caller prints them and exits successfully.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// `-h` or `--help`.
    #[error("help requested")]
    Help,
    /// `-V` or `--version`.
    #[error("version requested")]
    Version,
    /// Not a flag of the agent (or a positional argument, which it takes none of).
    #[error("unexpected argument '{0}' found")]
    Unexpected(String),
    /// A flag that takes a value came last.
    #[error("a value is required for '--{0} <{1}>' but none was supplied")]
    MissingValue(&'static str, &'static str),
    /// A switch was given `=VALUE`.
    #[error("unexpected value '{1}' for '--{0}' found; no more were expected")]
    SwitchValue(&'static str, String),
    /// A value that does not parse as the flag's type (or is not UTF-8).
    #[error("invalid value '{value}' for '--{flag} <{value_name}>': {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// Its value's name.
        value_name: &'static str,
        /// The value as given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A flag that takes one value was given twice.
    #[error("the argument '--{0}' cannot be used multiple times")]
    Repeated(&'static str),
    /// One of a pair that only works together was given alone.
    #[error("the following required arguments were not provided:\n  --{0} <FILE>")]
    Requires(&'static str),
}

impl Cli {
    /// Parses the process's arguments; prints the help, the version or the error and exits
    /// as clap does (status 0 for help and version, 2 for a bad command line).
    pub fn parse() -> Self {
        Self::parse_from(std::env::args_os())
    }

    /// [`Cli::parse`] of the given arguments (the first is the program name).
    pub fn parse_from<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        match Self::try_parse_from(args) {
            Ok(cli) => cli,
            Err(CliError::Help) => {
                print!("{}", help());
                std::process::exit(0)
            }
            Err(CliError::Version) => {
                println!("fleet-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("error: {e}\n\nFor more information, try '--help'.");
                std::process::exit(2)
            }
        }
    }

    /// The settings the arguments give (the first is the program name), `--enroll-token`
    /// falling back to [`ENROLL_TOKEN_ENV`].
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let env_token = std::env::var(ENROLL_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty());
        Self::parse_args(args.into_iter().skip(1).map(Into::into), env_token)
    }

    fn parse_args(
        mut args: impl Iterator<Item = OsString>,
        env_token: Option<String>,
    ) -> Result<Self, CliError> {
        let mut cli = Cli::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            match text.as_ref() {
                "-h" | "--help" => return Err(CliError::Help),
                "-V" | "--version" => return Err(CliError::Version),
                _ => {}
            }
            let Some(body) = text.strip_prefix("--").filter(|b| !b.is_empty()) else {
                return Err(CliError::Unexpected(text.into_owned()));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(OsString::from(v))),
                None => (body, None),
            };
            let flag = FLAGS
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| CliError::Unexpected(format!("--{name}")))?;
            if !flag.repeatable && seen.contains(&flag.name) {
                return Err(CliError::Repeated(flag.name));
            }
            seen.push(flag.name);
            let Some(value_name) = flag.value else {
                if let Some(v) = inline {
                    return Err(CliError::SwitchValue(
                        flag.name,
                        v.to_string_lossy().into_owned(),
                    ));
                }
                cli.set_switch(flag.name);
                continue;
            };
            let value = inline
                .or_else(|| args.next())
                .ok_or(CliError::MissingValue(flag.name, value_name))?;
            cli.set(flag, value_name, value)?;
        }
        if cli.enroll_token.is_none() {
            cli.enroll_token = env_token;
        }
        match (&cli.client_cert, &cli.client_key) {
            (Some(_), None) => Err(CliError::Requires("client-key")),
            (None, Some(_)) => Err(CliError::Requires("client-cert")),
            _ => Ok(cli),
        }
    }

    fn set_switch(&mut self, name: &str) {
        if name == "require-signatures" {
            self.require_signatures = true;
        }
    }

    /// Stores one flag's value, parsed as its field's type.
    fn set(
        &mut self,
        flag: &Flag,
        value_name: &'static str,
        value: OsString,
    ) -> Result<(), CliError> {
        let invalid = |value: String, reason: String| CliError::Invalid {
            flag: flag.name,
            value_name,
            value,
            reason,
        };
        let path = || Some(PathBuf::from(&value));
        let text = || {
            value
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(value.to_string_lossy().into_owned(), "not UTF-8".into()))
        };
        fn num<T: std::str::FromStr>(
            s: String,
            invalid: impl Fn(String, String) -> CliError,
        ) -> Result<T, CliError>
        where
            T::Err: std::fmt::Display,
        {
            s.parse()
                .map_err(|e: T::Err| invalid(s.clone(), e.to_string()))
        }
        match flag.name {
            "device-id" => self.device_id = Some(text()?),
            "mqtt-url" => self.mqtt_url = Some(text()?),
            "server" => self.server = Some(text()?),
            "enroll-token-file" => self.enroll_token_file = path(),
            "enroll-token" => self.enroll_token = Some(text()?),
            "ca" => self.ca = path(),
            "client-cert" => self.client_cert = path(),
            "client-key" => self.client_key = path(),
            "data-dir" => self.data_dir = path(),
            "label" => self.labels.push(text()?),
            "config" => self.config = path(),
            "metrics-interval-ms" => self.metrics_interval_ms = Some(num(text()?, invalid)?),
            "metrics-listen" => self.metrics_listen = Some(text()?),
            "spool-max-messages" => self.spool_max_messages = Some(num(text()?, invalid)?),
            "spool-max-bytes" => self.spool_max_bytes = Some(num(text()?, invalid)?),
            "log-rate" => self.log_rate = Some(num(text()?, invalid)?),
            "trusted-key" => self.trusted_keys.push(text()?),
            "archive-max-bytes" => self.archive_max_bytes = Some(num(text()?, invalid)?),
            "archive-max-entries" => self.archive_max_entries = Some(num(text()?, invalid)?),
            "systemd-scope" => self.systemd_scope = Some(text()?),
            "systemd-unit-dir" => self.systemd_unit_dir = path(),
            "forward-listen" => self.forward_listen = Some(num(text()?, invalid)?),
            "forward-max-connections" => {
                self.limits.forward_max_connections = Some(num(text()?, invalid)?)
            }
            "log-file-max-bytes" => self.limits.log_file_max_bytes = Some(num(text()?, invalid)?),
            "counters-per-app" => self.limits.counters_per_app = Some(num(text()?, invalid)?),
            "counter-apps" => self.limits.counter_apps = Some(num(text()?, invalid)?),
            "counter-idle-secs" => self.limits.counter_idle_secs = Some(num(text()?, invalid)?),
            other => unreachable!("flag --{other} is in FLAGS but has no field"),
        }
        Ok(())
    }
}

/// The `--help` text, laid out as clap lays out long help.
pub fn help() -> String {
    let mut out = String::from("FleetD device agent\n\nUsage: fleet-agent [OPTIONS]\n\nOptions:\n");
    for f in FLAGS {
        match f.value {
            Some(v) => out.push_str(&format!("      --{} <{v}>\n", f.name)),
            None => out.push_str(&format!("      --{}\n", f.name)),
        }
        out.push_str(&format!("          {}\n", f.help));
    }
    out.push_str("  -h, --help\n          Print help\n  -V, --version\n          Print version\n");
    out
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
