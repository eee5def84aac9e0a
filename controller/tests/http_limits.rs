//! The HTTP server's timeouts and connection limit against a real fleetd: a slow-loris client
//! is disconnected after the header timeout, and a flood of idle connections neither exhausts
//! fleetd's file descriptors nor keeps an authenticated API call out; both show in
//! `fleetd_limit_hits_total`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{admin_token, Fleetd};

/// `fleetd_limit_hits_total{limit="<limit>"}` on /metrics (0 when absent).
fn limit_hits(f: &Fleetd, limit: &str) -> u64 {
    let needle = format!("limit=\"{limit}\"");
    f.metrics()
        .lines()
        .filter(|l| l.starts_with("fleetd_limit_hits_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn http_addr(f: &Fleetd) -> String {
    f.http.trim_start_matches("http://").to_string()
}

/// One authenticated API call on a fresh connection; `None` when the connection fails.
fn try_devices(f: &Fleetd) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let resp = agent
        .get(&f.url("/api/v1/devices"))
        .header("authorization", format!("Bearer {}", admin_token()))
        .call()
        .ok()?;
    Some(resp.status().as_u16())
}

/// Sends a request head one byte a second, never ending it; returns how long the server
/// kept the connection (`None`: still open after 40 s).
fn trickle_head(conn: &mut (impl Read + Write)) -> Option<Duration> {
    conn.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .ok()?;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(40) {
        if conn.write_all(b"a").and_then(|()| conn.flush()).is_err() {
            return Some(started.elapsed());
        }
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn a_slow_loris_client_is_disconnected_after_the_header_timeout() {
    let f = Fleetd::start_with_args(&["--http-header-timeout-secs", "2"]);
    let mut conn = TcpStream::connect(http_addr(&f)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("read timeout");
    let kept = trickle_head(&mut conn)
        .expect("a client trickling its request head was still connected after 40 s");
    assert!(
        kept >= Duration::from_secs(1),
        "disconnected after {kept:?}"
    );
    assert!(
        limit_hits(&f, "http_header_timeout") >= 1,
        "{}",
        f.metrics()
    );
    // fleetd still serves.
    assert_eq!(try_devices(&f), Some(200));
}

#[test]
fn a_slow_loris_client_over_https_is_disconnected_after_the_header_timeout() {
    use rustls::pki_types::pem::PemObject;
    let f = Fleetd::start_tls_with(&["--http-header-timeout-secs", "2"]);
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(support::test_certs().join("ca.pem"))
            .expect("ca.pem")
    {
        roots.add(cert.expect("certificate")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect(f.http.trim_start_matches("https://")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("read timeout");
    let mut tls = rustls::StreamOwned::new(client, tcp);
    let kept = trickle_head(&mut tls)
        .expect("an HTTPS client trickling its request head was still connected after 40 s");
    assert!(
        kept >= Duration::from_secs(1),
        "disconnected after {kept:?}"
    );
    assert!(
        limit_hits(&f, "http_header_timeout") >= 1,
        "{}",
        f.metrics()
    );
}

#[test]
fn idle_connections_beyond_the_limit_do_not_lock_out_the_api() {
    let f = Fleetd::start_with_args(&[
        "--max-http-connections",
        "20",
        "--http-header-timeout-secs",
        "2",
        "--http-idle-timeout-secs",
        "2",
    ]);
    // Give fleetd a small file-descriptor budget, as on a host where 20,000 idle connections
    // exhaust it: without a connection limit, 300 idle connections are enough.
    let pid = f.pid().expect("fleetd runs").to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=200:200"])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = http_addr(&f);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 250, "opened {} connections", idle.len());

    // While they stay open on our side, an authenticated call gets through once fleetd has
    // closed the idle ones it accepted (after the header timeout).
    let ok = support::wait_until(Duration::from_secs(30), || try_devices(&f) == Some(200));
    assert!(
        ok,
        "the API stayed unreachable behind idle connections; fleetd log:\n{}",
        f.stderr()
    );
    assert!(limit_hits(&f, "http_connections") >= 1, "{}", f.metrics());
    assert!(
        limit_hits(&f, "http_header_timeout") >= 1,
        "{}",
        f.metrics()
    );
    drop(idle);
}

#[test]
fn a_stalled_tls_handshake_is_disconnected_after_its_timeout() {
    let f = Fleetd::start_tls_with(&["--tls-handshake-timeout-secs", "2"]);
    let addr = f.http.trim_start_matches("https://").to_string();
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    // A TLS record header and nothing more: the handshake never completes.
    conn.write_all(&[0x16, 0x03, 0x01]).expect("partial record");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = matches!(conn.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the server sent data to a stalled handshake");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(25),
        "closed after {took:?}"
    );
    assert!(support::wait_until(Duration::from_secs(10), || limit_hits(
        &f,
        "http_tls_handshake_timeout"
    ) >= 1));
}
