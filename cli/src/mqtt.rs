//! MQTT connection settings from a `mqtt://host:port` URL.

use anyhow::{bail, Result};

/// The default MQTT port.
const DEFAULT_PORT: u16 = 1883;

/// Splits `mqtt://host[:port]` (or `tcp://`) into host and port.
pub fn parse_url(url: &str) -> Result<(String, u16)> {
    let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    else {
        bail!("MQTT URL {url:?} must start with mqtt:// (TLS is not supported yet)");
    };
    let rest = rest.trim_end_matches('/');
    // "[v6addr]:port", "[v6addr]", "host:port" or "host".
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
            None => bail!("MQTT URL {url:?} has an unclosed '['"),
        },
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) => port,
            Err(_) => bail!("MQTT URL {url:?} has an invalid port {p:?}"),
        },
    };
    if host.is_empty() || host.contains('/') {
        bail!("MQTT URL {url:?} has no valid host");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").expect("valid"),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtt://broker").expect("valid"),
            ("broker".into(), 1883)
        );
        assert_eq!(
            parse_url("tcp://[::1]:1999").expect("valid"),
            ("::1".into(), 1999)
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("mqtt://x:notaport").is_err());
        assert!(parse_url("mqtt://").is_err());
    }
}
