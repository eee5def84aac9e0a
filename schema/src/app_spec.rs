//! How a device should run an app: the wire form of an application manifest's `spec`
//! (configuration, runtime, health check, resources), carried in every [`crate::DesiredApp`].
//!
//! Units are normalised for the wire (milliseconds, bytes, millicores) so the agent never parses
//! human strings like `30s` or `2Gi`; the manifest parser does that once, on the controller.
//! Every field has a default, so a desired state from a controller that predates manifests (or
//! a deployment of a bare artifact) means: run the artifact as a raw process, restart always,
//! no health check, no limits.

use crate::open_enum;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

open_enum! {
    /// Which supervisor runs the app on the device.
    #[derive(Default)]
    pub enum RuntimeKind {
        /// The agent's own process supervisor.
        #[default]
        Raw => "raw",
        /// A systemd unit written and driven by the agent.
        Systemd => "systemd",
        /// A Docker container.
        Docker => "docker",
        /// A Podman container.
        Podman => "podman",
        /// Same as raw (the seed's name for an agent-supervised process).
        Supervisor => "supervisor",
    }
}

open_enum! {
    /// When the supervisor restarts an app that exited.
    #[derive(Default)]
    pub enum RestartPolicy {
        /// Whatever the exit status.
        #[default]
        Always => "always",
        /// Only after a non-zero exit or a signal.
        OnFailure => "on-failure",
        /// Never; an exit is final until the next desired state.
        Never => "never",
    }
}

/// A configuration file the agent writes (atomically) before starting the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Absolute path, or a path relative to the app's version directory.
    pub path: String,
    /// File content.
    pub content: String,
    /// Unix permission bits (e.g. 0o640); 0o644 when absent (0o600 for a secret file).
    #[serde(default)]
    pub mode: Option<u32>,
    /// The content is secret: shown only to admin tokens, never logged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// How the app is started and kept running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeSpec {
    /// Supervisor kind.
    #[serde(rename = "type")]
    pub kind: RuntimeKind,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// How long the app may take to become running (and healthy, with a health check) before
    /// the start counts as failed; 0 means the agent's default.
    pub startup_timeout_ms: u64,
    /// Grace period between SIGTERM and SIGKILL on stop; 0 means the agent's default.
    pub stop_grace_ms: u64,
    /// Arguments passed to the entry point.
    pub args: Vec<String>,
    /// Entry point inside the artifact (archives); the binary itself when absent.
    pub entrypoint: Option<String>,
    /// Working directory; the app's version directory when absent.
    pub workdir: Option<String>,
    /// TCP ports the app serves (used by blue-green traffic switching and containers).
    pub ports: Vec<u16>,
    /// Script inside an unpacked archive run once after unpacking (relative path).
    pub install_script: Option<String>,
    /// Script inside an unpacked archive run before every start (relative path).
    pub pre_start_script: Option<String>,
}

/// What a health probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeKind {
    /// HTTP GET on 127.0.0.1:`port``path`; healthy when the status equals `expected_status`
    /// (any 2xx when absent).
    Http {
        /// Request path, e.g. `/health`.
        path: String,
        /// Port on the device's loopback.
        port: u16,
        /// Expected status code.
        #[serde(default)]
        expected_status: Option<u16>,
    },
    /// TCP connect to 127.0.0.1:`port`.
    Tcp {
        /// Port on the device's loopback.
        port: u16,
    },
    /// Runs a command; healthy on exit status 0.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// A probe kind this build does not know (sent by a newer controller); the agent reports
    /// the app's health as unknown rather than refusing the whole desired state.
    #[serde(other)]
    Unsupported,
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The probe.
    pub probe: ProbeKind,
    /// Time between probes.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time one probe may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failures before the app counts as unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Grace after start during which failures do not count.
    #[serde(default)]
    pub start_period_ms: u64,
}

fn default_interval_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    3
}

/// Resource limits and requests, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory limit, bytes (RLIMIT_AS and cgroup memory.max).
    pub memory_limit: Option<u64>,
    /// CPU limit, millicores (cgroup cpu.max).
    pub cpu_limit_millis: Option<u32>,
    /// Memory the app needs, bytes (placement).
    pub memory_request: Option<u64>,
    /// CPU the app needs, millicores (placement).
    pub cpu_request_millis: Option<u32>,
    /// Open-file limit (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
}

/// Everything about how to run an app, beside which artifact to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    /// Environment variables given to the app.
    pub env: BTreeMap<String, String>,
    /// Names of the variables in `env` whose values are secret (the manifest's
    /// `configuration.secrets`): shown only to admin tokens, never logged.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub secret_env: BTreeSet<String>,
    /// Configuration files written before start.
    pub files: Vec<ConfigFile>,
    /// Runtime and restart policy.
    pub runtime: RuntimeSpec,
    /// Health check, if any.
    pub healthcheck: Option<HealthCheck>,
    /// Limits and requests.
    pub resources: Resources,
}

/// What the API shows instead of a secret value.
pub const REDACTED: &str = "<redacted>";

impl AppSpec {
    /// A copy with every secret value and secret file content replaced by [`REDACTED`], for
    /// readers that may not see secrets (every API token below admin).
    pub fn redacted(&self) -> AppSpec {
        let mut out = self.clone();
        for name in &self.secret_env {
            if let Some(v) = out.env.get_mut(name) {
                *v = REDACTED.to_string();
            }
        }
        for f in out.files.iter_mut().filter(|f| f.secret) {
            f.content = REDACTED.to_string();
        }
        out
    }

    /// True when the spec holds a secret value.
    pub fn has_secrets(&self) -> bool {
        !self.secret_env.is_empty() || self.files.iter().any(|f| f.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, DEFAULT_MAX_PAYLOAD};

    #[test]
    fn empty_map_means_defaults() {
        #[derive(Serialize)]
        struct Empty {}
        let spec: AppSpec =
            decode(&encode(&Empty {}).expect("encodes"), DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(spec, AppSpec::default());
        assert_eq!(spec.runtime.kind, RuntimeKind::Raw);
        assert_eq!(spec.runtime.restart, RestartPolicy::Always);
    }

    #[test]
    fn runtime_from_an_older_controller_has_no_scripts() {
        let old = serde_json::json!({"type": "raw", "args": ["-v"], "future_field": 1});
        let rt: RuntimeSpec =
            decode(&encode(&old).expect("encodes"), DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(rt.args, ["-v"]);
        assert_eq!(rt.install_script, None);
        assert_eq!(rt.pre_start_script, None);
    }

    #[test]
    fn secrets_are_redacted_and_nothing_else() {
        let mut spec = AppSpec::default();
        spec.env.insert("MODE".into(), "fast".into());
        spec.env.insert("DB_PASSWORD".into(), "hunter2".into());
        spec.secret_env.insert("DB_PASSWORD".into());
        spec.files.push(ConfigFile {
            path: "key.pem".into(),
            content: "PRIVATE".into(),
            mode: None,
            secret: true,
        });
        spec.files.push(ConfigFile {
            path: "app.conf".into(),
            content: "x=1".into(),
            mode: None,
            secret: false,
        });
        assert!(spec.has_secrets());
        let r = spec.redacted();
        assert_eq!(r.env["MODE"], "fast");
        assert_eq!(r.env["DB_PASSWORD"], REDACTED);
        assert_eq!(r.files[0].content, REDACTED);
        assert_eq!(r.files[1].content, "x=1");
        let text = serde_json::to_string(&r).expect("json");
        assert!(!text.contains("hunter2") && !text.contains("PRIVATE"));
    }

    #[test]
    fn health_checks_round_trip() {
        let h = HealthCheck {
            probe: ProbeKind::Http {
                path: "/health".into(),
                port: 8080,
                expected_status: Some(200),
            },
            interval_ms: 1000,
            timeout_ms: 500,
            retries: 2,
            start_period_ms: 0,
        };
        let back: HealthCheck =
            decode(&encode(&h).expect("encodes"), DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(back, h);
    }
}
