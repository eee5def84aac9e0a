//! Download URLs expire (fleetd's HMAC URLs and S3 presigned URLs alike), but a desired state
//! is retained for as long as it is current, so a device that was offline longer than a URL's
//! lifetime receives a stale one. When the store refuses the URL (401, 403, 410) the agent asks
//! fleetd for a fresh URL, `GET <server>/api/v1/artifacts/<name>/<version>/url`, with its own
//! device credential (fleetd hands out URLs only for the artifacts of the device's desired
//! state), and downloads from it. `<server>` is the agent's configured fleetd address, else the
//! `refresh_url` fleetd put in the (signed) artifact reference.

use crate::fetch::download::{self, DownloadError, DownloadRequest};
use fleet_schema::api::DownloadUrl;
use fleet_schema::ArtifactRef;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Largest answer accepted from the fresh-URL endpoint.
const MAX_ANSWER: u64 = 64 * 1024;

/// True for statuses by which a store says "this URL is no longer (or never was) valid".
fn url_refused(e: &DownloadError) -> bool {
    matches!(e, DownloadError::Status { status, .. } if matches!(status, 401 | 403 | 410))
}

/// fleetd as the agent asks it for fresh URLs.
#[derive(Clone)]
pub struct Controller {
    /// fleetd's HTTP base URL.
    pub base: Option<String>,
    /// The device's HTTP credential (`device:<id>:<secret>`; a secret, never logged).
    pub credential: Option<String>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Controller({:?})", self.base)
    }
}

/// Downloads and verifies `artifact` into `partial`, refreshing the URL through fleetd when the
/// store refuses the one in the desired state.
pub fn fetch_artifact(
    artifact: &ArtifactRef,
    controller: &Controller,
    partial: &Path,
    cancel: &AtomicBool,
) -> Result<(), DownloadError> {
    let req = DownloadRequest {
        url: &artifact.url,
        size: artifact.size,
        sha256: &artifact.sha256,
        sha512: artifact.sha512.as_deref(),
        partial,
    };
    match download::download(&req, cancel) {
        Err(e) if url_refused(&e) => {
            let endpoint = match (controller.base.as_deref(), &artifact.refresh_url) {
                (Some(c), _) => format!(
                    "{}/api/v1/artifacts/{}/{}/url",
                    c.trim_end_matches('/'),
                    artifact.name,
                    artifact.version
                ),
                (None, Some(r)) => r.clone(),
                (None, None) => {
                    return Err(DownloadError::Refresh {
                        message: format!("{e}, and fleetd's address is not known yet (no controller presence received, no refresh URL)"),
                    })
                }
            };
            tracing::info!(app = %artifact.name, version = %artifact.version, error = %e, "download URL refused; asking fleetd for a fresh one");
            let fresh = fresh_url(&endpoint, controller.credential.as_deref())?;
            download::download(&DownloadRequest { url: &fresh, ..req }, cancel)
        }
        other => other,
    }
}

/// Asks fleetd's fresh-URL endpoint (`.../artifacts/<name>/<version>/url`) for a new URL.
pub fn fresh_url(url: &str, credential: Option<&str>) -> Result<String, DownloadError> {
    let fail = |message: String| DownloadError::Refresh {
        message: format!("cannot get a fresh download URL from {url}: {message}"),
    };
    let mut req = crate::http::client().get(url);
    if let Some(c) = credential {
        req = req.header("authorization", format!("Bearer {c}"));
    }
    let resp = req.call().map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.into_body()
        .into_reader()
        .take(MAX_ANSWER)
        .read_to_string(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    if status != 200 {
        return Err(fail(format!("HTTP status {status}: {}", body.trim())));
    }
    let answer: DownloadUrl =
        serde_json::from_str(&body).map_err(|e| fail(format!("malformed answer: {e}")))?;
    Ok(answer.url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Serves: `/stale` → 403, `/api/v1/artifacts/app/1.0.0/url` → JSON pointing at `/fresh`,
    /// `/fresh` → the content.
    fn serve(content: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let fresh = format!("{base}/fresh");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or_default();
                let (status, body): (&str, Vec<u8>) = match path {
                    "/stale" => ("403 Forbidden", b"{\"error\":\"expired\"}".to_vec()),
                    "/api/v1/artifacts/app/1.0.0/url" => (
                        "200 OK",
                        format!("{{\"url\":\"{fresh}\",\"expires_at\":1}}").into_bytes(),
                    ),
                    "/fresh" => ("200 OK", content.to_vec()),
                    _ => ("404 Not Found", Vec::new()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        base
    }

    #[test]
    fn a_refused_url_is_replaced_by_a_fresh_one_from_fleetd() {
        let base = serve(b"abc");
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = dir.path().join("p");
        let artifact = ArtifactRef {
            name: "app".into(),
            version: "1.0.0".into(),
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            url: format!("{base}/stale"),
            ..Default::default()
        };
        let cancel = AtomicBool::new(false);
        let none = Controller {
            base: None,
            credential: None,
        };
        let err = fetch_artifact(&artifact, &none, &partial, &cancel).expect_err("no controller");
        assert!(err.to_string().contains("not known"), "{err}");
        let ctl = Controller {
            base: Some(base.clone()),
            credential: Some("device:d:x".into()),
        };
        fetch_artifact(&artifact, &ctl, &partial, &cancel).expect("refreshed");
        assert_eq!(std::fs::read(&partial).expect("read"), b"abc");
        std::fs::remove_file(&partial).expect("remove");
        let with_refresh = ArtifactRef {
            refresh_url: Some(format!("{base}/api/v1/artifacts/app/1.0.0/url")),
            ..artifact
        };
        fetch_artifact(&with_refresh, &none, &partial, &cancel).expect("refreshed via the ref");
        assert_eq!(std::fs::read(&partial).expect("read"), b"abc");
    }
}
