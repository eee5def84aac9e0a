//! Wires the controller together: database, artifact store, broker (embedded unless
//! `--mqtt-url`), MQTT bridge and HTTP API; reports readiness; shuts down gracefully on
//! SIGINT/SIGTERM. Nothing here is needed for correctness after a SIGKILL: every change was
//! committed to the database before it was published, and the next start republishes.

mod shutdown;

pub use shutdown::wait_for_signal;

use crate::config::{http_url, public_url, MqttUrl, ServeArgs};
use crate::db::{Db, DbError};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::mqtt;
use crate::store::StoreError;
use fleet_broker::{BrokerError, EmbeddedBroker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The database cannot be opened.
    #[error("cannot open database {path}: {reason}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: DbError,
    },
    /// A database operation at start failed.
    #[error(transparent)]
    DbOp(#[from] DbError),
    /// The artifact store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedded broker cannot start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP address cannot be bound.
    #[error("cannot listen for HTTP on {addr}: {reason}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// A startup task failed.
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Where a ready controller can be reached (for the ready line and for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The address the HTTP API listens on.
    pub http_addr: SocketAddr,
    /// The broker the controller is connected to.
    pub mqtt: MqttUrl,
}

impl Ready {
    /// The line fleetd prints on stdout once ready; tests parse it.
    pub fn line(&self) -> String {
        format!(
            "fleetd ready http={} mqtt={}",
            http_url(self.http_addr),
            self.mqtt
        )
    }
}

/// Time between rollout driver passes: `FLEETD_ROLLOUT_TICK_MS` (tests), else the default.
fn rollout_tick() -> std::time::Duration {
    std::env::var("FLEETD_ROLLOUT_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            crate::engine::driver::DEFAULT_TICK,
            std::time::Duration::from_millis,
        )
}

/// Serves until `stop` completes, calling `on_ready` once HTTP listens and the MQTT client has
/// connected for the first time.
pub async fn run(
    args: ServeArgs,
    on_ready: impl FnOnce(&Ready),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|reason| ServeError::DataDir {
        path: args.data_dir.clone(),
        reason,
    })?;
    let db_path = args.data_dir.join("fleetd.redb");
    let db = Db::open(&db_path).map_err(|reason| ServeError::Db {
        path: db_path.clone(),
        reason,
    })?;
    // Presence is volatile: "online" means "reported online since this controller started".
    // Agents re-announce on every connect and when the controller comes online.
    let was_online = db.call(|db| db.reset_presence()).await?;
    tracing::info!(database = %db_path.display(), devices_marked_offline = was_online, "database open");
    let store = crate::store::select::open_store(
        args.store,
        &args.s3,
        &args.data_dir,
        std::time::Duration::from_secs(args.download_url_ttl_secs),
    )?;

    let (mqtt_url, _broker) = match &args.mqtt_url {
        Some(url) => (url.clone(), None),
        None => {
            let listen = args.mqtt_listen;
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(listen))
                .await
                .map_err(|e| ServeError::Task(e.to_string()))??;
            (MqttUrl::from_addr(broker.local_addr()), Some(broker))
        }
    };

    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .map_err(|reason| ServeError::HttpBind {
            addr: args.http_listen,
            reason,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|reason| ServeError::HttpBind {
            addr: args.http_listen,
            reason,
        })?;
    let public = public_url(args.public_url.as_deref(), http_addr);

    let metrics = Arc::new(Metrics::default());
    metrics.devices_online.store(0, Ordering::Relaxed);
    let token = CancellationToken::new();
    let errors = Arc::new(crate::engine::error_window::ErrorWindows::default());
    let mut bridge = mqtt::start(
        &mqtt_url,
        public.clone(),
        db.clone(),
        metrics.clone(),
        errors.clone(),
        token.clone(),
    );
    bridge.tasks.push(tokio::spawn(crate::engine::driver::run(
        db.clone(),
        bridge.queue.clone(),
        errors,
        rollout_tick(),
        token.clone(),
    )));

    let state = AppState {
        db,
        store,
        queue: bridge.queue.clone(),
        metrics,
        mqtt_connected: bridge.connected.clone(),
        public_url: public.into(),
        max_upload_bytes: args.max_upload_bytes,
        scan: args
            .scan_command
            .as_deref()
            .and_then(|c| {
                crate::store::scan::ScanHook::parse(
                    c,
                    args.scan_reject,
                    std::time::Duration::from_secs(args.scan_timeout_secs),
                )
            })
            .map(Arc::new),
    };
    let http_token = token.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async move { http_token.cancelled().await })
            .await
    });
    tracing::info!(http = %http_addr, mqtt = %mqtt_url, "serving");

    tokio::pin!(stop);
    let mut connected = bridge.connected.clone();
    let ready = tokio::select! {
        r = connected.wait_for(|c| *c) => r.is_ok(),
        _ = &mut stop => false,
    };
    if ready {
        on_ready(&Ready {
            http_addr,
            mqtt: mqtt_url.clone(),
        });
        stop.await;
    }

    tracing::info!("shutting down");
    shutdown::graceful(bridge, token, http_task).await
}
