//! Hostile uploads and request bodies against a real fleetd: a file sent before its metadata
//! is refused before anything is staged, uploads in flight and their size are bounded with
//! answers naming the limit, an alias-bomb manifest is refused at once without growing the data
//! directory, and an oversized JSON body is refused naming its limit.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use support::{admin_token, multipart, parse_json, post, Fleetd};

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn staging(f: &Fleetd) -> std::path::PathBuf {
    f.data_dir().join("artifacts").join(".tmp")
}

fn limit_hits(f: &Fleetd, limit: &str) -> u64 {
    let needle = format!("limit=\"{limit}\"");
    f.metrics()
        .lines()
        .filter(|l| l.starts_with("fleetd_limit_hits_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn staged_files(f: &Fleetd) -> usize {
    std::fs::read_dir(staging(f)).map_or(0, |d| d.count())
}

const BOUNDARY: &str = "upload-limits-boundary";

/// Opens a raw upload: the request head and `parts_start` (the multipart text up to the file's
/// bytes); the caller streams the rest. A thread collects the answer.
fn raw_upload(
    f: &Fleetd,
    parts_start: &str,
    total_len: u64,
) -> (TcpStream, std::thread::JoinHandle<String>) {
    let addr = f.http.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/v1/artifacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        admin_token(),
        parts_start.len() as u64 + total_len
    );
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(parts_start.as_bytes()).expect("parts");
    let mut reader = conn.try_clone().expect("clone");
    let answer = std::thread::spawn(move || {
        reader
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // A whole JSON answer (fleetd's answers are one JSON object).
                    let text = String::from_utf8_lossy(&out);
                    if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    (conn, answer)
}

fn file_part_start() -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

fn metadata_part(json: &str) -> String {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{json}\r\n")
}

#[test]
fn a_file_before_its_metadata_is_staged_only_within_its_bound() {
    // The attack: a file part first, streamed on and on, its metadata never checked. A file
    // may come first (the seed's curl call does that), but only within its own bound.
    let f = Fleetd::start_with_args(&["--max-upload-before-metadata-bytes", "1048576"]);
    const TOTAL: u64 = 50 * 1024 * 1024;
    let (mut conn, answer) = raw_upload(&f, &file_part_start(), TOTAL);
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    let mut most_staged = 0u64;
    while sent < TOTAL {
        if conn.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
        most_staged = most_staged.max(dir_bytes(&staging(&f)));
        std::thread::sleep(Duration::from_millis(5));
    }
    let answer = answer.join().expect("reader");
    assert!(
        most_staged <= 2 * 1024 * 1024,
        "{most_staged} bytes were staged for an upload whose metadata never came"
    );
    assert!(sent < TOTAL, "fleetd stopped reading the body early");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("--max-upload-before-metadata-bytes"),
        "{answer}"
    );
    assert!(limit_hits(&f, "upload_before_metadata_bytes") >= 1);
    assert!(
        support::wait_until(Duration::from_secs(10), || staged_files(&f) == 0),
        "nothing left in the staging directory"
    );
}

#[test]
fn a_second_upload_beyond_the_in_flight_limit_gets_the_limit_error() {
    let f = Fleetd::start_with_args(&["--max-uploads-in-flight", "1"]);
    let meta = r#"{"name":"slow","version":"1.0.0","type":"binary"}"#;
    let start = format!("{}{}", metadata_part(meta), file_part_start());
    let (mut conn, _answer) = raw_upload(&f, &start, 10 * 1024 * 1024);
    conn.write_all(&[1u8; 64 * 1024]).expect("first bytes");
    // The first upload is in flight once its staging file exists.
    assert!(
        support::wait_until(Duration::from_secs(20), || staged_files(&f) > 0),
        "the first upload never started staging"
    );
    let (status, body) = support::upload(&f, "other", "1.0.0", b"bytes");
    assert_eq!(status, 429, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(err.contains("--max-uploads-in-flight"), "{err}");
    assert!(limit_hits(&f, "uploads_in_flight") >= 1);
    // The client of the first upload goes away: its staged bytes go too, and uploads work again.
    conn.shutdown(std::net::Shutdown::Both).expect("hang up");
    drop(conn);
    assert!(
        support::wait_until(Duration::from_secs(20), || staged_files(&f) == 0),
        "a staging file was left behind by an abandoned upload"
    );
    assert!(support::wait_until(Duration::from_secs(20), || {
        support::upload(&f, "other", "1.0.0", b"bytes").0 == 201
    }));
}

#[test]
fn an_oversized_upload_is_refused_naming_the_limit() {
    let f = Fleetd::start_with_args(&["--max-upload-bytes", "1000"]);
    // Declared in the metadata: refused before the file is read.
    let meta = r#"{"name":"big","version":"1.0.0","type":"binary","size":5000}"#;
    let (ct, body) = multipart(&[
        ("metadata", None, meta.as_bytes()),
        ("file", Some("big"), &[0u8; 5000]),
    ]);
    let (status, text) = post(&f.url("/api/v1/artifacts"), &ct, &body);
    assert_eq!(status, 413, "{text}");
    let err = parse_json(&text)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("--max-upload-bytes") && err.contains("5000"),
        "{err}"
    );
    // Not declared: cut off at the limit.
    let (status, text) = support::upload(&f, "big", "1.0.0", &[0u8; 5000]);
    assert_eq!(status, 413, "{text}");
    let err = text["error"].as_str().unwrap_or_default();
    assert!(err.contains("--max-upload-bytes"), "{err}");
    assert!(limit_hits(&f, "upload_bytes") >= 2);
    assert_eq!(staged_files(&f), 0);
}

/// The reported alias bomb: one 100 KB anchor in `configuration.env`, referenced 10,000 times
/// in `runtime.args` (136 KiB of YAML; accepted before with 2.9 GiB resident and 1.1 GB stored).
fn alias_bomb() -> String {
    let big = "x".repeat(100_000);
    let aliases = vec!["*b"; 10_000].join(",");
    format!(
        "apiVersion: fleet.v1\nkind: Application\nmetadata:\n  name: bomb\n  version: 1.0.0\n\
         spec:\n  artifacts:\n    - name: bomb\n      version: 1.0.0\n      type: binary\n\
         \x20 configuration:\n    env:\n      BIG: &b {big}\n\
         \x20 runtime:\n    type: raw\n    args: [{aliases}]\n"
    )
}

#[test]
fn an_alias_bomb_manifest_is_refused_without_growing_the_data_directory() {
    let f = Fleetd::start();
    let bomb = alias_bomb();
    assert!(bomb.len() < 140 * 1024, "{}", bomb.len());
    let before = dir_bytes(&f.data_dir());
    let (status, text) = post(
        &f.url("/api/v1/applications"),
        "application/yaml",
        bomb.as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    let err = parse_json(&text)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("expands beyond"), "{err}");
    assert!(err.contains("--max-manifest-bytes"), "{err}");
    let after = dir_bytes(&f.data_dir());
    assert!(
        after <= before + 1024 * 1024,
        "data directory grew from {before} to {after} bytes"
    );
    let (_, list) = support::get(&f.url("/api/v1/applications"));
    assert_eq!(parse_json(&list), serde_json::json!([]));
    assert!(limit_hits(&f, "manifest_bytes") >= 1);
}

#[test]
fn an_oversized_json_body_is_refused_naming_the_limit() {
    let f = Fleetd::start();
    let huge = format!(
        "{{\"application\":\"a\",\"version\":\"1.0.0\",\"devices\":[{}]}}",
        vec!["\"d\""; 800_000].join(",")
    );
    assert!(huge.len() > 3 * 1024 * 1024);
    // fleetd answers from the Content-Length, before the body: read while sending it.
    let addr = f.http.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        admin_token(),
        huge.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    let mut writer = conn.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(huge.as_bytes());
    });
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&answer).contains("\"}") {
            break;
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-request-body-bytes"), "{answer}");
    assert!(limit_hits(&f, "request_body_bytes") >= 1);
}

#[test]
fn the_body_timeout_cuts_a_stalled_upload_but_not_a_slow_one_that_progresses() {
    let f = Fleetd::start_with_args(&["--http-body-timeout-secs", "2"]);
    let meta = r#"{"name":"slow","version":"1.0.0","type":"binary","size":6}"#;
    let start = format!("{}{}", metadata_part(meta), file_part_start());
    let end = format!("\r\n--{BOUNDARY}--\r\n");
    // One byte a second for six seconds, three times the timeout in all: stored.
    let (mut conn, answer) = raw_upload(&f, &start, 6 + end.len() as u64);
    for _ in 0..6 {
        conn.write_all(b"s").expect("a byte");
        std::thread::sleep(Duration::from_secs(1));
    }
    conn.write_all(end.as_bytes()).expect("end");
    let answer = answer.join().expect("reader");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // Stalled after the first bytes: refused, nothing left staged.
    let meta = r#"{"name":"stalled","version":"1.0.0","type":"binary"}"#;
    let start = format!("{}{}", metadata_part(meta), file_part_start());
    let (mut conn, answer) = raw_upload(&f, &start, 1000);
    conn.write_all(b"first bytes").expect("first bytes");
    let answer = answer.join().expect("reader");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-body-timeout-secs"), "{answer}");
    assert!(support::wait_until(
        Duration::from_secs(10),
        || staged_files(&f) == 0
    ));
    assert!(limit_hits(&f, "http_body_timeout") >= 1);
}
