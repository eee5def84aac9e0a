//! The few fleetd API calls the benchmark makes, as async functions (ureq is blocking, so each
//! call runs on tokio's blocking pool and never stalls the simulated devices).

use anyhow::{anyhow, Context, Result};
use fleet_schema::api::{ApiError, UploadMetadata};
use fleet_schema::ArtifactMeta;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use ureq::http::Response;
use ureq::Body;

/// A cheap-to-clone handle on fleetd's HTTP API.
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    auth: String,
}

impl Api {
    /// A client for the fleetd at `base`, calling with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            auth: format!("Bearer {token}"),
        }
    }

    /// `GET path`, decoding JSON.
    pub async fn get<T: DeserializeOwned + Send + 'static>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let (agent, auth) = (self.agent.clone(), self.auth.clone());
        blocking(move || {
            let resp = agent
                .get(&url)
                .header("authorization", auth)
                .call()
                .with_context(|| format!("GET {url}"))?;
            answer(&url, resp)
        })
        .await
    }

    /// `POST path` with a JSON body, decoding JSON.
    pub async fn post<B, T>(&self, path: &str, body: B) -> Result<T>
    where
        B: Serialize + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let url = format!("{}{path}", self.base);
        let (agent, auth) = (self.agent.clone(), self.auth.clone());
        blocking(move || {
            let resp = agent
                .post(&url)
                .header("authorization", auth)
                .send_json(&body)
                .with_context(|| format!("POST {url}"))?;
            answer(&url, resp)
        })
        .await
    }

    /// Uploads a small in-memory artifact (multipart `metadata` + `file`).
    pub async fn upload(&self, meta: UploadMetadata, bytes: Vec<u8>) -> Result<ArtifactMeta> {
        let url = format!("{}/api/v1/artifacts", self.base);
        let (agent, auth) = (self.agent.clone(), self.auth.clone());
        blocking(move || {
            let boundary = "fleet-sim-7d1c0f5e9b2a4c3d";
            let mut body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\
                 Content-Type: application/json\r\n\r\n{}\r\n--{boundary}\r\n\
                 Content-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                serde_json::to_string(&meta)?,
                meta.name
            )
            .into_bytes();
            body.extend_from_slice(&bytes);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let resp = agent
                .post(&url)
                .header("authorization", auth)
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .send(&body[..])
                .with_context(|| format!("POST {url}"))?;
            answer(&url, resp)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("HTTP worker failed: {e}"))?
}

fn answer<T: DeserializeOwned>(url: &str, mut resp: Response<Body>) -> Result<T> {
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        return Err(anyhow!("{url} answered {status}: {msg}"));
    }
    serde_json::from_str(&text).with_context(|| format!("{url} answered unexpected JSON"))
}
