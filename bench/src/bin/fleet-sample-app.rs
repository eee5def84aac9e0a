//! `fleet-sample-app`: a tiny HTTP service that the demo and the tests deploy with FleetD. It
//! shows which version runs on which device (`GET /`) and answers health checks
//! (`GET /health`), using only the standard library so it builds for any target.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

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
fn respond(request_line: &str, id: &Identity) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/health") => ("200 OK", "text/plain", "ok".into()),
        ("GET", "/") => ("200 OK", "application/json", id.json()),
        _ => ("404 Not Found", "text/plain", "not found".into()),
    }
}

fn handle(stream: TcpStream, id: &Identity) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers; this service reads no request bodies.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let (status, content_type, body) = respond(&request_line, id);
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
    let id = std::sync::Arc::new(Identity::from_env());
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("127.0.0.1:{port}"));
    println!("fleet-sample-app {} listening on {addr}", id.version);
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let id = std::sync::Arc::clone(&id);
                std::thread::spawn(move || {
                    if let Err(e) = handle(stream, &id) {
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

    #[test]
    fn routes() {
        assert_eq!(respond("GET /health HTTP/1.1\r\n", &id()).2, "ok");
        let (status, ctype, body) = respond("GET /?x=1 HTTP/1.1\r\n", &id());
        assert_eq!((status, ctype), ("200 OK", "application/json"));
        assert_eq!(
            body,
            r#"{"app":"web","version":"2.0.0","device":"dev-\"1\""}"#
        );
        assert_eq!(respond("POST / HTTP/1.1", &id()).0, "404 Not Found");
        assert_eq!(respond("GET /nope HTTP/1.1", &id()).0, "404 Not Found");
        assert_eq!(respond("", &id()).0, "404 Not Found");
    }
}
