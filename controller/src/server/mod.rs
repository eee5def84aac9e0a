//! Wires the controller together: database, artifact store, broker (embedded unless
//! `--mqtt-url`), MQTT bridge and HTTP API; reports readiness; shuts down gracefully on
//! SIGINT/SIGTERM. Nothing here is needed for correctness after a SIGKILL: every change was
//! committed to the database before it was published, and the next start republishes.

mod listen;
mod retention;
mod shutdown;
pub mod watch;

pub use shutdown::wait_for_signal;

use crate::config::{http_url, mqtt_url_for, public_url, MqttUrl, SecurityArgs, ServeArgs};
use crate::db::{Db, DbError};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::mqtt;
use crate::store::StoreError;
use crate::trust::{self, Trust, TrustError};
use fleet_broker::{BrokerError, BrokerOptions, EmbeddedBroker};
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
    /// Keys, identities or tokens cannot be loaded.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A TLS file is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The security settings do not fit together.
    #[error("{0}")]
    Settings(String),
}

/// Where a ready controller can be reached (for the ready line and for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The address the HTTP API listens on.
    pub http_addr: SocketAddr,
    /// Whether the API is served over HTTPS.
    pub https: bool,
    /// The broker the controller is connected to.
    pub mqtt: MqttUrl,
}

impl Ready {
    /// The line fleetd prints on stdout once ready ([`fleet_schema::ReadyLine`], which its
    /// readers parse).
    pub fn line(&self) -> String {
        fleet_schema::ReadyLine {
            http: http_url(self.http_addr, self.https),
            mqtt: self.mqtt.clone(),
        }
        .to_string()
    }
}

/// Time between rollout driver passes: `FLEETD_ROLLOUT_TICK_MS` (tests), else the default.
fn rollout_tick() -> std::time::Duration {
    std::env::var("FLEETD_ROLLOUT_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            crate::deployments::driver::DEFAULT_TICK,
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
    let db = Db::open_with_cache(&db_path, args.limits.db_cache_mib.saturating_mul(1 << 20))
        .map_err(|reason| ServeError::Db {
            path: db_path.clone(),
            reason,
        })?;
    // Presence is volatile: "online" means "reported online since this controller started".
    // Agents re-announce on every connect and when the controller comes online.
    let was_online = db.call(|db| db.reset_presence()).await?;
    db.call(crate::ci::ledger::init).await?;
    tracing::info!(database = %db_path.display(), devices_marked_offline = was_online, "database open");
    let store = crate::store::select::open_store(
        args.store,
        &args.s3,
        &args.data_dir,
        std::time::Duration::from_secs(args.download_url_ttl_secs),
    )?;
    let sec = &args.security;
    let trust = Arc::new(open_trust(&db, &args, sec).await?);
    {
        let (db2, trust2, dir) = (db.clone(), trust.clone(), args.data_dir.clone());
        let env_token = std::env::var(trust::tokens::ADMIN_TOKEN_ENV).ok();
        db.call(move |_| {
            Ok(trust::tokens::bootstrap(
                &db2,
                &trust2,
                &dir,
                env_token.as_deref(),
            ))
        })
        .await?
        .map_err(|e| ServeError::Settings(e.to_string()))?;
    }
    let (server_tls, mqtt_tls) = match (&sec.tls_cert, &sec.tls_key) {
        (Some(cert), Some(key)) => (
            Some(crate::tls::server_config(cert, key, None)?),
            Some(crate::tls::server_config(
                cert,
                key,
                sec.mqtt_client_ca.as_deref(),
            )?),
        ),
        _ => (None, None),
    };

    let metrics = Arc::new(Metrics::with_telemetry(
        crate::telemetry::Telemetry::new(args.telemetry.clone())
            .map_err(|e| ServeError::Settings(e.to_string()))?,
    ));
    metrics.devices_online.store(0, Ordering::Relaxed);

    // The bus: our own connection goes to `bus_url`; devices are told `public_mqtt`.
    let (bus_url, public_mqtt, bus_tls, mut broker) = match &args.mqtt_url {
        Some(url) => {
            let tls = match (url.tls, &sec.mqtt_ca) {
                (true, Some(ca)) => {
                    let client = sec
                        .mqtt_client_cert
                        .as_deref()
                        .zip(sec.mqtt_client_key.as_deref());
                    Some(crate::tls::client_config(ca, client)?)
                }
                (true, None) => {
                    return Err(ServeError::Settings(format!(
                        "--mqtt-url {url} uses TLS: give the broker's CA with --mqtt-ca"
                    )))
                }
                (false, _) => None,
            };
            (url.clone(), url.clone(), tls, None)
        }
        None => {
            let check: Option<fleet_broker::ConnectCheck> = if trust.insecure() {
                None
            } else {
                let t = trust.clone();
                Some(Arc::new(move |id: &str, user: &str, pass: &str| {
                    t.authorize_connect(id, user, pass)
                }))
            };
            let opts = BrokerOptions {
                listen: args.mqtt_listen,
                check,
                tls: mqtt_tls.clone(),
                limits: args.limits.mqtt_front(),
                hook: crate::limits::broker_hook(metrics.clone()),
            };
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(opts))
                .await
                .map_err(|e| ServeError::Task(e.to_string()))??;
            (
                mqtt_url_for(broker.internal_addr(), false),
                mqtt_url_for(broker.local_addr(), server_tls.is_some()),
                None,
                Some(broker),
            )
        }
    };
    if let Some(front) = broker.as_mut().and_then(EmbeddedBroker::take_front) {
        tokio::spawn(front.run());
    }

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
    let https = server_tls.is_some();
    let public = public_url(args.public_url.as_deref(), http_addr, https);

    let token = CancellationToken::new();
    let errors = Arc::new(crate::engine::error_window::ErrorWindows::default());
    let logs = crate::http::logs::log_channel();
    let (ci_tx, ci_rx) = tokio::sync::mpsc::channel(crate::ci::QUEUE);
    let mut conn = mqtt::Connection::controller(bus_url, &trust, bus_tls);
    if let Some(user) = &sec.mqtt_username {
        conn.username = user.clone();
    }
    let mut bridge = mqtt::start(
        mqtt::BridgeParts {
            conn,
            http_url: public.clone(),
            trust: trust.clone(),
            metrics: metrics.clone(),
            errors: errors.clone(),
            logs: logs.clone(),
            ci: Some(ci_tx),
            max_status_bytes: args.limits.mqtt_max_status_bytes,
        },
        db.clone(),
        token.clone(),
    );
    bridge
        .tasks
        .push(tokio::spawn(crate::deployments::driver::run(
            db.clone(),
            bridge.queue.clone(),
            errors,
            trust.clone(),
            rollout_tick(),
            token.clone(),
        )));
    bridge.tasks.push(tokio::spawn(
        crate::system::release_free_memory_periodically(token.clone()),
    ));
    bridge.tasks.push(tokio::spawn(retention::run(
        db.clone(),
        args.limits.keep_finished_deployments,
        metrics.clone(),
        token.clone(),
    )));
    if let Some(dir) = &sec.mosquitto_dir {
        bridge.tasks.push(tokio::spawn(trust::broker_files::run(
            trust::broker_files::BrokerFiles {
                dir: dir.clone(),
                reload: sec.mosquitto_reload.clone(),
            },
            db.clone(),
            trust.clone(),
            token.clone(),
        )));
    }
    let log_store = Arc::new(crate::logstore::LogStore::new(
        args.data_dir.join("logs"),
        &args.log_store,
    ));
    bridge.tasks.push(
        crate::logstore::start(log_store.clone(), logs.subscribe(), token.clone())
            .map_err(|e| ServeError::Task(format!("cannot start the log store: {e}")))?,
    );
    if trust.insecure() {
        bridge
            .tasks
            .push(tokio::spawn(warn_insecure(token.clone())));
    }

    let uploads = Arc::new(crate::http::upload_gate::UploadGate::new(
        args.limits.max_uploads_in_flight,
        args.limits.max_staging_bytes,
    ));
    bridge.tasks.push(tokio::spawn(crate::ci::run(
        Arc::new(crate::ci::CiContext {
            db: db.clone(),
            store: store.clone(),
            queue: bridge.queue.clone(),
            metrics: metrics.clone(),
            public_url: public.clone().into(),
            trust: trust.clone(),
            client: bridge.client.clone(),
            max_upload_bytes: args.limits.max_upload_bytes,
            uploads: uploads.clone(),
            requests_private: args.mqtt_url.is_some() && sec.mosquitto_dir.is_some(),
            busy: Default::default(),
            shutdown: token.clone(),
        }),
        ci_rx,
    )));
    let http_metrics = metrics.clone();
    let state = AppState {
        db,
        store,
        queue: bridge.queue.clone(),
        metrics,
        mqtt_connected: bridge.connected.clone(),
        public_url: public.into(),
        max_upload_bytes: args.limits.max_upload_bytes,
        max_upload_before_metadata_bytes: args.limits.max_upload_before_metadata_bytes,
        uploads,
        max_request_body_bytes: args.limits.max_request_body_bytes,
        max_manifest_bytes: args.limits.max_manifest_bytes,
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
        trust: trust.clone(),
        logs,
        max_pending_enrollments: sec.max_pending_enrollments,
        log_store,
    };
    let router = crate::http::router(state);
    let http_task = tokio::spawn(listen::serve(
        listener,
        server_tls,
        router,
        listen::ServerLimits::from_args(&args.limits, crate::system::nofile_limit()),
        http_metrics,
        token.clone(),
    ));
    tracing::info!(http = %http_addr, https, mqtt = %public_mqtt, controller_key = trust.key().id(), insecure = trust.insecure(), "serving");

    tokio::pin!(stop);
    let mut connected = bridge.connected.clone();
    let ready = tokio::select! {
        r = connected.wait_for(|c| *c) => r.is_ok(),
        _ = &mut stop => false,
    };
    if ready {
        on_ready(&Ready {
            http_addr,
            https,
            mqtt: public_mqtt.clone(),
        });
        stop.await;
    }

    tracing::info!("shutting down");
    shutdown::graceful(bridge, &trust, token, http_task).await
}

/// Opens the trust state. The controller's own broker password: from
/// `--mqtt-password-file`; for an external broker without one, generated once and kept in the
/// database (so the Mosquitto password file stays valid across restarts); for the embedded
/// broker, fresh at every start.
async fn open_trust(db: &Db, args: &ServeArgs, sec: &SecurityArgs) -> Result<Trust, ServeError> {
    let password = match &sec.mqtt_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ServeError::Settings(format!("--mqtt-password-file {}: {e}", path.display()))
                })?
                .trim()
                .to_string(),
        ),
        None if args.mqtt_url.is_some() => Some(
            db.call(|db| {
                const KEY: &str = "controller-mqtt-password";
                if let Some(v) = db.meta(KEY)? {
                    return Ok(String::from_utf8_lossy(&v).into_owned());
                }
                let fresh = fleet_schema::trust::keys::new_secret_hex()
                    .map_err(|e| DbError::Encode(e.to_string()))?;
                db.put_meta(KEY, fresh.as_bytes())?;
                Ok(fresh)
            })
            .await?,
        ),
        None => None,
    };
    let (db2, dir, insecure) = (db.clone(), args.data_dir.clone(), sec.insecure);
    tokio::task::spawn_blocking(move || Trust::open(&db2, &dir, insecure, password))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?
        .map_err(ServeError::from)
}

/// With `--insecure`: a loud warning at start and every five minutes.
async fn warn_insecure(shutdown: CancellationToken) {
    loop {
        tracing::warn!("INSECURE MODE: MQTT connections and API calls are NOT authenticated (--insecure). Anyone who reaches this controller can read and change the fleet's deployments. Messages stay signed, so devices still refuse anything not from this controller. Use only on a trusted lab network.");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(300)) => {}
        }
    }
}
