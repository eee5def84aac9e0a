//! The health probes themselves: an HTTP GET or a TCP connect on the device's loopback, or a
//! command. Each is bounded by the check's timeout and returns an error text for the status.

use fleet_schema::app_spec::ProbeKind;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs one probe; `Ok` means healthy. `cwd` is the app's directory (for exec probes).
pub async fn run(probe: &ProbeKind, timeout: Duration, cwd: &Path) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_inner(probe, cwd)).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {} ms", timeout.as_millis())),
    }
}

async fn run_inner(probe: &ProbeKind, cwd: &Path) -> Result<(), String> {
    match probe {
        ProbeKind::Tcp { port } => TcpStream::connect(("127.0.0.1", *port))
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp 127.0.0.1:{port}: {e}")),
        ProbeKind::Http {
            path,
            port,
            expected_status,
        } => {
            let status = http_status(*port, path).await?;
            let ok = match expected_status {
                Some(want) => status == *want,
                None => (200..300).contains(&status),
            };
            if ok {
                Ok(())
            } else {
                Err(format!("http GET {path} on port {port}: status {status}"))
            }
        }
        ProbeKind::Exec { command } => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| "exec probe has an empty command".to_string())?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("exec {program}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("exec {program}: {status}"))
            }
        }
        ProbeKind::Unsupported => Err("unsupported probe kind".into()),
    }
}

/// GETs `path` on 127.0.0.1:`port` and returns the status code.
async fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("http 127.0.0.1:{port}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: fleet-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("http write: {e}"))?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < buf.len() {
        let n = s
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("http read: {e}"))?;
        if n == 0 || buf[..got + n].contains(&b'\n') {
            got += n;
            break;
        }
        got += n;
    }
    parse_status_line(&buf[..got]).ok_or_else(|| "http: malformed response".to_string())
}

/// The status code of an HTTP/1.x response's first line.
pub fn parse_status_line(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
    }

    /// A one-shot HTTP server answering `status` (real sockets).
    fn serve(status: u16) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut b = [0u8; 512];
                let _ = c.read(&mut b);
                let _ = write!(c, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[tokio::test]
    async fn probes_of_each_kind_pass_and_fail() {
        let cwd = Path::new("/");
        let t = Duration::from_secs(2);
        let http = |port, expected_status| ProbeKind::Http {
            path: "/health".into(),
            port,
            expected_status,
        };
        assert_eq!(run(&http(serve(200), None), t, cwd).await, Ok(()));
        let err = run(&http(serve(503), None), t, cwd).await.expect_err("503");
        assert!(err.contains("503"), "{err}");
        assert_eq!(run(&http(serve(204), Some(204)), t, cwd).await, Ok(()));

        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(run(&ProbeKind::Tcp { port }, t, cwd).await, Ok(()));
        drop(l);
        assert!(run(&ProbeKind::Tcp { port }, t, cwd).await.is_err());

        let exec = |c: &[&str]| ProbeKind::Exec {
            command: c.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(run(&exec(&["true"]), t, cwd).await, Ok(()));
        assert!(run(&exec(&["false"]), t, cwd).await.is_err());
        let slow = run(&exec(&["sleep", "5"]), Duration::from_millis(200), cwd).await;
        assert!(slow.expect_err("times out").contains("timed out"));
    }
}
