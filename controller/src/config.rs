//! fleetd's serving flags, and the small pure derivations from them (broker URL parsing, the
//! public URL agents download from).

pub use fleet_schema::MqttUrl;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// The flags of `fleetd` when it serves (also the flags a future `fleetd demo` reuses).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory holding the database and the artifact store.
    #[arg(long, default_value = "./fleet-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API (port 0 picks a free port; the ready line names it).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub http_listen: SocketAddr,
    /// Address of the embedded MQTT broker (ignored with --mqtt-url).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,
    /// Use this external broker (mqtt://HOST:PORT, or mqtts:// for TLS) instead of starting the
    /// embedded one.
    #[arg(long, env = "FLEETD_MQTT_URL")]
    pub mqtt_url: Option<MqttUrl>,
    /// Base URL agents download artifacts from (default: derived from the HTTP address).
    #[arg(long)]
    pub public_url: Option<String>,
    /// How long a download URL handed to devices stays valid, in seconds (a device holding an
    /// expired one asks fleetd for a fresh URL).
    #[arg(long, env = "FLEETD_DOWNLOAD_URL_TTL_SECS", default_value_t = 24 * 3600)]
    pub download_url_ttl_secs: u64,
    /// Where artifacts are kept: `fs` (under --data-dir) or `s3` (see the --s3-* flags).
    #[arg(long, env = "FLEETD_STORE", value_enum, default_value = "fs")]
    pub store: crate::store::select::StoreKind,
    /// S3 settings, used with `--store s3`.
    #[command(flatten)]
    pub s3: crate::store::select::S3Args,
    /// Vulnerability-scan command run on every upload, with the file's path appended (exit 0 =
    /// no findings, other = findings on its output).
    #[arg(long, env = "FLEETD_SCAN_COMMAND")]
    pub scan_command: Option<String>,
    /// Refuse uploads whose scan reports findings (or cannot run).
    #[arg(long, env = "FLEETD_SCAN_REJECT")]
    pub scan_reject: bool,
    /// Longest a scan may take, seconds.
    #[arg(long, env = "FLEETD_SCAN_TIMEOUT_SECS", default_value_t = 300)]
    pub scan_timeout_secs: u64,
    /// Security settings (authentication, TLS, external broker credentials).
    #[command(flatten)]
    pub security: SecurityArgs,
    /// The metrics bridge's settings.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// The central log store's limits.
    #[command(flatten)]
    pub log_store: crate::logstore::LogStoreArgs,
    /// Resource limits (connections, timeouts, sizes); see docs/limits.md.
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
}

/// How fleetd authenticates callers and encrypts its connections.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    /// Turn off the authentication of MQTT connections and API calls (a lab network only).
    /// Signatures stay on: devices enroll without a token and pin this controller's key, and
    /// still refuse anything not signed by it. Logs a warning at start and every 5 minutes.
    #[arg(long, env = "FLEETD_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain: serve the HTTP API as HTTPS and the embedded broker as MQTT over
    /// TLS (`fleetctl certs dev` makes a development CA and certificates).
    #[arg(long, env = "FLEETD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLEETD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: the embedded broker requires every MQTT client (devices, tools) to present a
    /// certificate signed by it, on top of its credentials (the API keeps to tokens).
    #[arg(long, env = "FLEETD_MQTT_CLIENT_CA", requires = "tls_cert")]
    pub mqtt_client_ca: Option<PathBuf>,
    /// PEM CA that signs an external mqtts:// broker's certificate.
    #[arg(long, env = "FLEETD_MQTT_CA")]
    pub mqtt_ca: Option<PathBuf>,
    /// PEM client certificate for the external broker.
    #[arg(long, env = "FLEETD_MQTT_CLIENT_CERT", requires = "mqtt_client_key")]
    pub mqtt_client_cert: Option<PathBuf>,
    /// PEM private key of --mqtt-client-cert.
    #[arg(long, env = "FLEETD_MQTT_CLIENT_KEY", requires = "mqtt_client_cert")]
    pub mqtt_client_key: Option<PathBuf>,
    /// User name fleetd connects to an external broker with (default `_fleetd`).
    #[arg(long, env = "FLEETD_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// File holding the password for --mqtt-username (default: a password fleetd generates
    /// once and writes, hashed, into the --mosquitto-dir files).
    #[arg(long, env = "FLEETD_MQTT_PASSWORD_FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// Keep a Mosquitto password file and ACL file in this directory in step with enrolled
    /// devices and API tokens (`fleet.passwd`, `fleet.acl`; see `fleetctl broker config`).
    #[arg(long, env = "FLEETD_MOSQUITTO_DIR")]
    pub mosquitto_dir: Option<PathBuf>,
    /// Shell command run after each rewrite of those files, e.g. `kill -HUP $(cat /run/mosquitto.pid)`.
    #[arg(long, env = "FLEETD_MOSQUITTO_RELOAD", requires = "mosquitto_dir")]
    pub mosquitto_reload: Option<String>,
    /// Most enrollment requests without a token kept waiting for an operator.
    #[arg(long, env = "FLEETD_MAX_PENDING_ENROLLMENTS", default_value_t = crate::trust::enroll::DEFAULT_MAX_PENDING)]
    pub max_pending_enrollments: usize,
}

/// The broker URL for an address fleetd listens on itself (wildcards become loopback).
pub fn mqtt_url_for(addr: SocketAddr, tls: bool) -> MqttUrl {
    MqttUrl {
        host: reachable_ip(addr.ip()).to_string(),
        port: addr.port(),
        tls,
    }
}

/// The address to reach a listener bound to `ip` from this host: wildcard addresses become
/// loopback.
pub fn reachable_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// `http://IP:PORT` (or `https://`) for the address the HTTP API actually listens on.
pub fn http_url(addr: SocketAddr, tls: bool) -> String {
    format!(
        "{}://{}",
        if tls { "https" } else { "http" },
        SocketAddr::new(reachable_ip(addr.ip()), addr.port())
    )
}

/// The public base URL: the flag when given (without a trailing slash), else the HTTP address.
pub fn public_url(flag: Option<&str>, http_addr: SocketAddr, tls: bool) -> String {
    match flag {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => http_url(http_addr, tls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_defaults_to_a_reachable_http_address() {
        let any: SocketAddr = "0.0.0.0:7878".parse().expect("valid");
        assert_eq!(public_url(None, any, false), "http://127.0.0.1:7878");
        assert_eq!(public_url(None, any, true), "https://127.0.0.1:7878");
        assert_eq!(
            public_url(Some("https://fleet.example.com/"), any, false),
            "https://fleet.example.com"
        );
        let v6: SocketAddr = "[::]:80".parse().expect("valid");
        assert_eq!(http_url(v6, false), "http://[::1]:80");
        assert_eq!(
            mqtt_url_for(any, true).to_string(),
            "mqtts://127.0.0.1:7878"
        );
    }
}
