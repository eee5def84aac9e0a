//! Brokers fleetd did not start. The broker itself and the skip-or-fail rule for missing
//! servers come from the workspace's test kit (`fleet_testkit`); this adds how fleetd is
//! pointed at such a broker.

// Each test binary uses part of the harness.
#[allow(unused_imports)]
pub use fleet_testkit::{require_tool, Mosquitto, MosquittoAuth};
use std::path::PathBuf;

/// A broker fleetd is pointed at with `--mqtt-url`, and, for a Mosquitto with FleetD's files,
/// where fleetd keeps them and how it reloads the broker.
#[derive(Debug, Clone)]
pub struct BrokerRef {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The directory of `fleet.passwd` and `fleet.acl`, and the broker's pid (for SIGHUP).
    files: Option<(PathBuf, u32)>,
    /// A file with the password fleetd connects with (so tests can act as the broker's admin).
    password_file: Option<PathBuf>,
}

impl BrokerRef {
    /// How fleetd uses Mosquitto `m`: with its files and a reload by SIGHUP when `m` enforces
    /// FleetD's password and ACL files.
    pub fn of(m: &Mosquitto) -> BrokerRef {
        BrokerRef {
            port: m.port,
            files: m.files_dir().map(|d| (d, m.pid())),
            password_file: m.password_file(),
        }
    }

    /// A broker without FleetD's files (an embedded broker the test started, say).
    pub fn plain(port: u16) -> BrokerRef {
        BrokerRef {
            port,
            files: None,
            password_file: None,
        }
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// fleetd's flags for this broker.
    pub fn fleetd_args(&self) -> Vec<String> {
        let mut args = vec!["--mqtt-url".to_string(), self.url()];
        if let Some((dir, pid)) = &self.files {
            args.push("--mosquitto-dir".into());
            args.push(dir.to_string_lossy().into_owned());
            args.push("--mosquitto-reload".into());
            args.push(format!("kill -HUP {pid}"));
        }
        if let Some(p) = &self.password_file {
            args.push("--mqtt-password-file".into());
            args.push(p.to_string_lossy().into_owned());
        }
        args
    }
}
