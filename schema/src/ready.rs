//! The line fleetd prints on stdout once it serves, `fleetd ready http=<URL> mqtt=<URL>`: how
//! whoever started fleetd (its tests, the demo, fleet-sim, a supervisor script) learns that it
//! is up and where it listens (ports chosen by the kernel included). fleetd prints it with
//! [`ReadyLine`]'s `Display` and every reader parses it with [`ReadyLine::parse`], so the two
//! cannot drift apart.

use crate::MqttUrl;
use std::fmt;

/// The prefix that marks the ready line among fleetd's output.
pub const PREFIX: &str = "fleetd ready ";

/// Where a ready fleetd can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    /// The HTTP API's base URL, e.g. `https://127.0.0.1:8443` (no trailing slash).
    pub http: String,
    /// The broker fleetd is connected to.
    pub mqtt: MqttUrl,
}

/// Why a line starting with [`PREFIX`] is not a usable ready line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fleetd's ready line {line:?}: {problem}")]
pub struct ReadyLineError {
    /// The line as read.
    pub line: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ReadyLine {
    /// Reads one line of fleetd's stdout: `Ok(None)` for any other line, an error naming the
    /// problem for a ready line without a usable `http=` or `mqtt=` field.
    pub fn parse(line: &str) -> Result<Option<ReadyLine>, ReadyLineError> {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let bad = |problem: String| ReadyLineError {
            line: line.to_string(),
            problem,
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .ok_or_else(|| bad(format!("has no {name} field")))
        };
        let http = field("http=")?;
        if !(http.starts_with("http://") || http.starts_with("https://")) {
            return Err(bad(format!("http={http} is not an http(s) URL")));
        }
        let mqtt = field("mqtt=")?
            .parse::<MqttUrl>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(ReadyLine {
            http: http.trim_end_matches('/').to_string(),
            mqtt,
        }))
    }
}

impl fmt::Display for ReadyLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}http={} mqtt={}", self.http, self.mqtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_lines_parse_back() {
        let r = ReadyLine {
            http: "https://127.0.0.1:40123".into(),
            mqtt: MqttUrl::plain("127.0.0.1", 1883),
        };
        let line = r.to_string();
        assert_eq!(
            line,
            "fleetd ready http=https://127.0.0.1:40123 mqtt=mqtt://127.0.0.1:1883"
        );
        assert_eq!(ReadyLine::parse(&format!("{line}\n")), Ok(Some(r)));
    }

    #[test]
    fn other_lines_are_skipped_and_broken_ready_lines_named() {
        assert_eq!(ReadyLine::parse("fleetd starting"), Ok(None));
        assert_eq!(ReadyLine::parse(""), Ok(None));
        for (bad, problem) in [
            ("fleetd ready http=http://x", "no mqtt= field"),
            ("fleetd ready mqtt=mqtt://x:1", "no http= field"),
            (
                "fleetd ready http=ftp://x mqtt=mqtt://x:1",
                "not an http(s) URL",
            ),
            ("fleetd ready http=http://x mqtt=mqtt://x:0", "invalid port"),
        ] {
            let e = ReadyLine::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(problem), "{bad}: {e}");
        }
    }
}
