//! A small blocking client for fleetd's HTTP API. Every request carries the API token
//! (`Authorization: Bearer ...`) when one is given, `https://` servers are verified against
//! `--ca` or the system store ([`crate::tls`]), and every failure becomes a message an operator
//! can act on: the server's `ApiError` text for 4xx/5xx answers (with a hint for 401 and 403,
//! see [`HttpFailure`]), and the URL that was tried when fleetd cannot be reached at all.

use crate::auth::ApiToken;
use crate::Global;
use anyhow::{anyhow, bail, Context, Result};
use fleet_schema::api::ApiError;
use serde::{de::DeserializeOwned, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;
use ureq::http::Response;
use ureq::{Body, RequestBuilder, SendBody};

/// Largest JSON answer we read (a device list of a big fleet is a few MiB).
const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;

/// Talks to one fleetd instance.
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
    token: Option<ApiToken>,
}

/// A non-2xx answer from fleetd: its status and the message to show (the server's `error`
/// text, plus a hint for 401 and 403). Callers can `downcast_ref` an error to it to react to
/// one status (e.g. `logs` and 504).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFailure {
    /// The HTTP status code.
    pub status: u16,
    /// The server's `error` text (or the start of a body that is not an `ApiError`).
    pub detail: String,
    /// The full message: status, detail and hint.
    pub message: String,
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

impl ApiClient {
    /// A client for the fleetd named by `--server`, with `--token` and `--ca` from `g`.
    pub fn new(g: &Global) -> Result<Self> {
        let base = g.server.trim().trim_end_matches('/').to_string();
        let https = if base.starts_with("https://") {
            true
        } else if base.starts_with("http://") {
            false
        } else {
            bail!("--server {base:?} must start with http:// or https:// (set --server or FLEET_SERVER)");
        };
        let token = g.token.as_ref().map(|t| t.validated()).transpose()?;
        if let Some(t) = &token {
            if !https && !crate::tls::is_loopback_url(&base) {
                eprintln!(
                    "warning: sending API token {} in clear text to {base}; use an https:// server",
                    t.id()
                );
            }
        }
        let tls = if https {
            crate::tls::config(g.ca.as_deref())?
        } else {
            crate::tls::plain_config()
        };
        let config = ureq::Agent::config_builder()
            // Non-2xx answers carry an ApiError body we want to show, so they are not errors here.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .tls_config(tls)
            .build();
        Ok(Self {
            base,
            agent: ureq::Agent::new_with_config(config),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Adds the `Authorization` header when a token was given.
    fn authorized<B>(&self, req: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", t.bearer()),
            None => req,
        }
    }

    /// `GET path` and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .authorized(self.agent.get(&url))
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        self.read_answer(&url, resp)
    }

    /// `GET path` and return the answer's body as lines as they arrive (for streamed,
    /// newline-delimited answers); a non-2xx answer is an [`HttpFailure`].
    pub fn get_lines(&self, path: &str) -> Result<Lines> {
        let url = self.url(path);
        let mut resp = self
            .authorized(self.agent.get(&url))
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        if !resp.status().is_success() {
            let text = resp
                .body_mut()
                .with_config()
                .limit(MAX_JSON_BYTES)
                .read_to_string()
                .with_context(|| format!("reading the answer of {url}"))?;
            return Err(self.failure(resp.status().as_u16(), &text).into());
        }
        let reader = resp.into_body().into_with_config().reader();
        Ok(Lines {
            url,
            reader: Box::new(BufReader::new(reader)),
        })
    }

    /// `POST path` with a JSON body and decode the JSON answer.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .authorized(self.agent.post(&url))
            .send_json(body)
            .map_err(|e| self.transport_error(&url, e))?;
        self.read_answer(&url, resp)
    }

    /// `DELETE path` and decode the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .authorized(self.agent.delete(&url))
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        self.read_answer(&url, resp)
    }

    /// `POST path` streaming `body` (of exactly `len` bytes) with the given content type.
    pub fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        len: u64,
        body: &mut dyn Read,
    ) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .authorized(self.agent.post(&url))
            .header("Content-Type", content_type)
            .header("Content-Length", len.to_string())
            .send(SendBody::from_reader(body))
            .map_err(|e| self.transport_error(&url, e))?;
        self.read_answer(&url, resp)
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => anyhow!(
                "cannot reach fleetd at {} (connection refused while requesting {url}); \
                 is it running? (set --server or FLEET_SERVER)",
                self.base
            ),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => anyhow!(
                "cannot reach fleetd at {} ({e} while requesting {url}); \
                 check --server or FLEET_SERVER",
                self.base
            ),
            other if crate::tls::is_tls_error(&other) => anyhow!(
                "TLS connection to fleetd at {} failed while requesting {url}: {other}; \
                 if its certificate is signed by your own CA, give that CA with --ca or FLEET_CA",
                self.base
            ),
            other => anyhow!("request to {url} failed: {other}"),
        }
    }

    /// Decodes a 2xx JSON answer, or turns a non-2xx answer into an [`HttpFailure`].
    fn read_answer<T: DeserializeOwned>(&self, url: &str, mut resp: Response<Body>) -> Result<T> {
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        if status.is_success() {
            serde_json::from_str(&text)
                .with_context(|| format!("fleetd answered {url} with unexpected JSON"))
        } else {
            Err(self.failure(status.as_u16(), &text).into())
        }
    }

    fn failure(&self, status: u16, body: &str) -> HttpFailure {
        HttpFailure {
            status,
            detail: match serde_json::from_str::<ApiError>(body) {
                Ok(e) => e.error,
                Err(_) => body.trim().chars().take(200).collect(),
            },
            message: error_message(status, body, self.token.is_some()),
        }
    }
}

/// The lines of a streamed answer (see [`ApiClient::get_lines`]).
pub struct Lines {
    url: String,
    reader: Box<dyn BufRead>,
}

/// Longest line of a streamed answer we accept.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

impl Iterator for Lines {
    type Item = Result<String>;

    /// The next line without its newline; `None` when the server closed the answer.
    fn next(&mut self) -> Option<Result<String>> {
        let mut buf = Vec::new();
        let read = self
            .reader
            .by_ref()
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf);
        match read {
            Ok(0) => None,
            Ok(_) if buf.len() as u64 > MAX_LINE_BYTES => Some(Err(anyhow!(
                "a line of the answer of {} is longer than {MAX_LINE_BYTES} bytes",
                self.url
            ))),
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some(
                    String::from_utf8(buf)
                        .with_context(|| format!("the answer of {} is not UTF-8", self.url)),
                )
            }
            Err(e) => Some(Err(
                anyhow::Error::new(e).context(format!("reading the answer of {}", self.url))
            )),
        }
    }
}

/// The message to show for a non-2xx answer: the `ApiError` text when the body is one, with a
/// hint for authentication (401) and authorization (403) failures. `sent_token` says whether
/// the request carried a token.
pub fn error_message(status: u16, body: &str, sent_token: bool) -> String {
    let text = match serde_json::from_str::<ApiError>(body) {
        Ok(e) => format!("fleetd refused the request ({status}): {}", e.error),
        Err(_) => {
            let snippet: String = body.trim().chars().take(200).collect();
            if snippet.is_empty() {
                format!("fleetd answered with status {status}")
            } else {
                format!("fleetd answered with status {status}: {snippet}")
            }
        }
    };
    match crate::auth::hint(status, sent_token) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// Percent-encodes `s` for use as one URL path segment or query value (everything but
/// unreserved characters is escaped).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string `?k=v&k2=v2` from pairs (empty when there are none), values encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Output;
    use std::io::Write;
    use std::net::TcpListener;

    fn global(server: &str, token: Option<&str>) -> Global {
        Global {
            server: server.into(),
            token: token.map(|t| t.parse().expect("infallible")),
            ca: None,
            output: Output::Table,
        }
    }

    /// A one-shot HTTP server: answers the first request with `answer` and hands the request
    /// text back.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("one client");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).expect("read request");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer.as_bytes()).expect("answer");
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, handle)
    }

    const TOKEN: &str =
        "fleet_0123abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn api_errors_show_the_server_message() {
        let m = error_message(
            409,
            r#"{"error":"myapp@1.0.0 exists with other bytes"}"#,
            true,
        );
        assert_eq!(
            m,
            "fleetd refused the request (409): myapp@1.0.0 exists with other bytes"
        );
        assert_eq!(
            error_message(502, "", false),
            "fleetd answered with status 502"
        );
        assert!(error_message(500, "boom", false).ends_with("500: boom"));
    }

    #[test]
    fn auth_failures_carry_a_hint() {
        let m = error_message(401, r#"{"error":"missing Authorization header"}"#, false);
        assert_eq!(
            m,
            "fleetd refused the request (401): missing Authorization header \
             (give a token with --token or FLEET_TOKEN)"
        );
        let m = error_message(
            403,
            r#"{"error":"token 0123abcd has scope \"read\"; this needs \"admin\""}"#,
            true,
        );
        assert!(m.contains(r#"this needs "admin""#), "{m}");
        assert!(m.contains("fleetctl token create"), "{m}");
    }

    #[test]
    fn refused_connection_names_the_url() {
        // Port 1 on localhost is essentially never listening.
        let api = ApiClient::new(&global("http://127.0.0.1:1/", None)).expect("client");
        let err = api
            .get::<serde_json::Value>("/api/v1/health")
            .expect_err("nothing listens on port 1");
        let msg = err.to_string();
        assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
    }

    #[test]
    fn servers_need_an_http_scheme() {
        let err = ApiClient::new(&global("127.0.0.1:7878", None))
            .err()
            .expect("no scheme");
        assert!(err.to_string().contains("http:// or https://"), "{err}");
    }

    #[test]
    fn the_token_travels_as_a_bearer_header() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        );
        let api = ApiClient::new(&global(&url, Some(TOKEN))).expect("client");
        let v: serde_json::Value = api.get("/api/v1/devices").expect("answer");
        assert_eq!(v["ok"], true);
        let request = server.join().expect("server thread");
        assert!(
            request.contains(&format!("authorization: Bearer {TOKEN}\r\n"))
                || request.contains(&format!("Authorization: Bearer {TOKEN}\r\n")),
            "{request}"
        );
    }

    #[test]
    fn a_401_is_an_http_failure_with_its_status() {
        let body = r#"{"error":"token 0123abcd is revoked"}"#;
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, server) = serve_once(answer);
        let api = ApiClient::new(&global(&url, Some(TOKEN))).expect("client");
        let err = api
            .get::<serde_json::Value>("/api/v1/tokens")
            .expect_err("401");
        let failure = err.downcast_ref::<HttpFailure>().expect("an HTTP failure");
        assert_eq!(failure.status, 401);
        assert_eq!(failure.detail, "token 0123abcd is revoked");
        assert!(failure.message.contains("is revoked"), "{failure}");
        assert!(
            failure.message.contains("--token or FLEET_TOKEN"),
            "{failure}"
        );
        assert!(!failure.message.contains(&TOKEN[14..]), "secret leaked");
        server.join().expect("server thread");
    }

    #[test]
    fn streamed_lines_arrive_one_by_one() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n{\"a\":1}\n{\"a\":2}\r\n",
        );
        let api = ApiClient::new(&global(&url, None)).expect("client");
        let lines: Vec<String> = api
            .get_lines("/api/v1/devices/d/logs")
            .expect("stream")
            .collect::<Result<_>>()
            .expect("lines");
        assert_eq!(lines, [r#"{"a":1}"#, r#"{"a":2}"#]);
        server.join().expect("server thread");
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode("rpi-1_a.b~"), "rpi-1_a.b~");
        assert_eq!(encode("../x y"), "..%2Fx%20y");
        assert_eq!(
            query(&[("dir", "/etc/m q".into()), ("lines", "5".into())]),
            "?dir=%2Fetc%2Fm%20q&lines=5"
        );
        assert_eq!(query(&[]), "");
    }
}
