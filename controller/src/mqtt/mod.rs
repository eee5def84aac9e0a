//! The controller's side of the bus. One rumqttc client, `fleetd-controller`, with a
//! persistent session and a retained "offline" last will; five tasks around it:
//! - [`event_loop`] polls the connection, reconnects with jittered backoff, and routes incoming
//!   messages; it never publishes itself (publishing awaits channel space that only polling
//!   frees, so publishing from the poll task would deadlock);
//! - [`status_writer`] folds device statuses into the database in batches;
//! - [`guard`] compares retained `cmd` messages with the database and repairs them;
//! - [`publisher`] publishes desired states and the controller's presence, coalescing requests;
//! - [`catch_up`] periodically republishes to online devices reporting an old generation;
//! - a short task per (re)connect subscribes and queues the full republish.
//!
//! - [`kick`] disconnects devices whose enrollment was revoked or reset.
//!
//! [`inbound`] holds the classification of incoming messages, which verifies every device
//! message against the device's enrolled key.

pub mod catch_up;
pub mod event_loop;
pub mod guard;
pub mod inbound;
pub mod kick;
pub mod options;
pub mod publisher;
pub mod status_writer;
pub mod wire;

pub use options::{mqtt_options, Connection, CLIENT_ID};
pub use publisher::PublishQueue;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::trust::Trust;
use fleet_schema::LogBatch;
use rumqttc::AsyncClient;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Capacity of rumqttc's request channel: a full republish of a large fleet fits in it.
const REQUEST_CHANNEL_CAPACITY: usize = 10_000;
/// Statuses queued for the writer before the poll task waits (backpressure, never loss).
const STATUS_QUEUE: usize = 20_000;
/// cmd messages queued for the guard.
const GUARD_QUEUE: usize = 20_000;

/// A running bridge.
pub struct Bridge {
    /// The client, for the final offline publish and disconnect.
    pub client: AsyncClient,
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    /// Where the rest of the controller asks for desired states to be published.
    pub queue: Arc<PublishQueue>,
    /// The poll task; it ends after a disconnect requested at shutdown.
    pub poll_task: JoinHandle<()>,
    /// Every other task; they end when `shutdown` is cancelled (or their input closes).
    pub tasks: Vec<JoinHandle<()>>,
}

/// What the bridge needs besides the database.
pub struct BridgeParts {
    /// Where and as whom to connect.
    pub conn: Connection,
    /// fleetd's HTTP base URL, for the presence message.
    pub http_url: String,
    /// Keys and identities.
    pub trust: Arc<Trust>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Error-rate windows.
    pub errors: Arc<crate::engine::error_window::ErrorWindows>,
    /// Where verified log batches go.
    pub logs: tokio::sync::broadcast::Sender<Arc<LogBatch>>,
    /// Where CI requests go ([`crate::ci`]); `None`: not subscribed.
    pub ci: Option<mpsc::Sender<crate::ci::CiMessage>>,
    /// Largest sealed status taken from a device (`--mqtt-max-status-bytes`).
    pub max_status_bytes: usize,
}

/// Starts the bridge's tasks.
pub fn start(parts: BridgeParts, db: Db, shutdown: CancellationToken) -> Bridge {
    let BridgeParts {
        conn,
        http_url,
        trust,
        metrics,
        errors,
        logs,
        ci,
        max_status_bytes,
    } = parts;
    let options = mqtt_options(&conn, &trust);
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
    let (connected_tx, connected) = watch::channel(false);
    let queue = Arc::new(PublishQueue::default());
    let (status_tx, status_rx) = mpsc::channel(STATUS_QUEUE);
    let (guard_tx, guard_rx) = mpsc::channel(GUARD_QUEUE);

    let tasks = vec![
        tokio::spawn(status_writer::run(
            status_rx,
            db.clone(),
            queue.clone(),
            metrics.clone(),
        )),
        tokio::spawn(catch_up::sweep(db.clone(), queue.clone(), shutdown.clone())),
        tokio::spawn(guard::run(
            guard_rx,
            db.clone(),
            trust.clone(),
            queue.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(publisher::run(
            queue.clone(),
            client.clone(),
            db,
            trust.clone(),
            metrics.clone(),
            http_url,
            shutdown.clone(),
        )),
        tokio::spawn(kick::run(conn, trust.clone(), shutdown.clone())),
    ];
    let ctx = event_loop::LoopContext {
        client: client.clone(),
        queue: queue.clone(),
        status_tx,
        guard_tx,
        errors,
        trust,
        logs,
        metrics,
        connected: connected_tx,
        shutdown,
        ci,
        max_status_bytes,
    };
    let poll_task = tokio::spawn(event_loop::run(eventloop, ctx));
    Bridge {
        client,
        connected,
        queue,
        poll_task,
        tasks,
    }
}
