//! Downloader tests against a tiny real HTTP server on 127.0.0.1:0.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// How the test server misbehaves.
#[derive(Clone, Copy)]
enum Mode {
    /// Serve the content, honouring Range.
    Good,
    /// On the first request, announce the full length but close after this many bytes.
    CutFirstAfter(usize),
    /// Ignore Range and always answer 200 with everything.
    NoRange,
}

struct Server {
    url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

fn serve(content: Vec<u8>, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/blob", listener.local_addr().expect("addr"));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                    range = Some(v.trim().to_string());
                }
            }
            seen.lock().expect("lock").push(range.clone());
            let start = match (mode, &range) {
                (Mode::NoRange, _) | (_, None) => None,
                (_, Some(r)) => r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok()),
            };
            let (head, body) = match start {
                Some(s) if s < content.len() => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                        content.len() - s,
                        s,
                        content.len() - 1,
                        content.len()
                    ),
                    &content[s..],
                ),
                Some(_) => (
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    &content[..0],
                ),
                None => (
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        content.len()
                    ),
                    &content[..],
                ),
            };
            let body = match mode {
                Mode::CutFirstAfter(n) if i == 0 => &body[..n.min(body.len())],
                _ => body,
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
            let _ = stream.flush();
        }
    });
    Server { url, ranges }
}

fn sha(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, data).as_ref())
}

fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn good_download_is_verified() {
    let data = content();
    let srv = serve(data.clone(), Mode::Good);
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("downloads/app-1.0.0.partial");
    let digest = sha(&data);
    let req = DownloadRequest {
        url: &srv.url,
        size: data.len() as u64,
        sha256: &digest,
        partial: &partial,
        sha512: None,
    };
    download(&req, &AtomicBool::new(false)).expect("download succeeds");
    assert_eq!(std::fs::read(&partial).expect("read"), data);
}

#[test]
fn sha_mismatch_is_refused_and_removed() {
    let data = content();
    let srv = serve(data.clone(), Mode::Good);
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    let wrong = sha(b"something else");
    let req = DownloadRequest {
        url: &srv.url,
        size: data.len() as u64,
        sha256: &wrong,
        partial: &partial,
        sha512: None,
    };
    let err = download(&req, &AtomicBool::new(false)).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "sha256 mismatch: expected {wrong}, got {}",
            sha(&data)
        )),
        "{text}"
    );
    assert!(!partial.exists());
    assert!(
        !err.is_transient(),
        "a wrong digest is the artifact's fault"
    );
}

#[test]
fn an_unreachable_server_is_transient() {
    // A port that was just free: nothing listens (fleetd restarting, a link down).
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/a");
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    let req = DownloadRequest {
        url: &url,
        size: 10,
        sha256: &sha(b"x"),
        partial: &partial,
        sha512: None,
    };
    let err = download(&req, &AtomicBool::new(false)).expect_err("nobody listens");
    assert!(err.is_transient(), "{err}");
    for (status, transient) in [(404, false), (403, false), (429, true), (503, true)] {
        let e = DownloadError::Status {
            url: url.clone(),
            status,
        };
        assert_eq!(e.is_transient(), transient, "{status}");
    }
}

#[test]
fn size_mismatch_is_refused_both_ways() {
    let data = content();
    let srv = serve(data.clone(), Mode::Good);
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    let digest = sha(&data);
    let smaller = DownloadRequest {
        url: &srv.url,
        size: 1000,
        sha256: &digest,
        partial: &partial,
        sha512: None,
    };
    let err = download(&smaller, &AtomicBool::new(false)).expect_err("too large");
    assert!(
        matches!(err, DownloadError::TooLarge { expected: 1000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("expected 1000 bytes"), "{err}");
    assert!(!partial.exists());

    let larger = DownloadRequest {
        size: data.len() as u64 + 5,
        ..smaller
    };
    let err = download(&larger, &AtomicBool::new(false)).expect_err("too small");
    assert_eq!(
        err.to_string(),
        format!(
            "size mismatch: expected {} bytes, got {}",
            data.len() + 5,
            data.len()
        )
    );
    assert!(!partial.exists());
}

#[test]
fn cut_connection_is_resumed_with_a_range_request() {
    let data = content();
    let srv = serve(data.clone(), Mode::CutFirstAfter(100_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    let digest = sha(&data);
    let req = DownloadRequest {
        url: &srv.url,
        size: data.len() as u64,
        sha256: &digest,
        partial: &partial,
        sha512: None,
    };
    let err = download(&req, &AtomicBool::new(false)).expect_err("cut");
    assert!(
        matches!(err, DownloadError::Interrupted { got: 100_000, .. }),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&partial).expect("kept").len(), 100_000);
    download(&req, &AtomicBool::new(false)).expect("resumed");
    assert_eq!(std::fs::read(&partial).expect("read"), data);
    let ranges = srv.ranges.lock().expect("lock").clone();
    assert_eq!(ranges, vec![None, Some("bytes=100000-".to_string())]);
}

#[test]
fn server_without_range_support_restarts_from_zero() {
    let data = content();
    let srv = serve(data.clone(), Mode::NoRange);
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    std::fs::write(&partial, &data[..5000]).expect("seed partial");
    let digest = sha(&data);
    let req = DownloadRequest {
        url: &srv.url,
        size: data.len() as u64,
        sha256: &digest,
        partial: &partial,
        sha512: None,
    };
    download(&req, &AtomicBool::new(false)).expect("download succeeds");
    assert_eq!(std::fs::read(&partial).expect("read"), data);
}

#[test]
fn complete_partial_needs_no_request() {
    let data = b"hello".to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    std::fs::write(&partial, &data).expect("seed");
    let digest = sha(&data);
    let req = DownloadRequest {
        url: "http://127.0.0.1:9/unreachable",
        size: 5,
        sha256: &digest,
        partial: &partial,
        sha512: None,
    };
    download(&req, &AtomicBool::new(false)).expect("verified from disk");
}

fn sha512(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA512, data).as_ref())
}

#[test]
fn sha512_is_verified_while_streaming() {
    let data = content();
    let srv = serve(data.clone(), Mode::Good);
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("p.partial");
    let (digest, good512, wrong512) = (sha(&data), sha512(&data), sha512(b"other"));
    let req = DownloadRequest {
        url: &srv.url,
        size: data.len() as u64,
        sha256: &digest,
        partial: &partial,
        sha512: Some(&good512),
    };
    download(&req, &AtomicBool::new(false)).expect("matching sha512 accepted");
    std::fs::remove_file(&partial).expect("remove");
    let bad = DownloadRequest {
        sha512: Some(&wrong512),
        ..req
    };
    let err = download(&bad, &AtomicBool::new(false)).expect_err("sha512 mismatch");
    assert_eq!(
        err.to_string(),
        format!("sha512 mismatch: expected {wrong512}, got {good512}")
    );
    assert!(!partial.exists(), "refused content is deleted");
}

#[test]
fn a_full_disk_is_transient() {
    let full = std::io::Error::from_raw_os_error(28);
    assert!(crate::fetch::download::out_of_space(&full));
    let err = DownloadError::Io {
        context: "cannot write download".into(),
        source: full,
    };
    assert!(err.is_transient(), "{err}");
    let denied = DownloadError::Io {
        context: "cannot write download".into(),
        source: std::io::Error::from_raw_os_error(13),
    };
    assert!(!denied.is_transient(), "{denied}");
}
