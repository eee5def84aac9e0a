//! The one parser of broker addresses every FleetD component uses: `mqtt://HOST[:PORT]`
//! (also `tcp://`; port 1883 when omitted) or `mqtts://HOST[:PORT]` (TLS, port 8883). IPv6
//! hosts go in brackets. Credentials never go in the URL (they come from enrollment, tokens or
//! files), so `user@host` is refused, as are paths and port 0.

use std::fmt;
use std::str::FromStr;

/// A broker address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MqttUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`mqtts://`).
    pub tls: bool,
}

/// Why a broker URL is unusable; the text quotes it and names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker URL {url:?}: {problem}")]
pub struct MqttUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl MqttUrl {
    /// A plain-TCP URL for `host:port`.
    pub fn plain(host: impl Into<String>, port: u16) -> MqttUrl {
        MqttUrl {
            host: host.into(),
            port,
            tls: false,
        }
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for MqttUrl {
    type Err = MqttUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem| MqttUrlError {
            url: s.to_string(),
            problem,
        };
        let (rest, tls) = if let Some(r) = s.strip_prefix("mqtts://") {
            (r, true)
        } else if let Some(r) = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
        {
            (r, false)
        } else {
            return Err(bad("must start with mqtt://, mqtts:// or tcp://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad(
                "must not carry credentials (user@host); they come from enrollment or token files",
            ));
        }
        if rest.contains('/') {
            return Err(bad("must not have a path"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("has junk after ']'"))?,
                    ),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad(
                        "IPv6 hosts must be in brackets, e.g. mqtt://[::1]:1883",
                    ))
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("has an invalid port (1-65535)")),
                Ok(n) => n,
            },
        };
        Ok(MqttUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        let u: MqttUrl = "mqtt://broker.local:1884".parse().expect("valid");
        assert_eq!(u, MqttUrl::plain("broker.local", 1884));
        let u: MqttUrl = "mqtt://10.0.0.1/".parse().expect("valid");
        assert_eq!(u.port, 1883);
        let u: MqttUrl = "tcp://[::1]:1999".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 1999, false));
        assert_eq!(u.to_string(), "mqtt://[::1]:1999");
        let u: MqttUrl = "mqtts://fleet.example".parse().expect("valid");
        assert_eq!((u.port, u.tls), (8883, true));
        assert_eq!(u.to_string(), "mqtts://fleet.example:8883");
        let u: MqttUrl = "mqtts://[::1]".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (bad, problem) in [
            ("broker:1883", "must start"),
            ("http://x:1", "must start"),
            ("mqtt://", "no host"),
            ("mqtt://x:99999", "invalid port"),
            ("mqtt://x:0", "invalid port"),
            ("mqtt://x:1/a", "path"),
            ("mqtt://user:pw@x:1", "credentials"),
            ("mqtt://[::1", "unclosed"),
            ("mqtt://::1:1883", "brackets"),
        ] {
            let e = bad.parse::<MqttUrl>().expect_err(bad);
            assert!(e.to_string().contains(problem), "{bad}: {e}");
        }
    }
}
