//! A streaming `multipart/form-data` body for artifact uploads. The body is the chain
//! `preamble + file reader + epilogue`, so an artifact of any size is sent without being read
//! into memory, and its exact length is known up front (sent as `Content-Length`).
//! The `metadata` part comes first so the server knows the name and version before the bytes.

use std::hash::{BuildHasher, Hasher};
use std::io::{Cursor, Read};

/// A multipart body: the framing around one JSON part and one file part.
pub struct MultipartFraming {
    boundary: String,
    preamble: Vec<u8>,
    epilogue: Vec<u8>,
}

impl MultipartFraming {
    /// Frames a `metadata` JSON part followed by a `file` part named `filename`.
    pub fn new(metadata_json: &str, filename: &str) -> Self {
        Self::with_boundary(random_boundary(), metadata_json, filename)
    }

    fn with_boundary(boundary: String, metadata_json: &str, filename: &str) -> Self {
        let filename: String = filename
            .chars()
            .map(|c| {
                if matches!(c, '"' | '\\' | '\r' | '\n') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let preamble = format!(
            "--{boundary}\r\n\
             Content-Disposition: form-data; name=\"metadata\"\r\n\
             Content-Type: application/json\r\n\r\n\
             {metadata_json}\r\n\
             --{boundary}\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        let epilogue = format!("\r\n--{boundary}--\r\n").into_bytes();
        Self {
            boundary,
            preamble,
            epilogue,
        }
    }

    /// The `Content-Type` header value, naming the boundary.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The total body length for a file of `file_len` bytes.
    pub fn body_len(&self, file_len: u64) -> u64 {
        self.preamble.len() as u64 + file_len + self.epilogue.len() as u64
    }

    /// The body as one reader: preamble, then `file`, then epilogue.
    pub fn into_reader<R: Read>(self, file: R) -> impl Read {
        Cursor::new(self.preamble)
            .chain(file)
            .chain(Cursor::new(self.epilogue))
    }
}

/// A boundary that will not occur in the payload by chance (128 random bits).
fn random_boundary() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u64(std::process::id().into());
    let mut b = state.build_hasher();
    b.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    format!("fleetctl-{:016x}{:016x}", a.finish(), b.finish())
}

/// Wraps a reader and computes the SHA-256 of everything read through it, so the upload can
/// be checked against the digest the server reports without reading the file twice.
pub struct HashingReader<R> {
    inner: R,
    digest: ring::digest::Context,
}

impl<R: Read> HashingReader<R> {
    /// Starts hashing `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    /// The lowercase hex SHA-256 of everything read so far.
    pub fn finish(self) -> String {
        hex::encode(self.digest.finish().as_ref())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_well_formed_and_its_length_is_exact() {
        let framing = MultipartFraming::with_boundary(
            "B0UND".into(),
            r#"{"name":"a","version":"1.0.0","type":"binary"}"#,
            "my\"app.bin",
        );
        assert_eq!(
            framing.content_type(),
            "multipart/form-data; boundary=B0UND"
        );
        let file = b"\x00\x01binary\r\n--not-a-boundary".to_vec();
        let len = framing.body_len(file.len() as u64);
        let mut body = Vec::new();
        framing
            .into_reader(&file[..])
            .read_to_end(&mut body)
            .expect("in-memory read");
        assert_eq!(body.len() as u64, len);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("--B0UND\r\nContent-Disposition: form-data; name=\"metadata\""));
        assert!(text.contains("filename=\"my_app.bin\""));
        assert!(text.ends_with("--not-a-boundary\r\n--B0UND--\r\n"));
    }

    #[test]
    fn hashing_reader_hashes_what_passes_through() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("in-memory read");
        assert_eq!(
            r.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(random_boundary(), random_boundary());
    }
}
