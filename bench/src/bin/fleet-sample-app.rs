//! `fleet-sample-app`: a tiny HTTP service that the demo and the tests deploy with FleetD. It
//! shows which version runs on which device (`GET /`) and answers health checks
//! (`GET /health`), using only the standard library so it builds for any target.
//!
//! It can also misbehave on purpose, so rollout triggers can be shown with real processes:
//! `SAMPLE_HEALTH_STATUS` (the `/health` status code, default 200), `SAMPLE_ERROR_PERCENT`
//! (that share of `GET /` answered 500), `SAMPLE_SELF_LOAD_RPS` (requests per second it sends
//! to its own `GET /`, standing in for clients). It counts `GET /` requests and errors and,
//! when the agent gives it `FLEET_METRICS_URL`, posts `{"requests":N,"errors":E}` there every
//! second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the app behaves, from its environment.
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// Status code of `/health` (200 when unset).
    health_status: u16,
    /// Percentage of `GET /` answered 500.
    error_percent: u64,
}

/// The app's own request counters (cumulative), as the error-rate trigger reads them.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts one `GET /` and says whether it must fail: failures are spread evenly (request
    /// `n` fails when the running share of failures would fall behind the percentage), so any
    /// window of requests sees the configured rate; no randomness.
    fn count(&self, b: Behaviour) -> bool {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let fail = (n + 1) * b.error_percent / 100 > n * b.error_percent / 100;
        if fail {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    fn json(&self) -> String {
        format!(
            "{{\"requests\":{},\"errors\":{}}}",
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }
}

/// Reads a numeric environment variable; a malformed value is an error naming it.
fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Behaviour {
    fn from_env() -> Result<Self, String> {
        let health_status = env_number("SAMPLE_HEALTH_STATUS", 200)?;
        let error_percent = env_number("SAMPLE_ERROR_PERCENT", 0)?;
        if !(100..=599).contains(&health_status) {
            return Err(format!(
                "SAMPLE_HEALTH_STATUS={health_status} is not an HTTP status"
            ));
        }
        if error_percent > 100 {
            return Err(format!(
                "SAMPLE_ERROR_PERCENT={error_percent} is not a percentage"
            ));
        }
        Ok(Self {
            health_status: health_status as u16,
            error_percent,
        })
    }
}

/// What the app says about itself, from the environment the agent sets.
struct Identity {
    app: String,
    version: String,
    device: String,
}

impl Identity {
    fn from_env() -> Self {
        let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
        Self {
            app: var("FLEET_APP_NAME", "fleet-sample-app"),
            version: var("FLEET_APP_VERSION", env!("CARGO_PKG_VERSION")),
            device: var("FLEET_DEVICE_ID", "unknown"),
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"app\":{},\"version\":{},\"device\":{}}}",
            json_string(&self.app),
            json_string(&self.version),
            json_string(&self.device)
        )
    }
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status line, content type and body for a request line like `GET /health HTTP/1.1`.
fn respond(
    request_line: &str,
    id: &Identity,
    b: Behaviour,
    counters: &Counters,
) -> (String, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/health") if b.health_status == 200 => {
            ("200 OK".into(), "text/plain", "ok".into())
        }
        ("GET", "/health") => (
            format!("{} Unhealthy", b.health_status),
            "text/plain",
            "unhealthy".into(),
        ),
        ("GET", "/") if counters.count(b) => (
            "500 Internal Server Error".into(),
            "text/plain",
            "injected error".into(),
        ),
        ("GET", "/") => ("200 OK".into(), "application/json", id.json()),
        _ => ("404 Not Found".into(), "text/plain", "not found".into()),
    }
}

/// Sends one HTTP/1.1 request and returns the status code.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = String::new();
    s.read_to_string(&mut head)?;
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer {head:?}")))
}

/// Splits `http://HOST:PORT/path` into a socket address and a path.
fn parse_http_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = host
        .parse()
        .map_err(|_| format!("{url:?}: {host:?} is not an IP address and port"))?;
    Ok((addr, format!("/{path}")))
}

/// Background loops: synthetic load on our own `GET /`, and counter reports to the agent.
fn spawn_loops(own: SocketAddr, counters: Arc<Counters>) -> Result<(), String> {
    let rps = env_number("SAMPLE_SELF_LOAD_RPS", 0)?;
    if rps > 0 {
        let gap = Duration::from_micros(1_000_000 / rps.min(1000));
        std::thread::spawn(move || loop {
            let _ = http(own, "GET", "/", "");
            std::thread::sleep(gap);
        });
    }
    if let Ok(url) = std::env::var("FLEET_METRICS_URL") {
        let (addr, path) = parse_http_url(&url).map_err(|e| format!("FLEET_METRICS_URL: {e}"))?;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            match http(addr, "POST", &path, &counters.json()) {
                Ok(204) | Ok(200) => {}
                Ok(code) => eprintln!("fleet-sample-app: counters refused with {code}"),
                Err(e) => eprintln!("fleet-sample-app: cannot report counters: {e}"),
            }
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, id: &Identity, b: Behaviour, c: &Counters) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers; this service reads no request bodies.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let (status, content_type, body) = respond(&request_line, id, b, c);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn main() {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("fleet-sample-app: PORT={p:?} is not a port number");
                std::process::exit(2);
            }
        },
        Err(_) => 0,
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fleet-sample-app: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let id = Arc::new(Identity::from_env());
    let behaviour = match Behaviour::from_env() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("fleet-sample-app: {e}");
            std::process::exit(2);
        }
    };
    let counters = Arc::new(Counters::default());
    let own = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet-sample-app: cannot read the listening address: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = spawn_loops(own, Arc::clone(&counters)) {
        eprintln!("fleet-sample-app: {e}");
        std::process::exit(2);
    }
    println!("fleet-sample-app {} listening on {own}", id.version);
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let id = Arc::clone(&id);
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    if let Err(e) = handle(stream, &id, behaviour, &counters) {
                        eprintln!("fleet-sample-app: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("fleet-sample-app: accept failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            app: "web".into(),
            version: "2.0.0".into(),
            device: "dev-\"1\"".into(),
        }
    }

    fn ok() -> Behaviour {
        Behaviour {
            health_status: 200,
            error_percent: 0,
        }
    }

    #[test]
    fn routes() {
        let c = Counters::default();
        assert_eq!(respond("GET /health HTTP/1.1\r\n", &id(), ok(), &c).2, "ok");
        let (status, ctype, body) = respond("GET /?x=1 HTTP/1.1\r\n", &id(), ok(), &c);
        assert_eq!((status.as_str(), ctype), ("200 OK", "application/json"));
        assert_eq!(
            body,
            r#"{"app":"web","version":"2.0.0","device":"dev-\"1\""}"#
        );
        assert_eq!(
            respond("POST / HTTP/1.1", &id(), ok(), &c).0,
            "404 Not Found"
        );
        assert_eq!(
            respond("GET /nope HTTP/1.1", &id(), ok(), &c).0,
            "404 Not Found"
        );
        assert_eq!(respond("", &id(), ok(), &c).0, "404 Not Found");
        assert_eq!(c.json(), r#"{"requests":1,"errors":0}"#);
    }

    #[test]
    fn injected_errors_and_health_follow_the_environment_knobs() {
        let c = Counters::default();
        let bad = Behaviour {
            health_status: 503,
            error_percent: 25,
        };
        assert_eq!(
            respond("GET /health HTTP/1.1", &id(), bad, &c).0,
            "503 Unhealthy"
        );
        let failed = (0..200)
            .filter(|_| {
                respond("GET / HTTP/1.1", &id(), bad, &c)
                    .0
                    .starts_with("500")
            })
            .count();
        assert_eq!(failed, 50, "exactly 25%");
        assert_eq!(c.json(), r#"{"requests":200,"errors":50}"#);
        assert!(parse_http_url("http://127.0.0.1:9/v1/metrics/a").is_ok());
        assert!(parse_http_url("https://x/").is_err());
        assert!(parse_http_url("http://localhost:9/").is_err());
    }
}
