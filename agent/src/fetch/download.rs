//! Fetches an artifact over HTTP into `<data>/downloads/<app>-<version>.partial`, streaming to
//! disk while hashing (the file is never held in memory), refusing anything that does not match
//! the expected size, sha256 and (when given) sha512, and resuming a cut download with a
//! `Range` request. Blocking: run it on a blocking thread.

use ring::digest::{Context, SHA256, SHA512};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

const CHUNK: usize = 64 * 1024;

/// What to fetch and how to check it.
#[derive(Debug, Clone, Copy)]
pub struct DownloadRequest<'a> {
    /// Absolute http:// URL.
    pub url: &'a str,
    /// Exact expected size in bytes.
    pub size: u64,
    /// Expected sha256, lowercase hex.
    pub sha256: &'a str,
    /// Expected sha512, lowercase hex, when the controller recorded one.
    pub sha512: Option<&'a str>,
    /// Where the bytes go (kept across attempts for resuming).
    pub partial: &'a Path,
}

/// Why a download failed. The texts end up in the app's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request could not be made or the response not read.
    #[error("request to {url} failed: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an unexpected status.
    #[error("HTTP status {status} from {url}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection broke; the partial file is kept and the next attempt resumes.
    #[error("download interrupted after {got} of {expected} bytes: {message}")]
    Interrupted {
        /// Bytes on disk.
        got: u64,
        /// Bytes expected.
        expected: u64,
        /// Why.
        message: String,
    },
    /// More bytes arrived than the artifact has; refused and deleted.
    #[error("size mismatch: expected {expected} bytes, got more ({got} so far)")]
    TooLarge {
        /// Bytes expected.
        expected: u64,
        /// Bytes received when aborting.
        got: u64,
    },
    /// The server finished with fewer bytes than expected; refused and deleted.
    #[error("size mismatch: expected {expected} bytes, got {got}")]
    TooSmall {
        /// Bytes expected.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The content does not hash to the expected value; refused and deleted.
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    Sha256 {
        /// Expected digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// The content's sha512 differs (sha256 matched); refused and deleted.
    #[error("sha512 mismatch: expected {expected}, got {actual}")]
    Sha512 {
        /// Expected digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// Local file trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The URL was refused and no fresh one could be obtained from fleetd.
    #[error("{message}")]
    Refresh {
        /// What failed, naming the URL.
        message: String,
    },
    /// The agent is shutting down.
    #[error("download cancelled")]
    Cancelled,
}

impl DownloadError {
    /// Whether trying again later may well succeed: the server or the network was unreachable
    /// or overloaded (fleetd restarting, a link down, 408/429/5xx). The agent keeps retrying
    /// these and reports the app as still downloading, so a controller restart or a short
    /// outage does not fail a rollout; the step's progress deadline bounds them. A full disk
    /// is transient too: the agent retries until space is freed or the deadline passes.
    /// Everything else (wrong size or digest, 4xx, other local disk trouble) is the device's
    /// verdict: failed.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Io { source, .. } => out_of_space(source),
            DownloadError::Request { .. }
            | DownloadError::Interrupted { .. }
            | DownloadError::Refresh { .. } => true,
            DownloadError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }
}

/// Whether an I/O error means the disk (or the agent's quota) is full: trouble that freeing
/// space ends, so the agent retries instead of failing the version.
pub fn out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(nix::errno::Errno::EDQUOT as i32)
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DownloadError {
    let context = context.into();
    move |source| DownloadError::Io { context, source }
}

/// A URL without its query: the query of a download URL is a credential (a signature, S3's
/// presigned parameters), which must not reach logs or the device's reported errors.
pub fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_string()
}

fn agent() -> &'static ureq::Agent {
    crate::http::client()
}

/// Downloads and verifies; on success the verified content is at `req.partial`.
pub fn download(req: &DownloadRequest<'_>, cancel: &AtomicBool) -> Result<(), DownloadError> {
    if let Some(dir) = req.partial.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(req.partial)
        .map_err(io_err(format!("cannot open {}", req.partial.display())))?;
    let mut have = file
        .metadata()
        .map_err(io_err("cannot stat partial file"))?
        .len();
    if have > req.size {
        truncate(&mut file)?;
        have = 0;
    }
    let mut hasher = Hashers::new();
    if have > 0 {
        hash_existing(&mut file, &mut hasher)?;
    }
    if have < req.size {
        have = fetch(req, &mut file, &mut hasher, have, cancel)?;
    }
    file.sync_all().map_err(io_err("cannot sync download"))?;
    drop(file);
    let refuse = |e: DownloadError| {
        let _ = std::fs::remove_file(req.partial);
        Err(e)
    };
    if have != req.size {
        return refuse(DownloadError::TooSmall {
            expected: req.size,
            got: have,
        });
    }
    let (sha256, sha512) = hasher.finish();
    if !sha256.eq_ignore_ascii_case(req.sha256) {
        return refuse(DownloadError::Sha256 {
            expected: req.sha256.to_string(),
            actual: sha256,
        });
    }
    if let Some(expected) = req.sha512.filter(|e| !sha512.eq_ignore_ascii_case(e)) {
        return refuse(DownloadError::Sha512 {
            expected: expected.to_string(),
            actual: sha512,
        });
    }
    Ok(())
}

/// sha256 and sha512 of the same stream, updated together.
struct Hashers {
    sha256: Context,
    sha512: Context,
}

impl Hashers {
    fn new() -> Self {
        Self {
            sha256: Context::new(&SHA256),
            sha512: Context::new(&SHA512),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.sha512.update(bytes);
    }

    /// Lowercase hex (sha256, sha512).
    fn finish(self) -> (String, String) {
        (
            hex::encode(self.sha256.finish().as_ref()),
            hex::encode(self.sha512.finish().as_ref()),
        )
    }
}

fn truncate(file: &mut File) -> Result<(), DownloadError> {
    file.set_len(0)
        .map_err(io_err("cannot truncate partial file"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("cannot seek partial file"))?;
    Ok(())
}

fn hash_existing(file: &mut File, hasher: &mut Hashers) -> Result<(), DownloadError> {
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("cannot seek partial file"))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err("cannot read partial file"))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Requests the remaining bytes (from `have`) and appends them; returns the bytes on disk.
fn fetch(
    req: &DownloadRequest<'_>,
    file: &mut File,
    hasher: &mut Hashers,
    mut have: u64,
    cancel: &AtomicBool,
) -> Result<u64, DownloadError> {
    let request_err = |e: ureq::Error| DownloadError::Request {
        url: without_query(req.url),
        message: e.to_string(),
    };
    let agent = agent();
    let mut call = agent.get(req.url);
    if have > 0 {
        call = call.header("Range", format!("bytes={have}-"));
    }
    let mut resp = call.call().map_err(request_err)?;
    let status = resp.status().as_u16();
    match status {
        206 if content_range_start(&resp) == Some(have) => {}
        200 | 206 | 416 => {
            // No usable resume: start over. A 206 for another range or a 416 (the partial is
            // not a prefix the server recognises) get a fresh full request.
            if have > 0 {
                truncate(file)?;
                *hasher = Hashers::new();
                have = 0;
            }
            if status != 200 {
                resp = agent.get(req.url).call().map_err(request_err)?;
                let again = resp.status().as_u16();
                if again != 200 {
                    return Err(DownloadError::Status {
                        url: without_query(req.url),
                        status: again,
                    });
                }
            }
        }
        other => {
            return Err(DownloadError::Status {
                url: without_query(req.url),
                status: other,
            })
        }
    }
    file.seek(SeekFrom::End(0))
        .map_err(io_err("cannot seek partial file"))?;
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    loop {
        if cancel.load(Ordering::Relaxed) {
            let _ = file.sync_all();
            return Err(DownloadError::Cancelled);
        }
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(have),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.sync_all();
                return Err(DownloadError::Interrupted {
                    got: have,
                    expected: req.size,
                    message: e.to_string(),
                });
            }
        };
        let got = have + n as u64;
        if got > req.size {
            let _ = std::fs::remove_file(req.partial);
            return Err(DownloadError::TooLarge {
                expected: req.size,
                got,
            });
        }
        file.write_all(&buf[..n])
            .map_err(io_err("cannot write download"))?;
        hasher.update(&buf[..n]);
        have = got;
    }
}

/// The first byte of a `Content-Range: bytes N-M/T` answer.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
#[path = "download_tests.rs"]
mod tests;
