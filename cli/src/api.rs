//! A small blocking client for fleetd's HTTP API. It turns every failure into a message an
//! operator can act on: the server's `ApiError` text for 4xx/5xx answers, and the URL that was
//! tried when fleetd cannot be reached at all.

use anyhow::{anyhow, Context, Result};
use fleet_schema::api::ApiError;
use serde::{de::DeserializeOwned, Serialize};
use std::io::Read;
use std::time::Duration;
use ureq::http::Response;
use ureq::{Body, SendBody};

/// Largest JSON answer we read (a device list of a big fleet is a few MiB).
const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;

/// Talks to one fleetd instance.
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// A client for the fleetd at `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            // Non-2xx answers carry an ApiError body we want to show, so they are not errors here.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET path` and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        read_answer(&url, resp)
    }

    /// `POST path` with a JSON body and decode the JSON answer.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .agent
            .post(&url)
            .send_json(body)
            .map_err(|e| self.transport_error(&url, e))?;
        read_answer(&url, resp)
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
            .agent
            .post(&url)
            .header("Content-Type", content_type)
            .header("Content-Length", len.to_string())
            .send(SendBody::from_reader(body))
            .map_err(|e| self.transport_error(&url, e))?;
        read_answer(&url, resp)
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
            other => anyhow!("request to {url} failed: {other}"),
        }
    }
}

/// Decodes a 2xx JSON answer, or turns a non-2xx answer into the server's error message.
fn read_answer<T: DeserializeOwned>(url: &str, mut resp: Response<Body>) -> Result<T> {
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
        Err(anyhow!("{}", error_message(status.as_u16(), &text)))
    }
}

/// The message to show for a non-2xx answer: the `ApiError` text when the body is one.
fn error_message(status: u16, body: &str) -> String {
    match serde_json::from_str::<ApiError>(body) {
        Ok(e) => format!("fleetd refused the request ({status}): {}", e.error),
        Err(_) => {
            let snippet: String = body.trim().chars().take(200).collect();
            if snippet.is_empty() {
                format!("fleetd answered with status {status}")
            } else {
                format!("fleetd answered with status {status}: {snippet}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_server_message() {
        let m = error_message(409, r#"{"error":"myapp@1.0.0 exists with other bytes"}"#);
        assert_eq!(
            m,
            "fleetd refused the request (409): myapp@1.0.0 exists with other bytes"
        );
        assert_eq!(error_message(502, ""), "fleetd answered with status 502");
        assert!(error_message(500, "boom").ends_with("500: boom"));
    }

    #[test]
    fn refused_connection_names_the_url() {
        // Port 1 on localhost is essentially never listening.
        let api = ApiClient::new("http://127.0.0.1:1/");
        let err = api
            .get::<serde_json::Value>("/api/v1/health")
            .expect_err("nothing listens on port 1");
        let msg = err.to_string();
        assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
    }
}
