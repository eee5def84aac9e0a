//! fleetd's serving flags, and the small pure derivations from them (broker URL parsing, the
//! public URL agents download from).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Default cap on one uploaded artifact: 8 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8 * 1024 * 1024 * 1024;

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
    /// Use this external broker (mqtt://HOST:PORT) instead of starting the embedded one.
    #[arg(long)]
    pub mqtt_url: Option<MqttUrl>,
    /// Base URL agents download artifacts from (default: derived from the HTTP address).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Largest accepted artifact upload, in bytes.
    #[arg(long, env = "FLEETD_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES, hide = true)]
    pub max_upload_bytes: u64,
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
}

/// An MQTT broker address given as `mqtt://HOST:PORT` (or `tcp://`; port 1883 when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl MqttUrl {
    /// The URL for an address we listen on ourselves.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self {
            host: reachable_ip(addr.ip()).to_string(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for MqttUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(|| {
                format!("broker URL {s:?} must start with mqtt:// (TLS is not supported yet)")
            })?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!("broker URL {s:?} must be mqtt://HOST:PORT"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("broker URL {s:?} has an unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("broker URL {s:?} has no host"));
        }
        let port = match port {
            None => 1883,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("broker URL {s:?} has an invalid port {p:?}"))?,
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
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

/// `http://IP:PORT` for the address the HTTP API actually listens on.
pub fn http_url(addr: SocketAddr) -> String {
    format!(
        "http://{}",
        SocketAddr::new(reachable_ip(addr.ip()), addr.port())
    )
}

/// The public base URL: the flag when given (without a trailing slash), else the HTTP address.
pub fn public_url(flag: Option<&str>, http_addr: SocketAddr) -> String {
    match flag {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => http_url(http_addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse() {
        let u: MqttUrl = "mqtt://broker.local:1884".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("broker.local", 1884));
        let u: MqttUrl = "mqtt://10.0.0.1".parse().expect("valid");
        assert_eq!(u.port, 1883);
        let u: MqttUrl = "tcp://[::1]:1999".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1999));
        assert_eq!(u.to_string(), "mqtt://[::1]:1999");
        for bad in [
            "broker:1883",
            "mqtts://x:1",
            "mqtt://",
            "mqtt://x:99999",
            "mqtt://x:1/a",
        ] {
            assert!(bad.parse::<MqttUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn public_url_defaults_to_a_reachable_http_address() {
        let any: SocketAddr = "0.0.0.0:7878".parse().expect("valid");
        assert_eq!(public_url(None, any), "http://127.0.0.1:7878");
        assert_eq!(
            public_url(Some("https://fleet.example.com/"), any),
            "https://fleet.example.com"
        );
        let v6: SocketAddr = "[::]:80".parse().expect("valid");
        assert_eq!(http_url(v6), "http://[::1]:80");
    }
}
