//! A minimal read-only container registry (the Docker Registry HTTP API v2 subset a `pull`
//! needs) for tests that must not reach the internet: `GET /v2/`, `GET|HEAD
//! /v2/<name>/manifests/<tag or digest>` (a Docker image manifest v2, schema 2) and `GET|HEAD
//! /v2/<name>/blobs/<digest>` (the config JSON, the gzipped layer). Images are built in the test
//! from a root filesystem directory ([`Registry::push_rootfs`]). Every request is logged
//! ([`Registry::requests`]), so a test can prove a pull really went through it. Plain HTTP on
//! 127.0.0.1, which Docker treats as an insecure registry by default.

use axum::body::Body;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::Response;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Media type of the manifests served.
pub const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Default)]
struct State {
    /// (repository, tag or digest) -> manifest digest.
    manifests: HashMap<(String, String), String>,
    /// digest -> (content, content type).
    blobs: HashMap<String, (Vec<u8>, &'static str)>,
    /// "METHOD /path" of every request, in order.
    log: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
    )
}

/// A running registry; stopped when dropped.
pub struct Registry {
    addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1.
    pub fn start() -> Registry {
        let state: Shared = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("registry runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("registry port");
                ready_tx
                    .send(listener.local_addr().expect("registry address"))
                    .expect("test waits for the address");
                let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
                    let state = served.clone();
                    async move { handle(&state, &method, &uri) }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("registry serves");
            });
        });
        let addr = ready_rx.recv().expect("registry started");
        Registry {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far, as "METHOD /path".
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// Builds a one-layer image from `rootfs` (running `cmd`), stores it as `repo:tag` and
    /// returns its manifest digest.
    pub fn push_rootfs(&self, repo: &str, tag: &str, rootfs: &Path, cmd: &[&str]) -> String {
        let work = tempfile::tempdir().expect("tempdir");
        let tar = work.path().join("layer.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let diff_id = digest(&std::fs::read(&tar).expect("layer tar"));
        let layer = run(Command::new("gzip").args(["-n", "-c"]).arg(&tar));
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "fleetd test registry"}],
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": digest(&config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": layer.len(), "digest": digest(&layer)}],
        })
        .to_string()
        .into_bytes();
        let manifest_digest = digest(&manifest);
        let mut st = lock(&self.state);
        st.blobs
            .insert(digest(&config), (config, "application/octet-stream"));
        st.blobs
            .insert(digest(&layer), (layer, "application/octet-stream"));
        st.blobs
            .insert(manifest_digest.clone(), (manifest, MANIFEST_TYPE));
        for reference in [tag, manifest_digest.as_str()] {
            st.manifests.insert(
                (repo.to_string(), reference.to_string()),
                manifest_digest.clone(),
            );
        }
        manifest_digest
    }

    /// Digests of the blobs (config, then layers) the stored manifest `manifest_digest` names.
    pub fn blobs_of(&self, manifest_digest: &str) -> Vec<String> {
        let st = lock(&self.state);
        let (bytes, _) = st.blobs.get(manifest_digest).expect("stored manifest");
        let manifest: serde_json::Value = serde_json::from_slice(bytes).expect("manifest JSON");
        std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().expect("layers"))
            .map(|d| d["digest"].as_str().expect("digest").to_string())
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stdout of a command that must succeed.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Answers one request from the stored images.
fn handle(state: &Shared, method: &Method, uri: &Uri) -> Response {
    let path = uri.path().to_string();
    let mut st = lock(state);
    st.log.push(format!("{method} {path}"));
    if *method != Method::GET && *method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "read-only registry",
        );
    }
    if path == "/v2/" || path == "/v2" {
        return Response::builder()
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .expect("response");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a v2 path");
    };
    let found = if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        st.manifests
            .get(&(name.to_string(), reference.to_string()))
            .cloned()
            .ok_or("MANIFEST_UNKNOWN")
    } else if let Some((_, d)) = rest.rsplit_once("/blobs/") {
        Ok(d.to_string())
    } else {
        Err("NAME_UNKNOWN")
    };
    match found.and_then(|d| st.blobs.get(&d).map(|b| (d, b)).ok_or("BLOB_UNKNOWN")) {
        Ok((d, (bytes, kind))) => Response::builder()
            .header(header::CONTENT_TYPE, *kind)
            .header(header::CONTENT_LENGTH, bytes.len())
            .header("Docker-Content-Digest", d)
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .body(Body::from(bytes.clone()))
            .expect("response"),
        Err(code) => error(StatusCode::NOT_FOUND, code, &path),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string(),
        ))
        .expect("response")
}
