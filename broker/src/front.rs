//! The public face of the embedded broker. rumqttd listens on loopback only; the front accepts
//! every client connection (plain TCP, or TLS terminated here), and:
//! - keeps at most `max_connections` open, closing one more at once;
//! - gives a client `connect_timeout` from the accept to finish TLS and send its CONNECT, and
//!   opens the connection to rumqttd only then (an idle socket costs one descriptor);
//! - pauses briefly after a failed `accept` (out of descriptors) instead of spinning;
//! - judges every packet the client sends by its head ([`crate::packet`]) before passing it
//!   on: a packet above the size limit, or a retained message outside `fleet/`, ends the
//!   connection before rumqttd holds a byte of it.
//!
//! Every refusal goes to the embedder's [`LimitHook`], which counts it and logs at a bounded
//! rate.

use crate::limits::{names, FrontLimits, LimitHook, MAX_CONNECT, RETAINED_PREFIX};
use crate::packet::{self, FixedHeader, CONNECT, PUBLISH};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Pause after a failed `accept`, so running out of descriptors is not a busy loop.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Initial size of a connection's read buffer (grown only while a packet head is buffered).
const BUF: usize = 4 * 1024;

/// The bound public listener, waiting to be run.
pub struct Front {
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    internal: SocketAddr,
    limits: FrontLimits,
    hook: LimitHook,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("internal", &self.internal)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// What every connection task shares.
struct Shared {
    acceptor: Option<TlsAcceptor>,
    internal: SocketAddr,
    limits: FrontLimits,
    hook: LimitHook,
    failures: AtomicU64,
}

/// Why the front ended a client's connection.
struct Refusal {
    limit: &'static str,
    detail: String,
}

fn refuse(limit: &'static str, detail: String) -> Refusal {
    Refusal { limit, detail }
}

impl Front {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        internal: SocketAddr,
        limits: FrontLimits,
        hook: LimitHook,
    ) -> Front {
        Front {
            listener,
            tls,
            internal,
            limits,
            hook,
        }
    }

    /// Serves until the process ends (call inside a tokio runtime, e.g. `tokio::spawn`).
    pub async fn run(self) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::error!(error = %e, "MQTT front cannot be made non-blocking");
            return;
        }
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "MQTT front cannot start");
                return;
            }
        };
        let shared = Arc::new(Shared {
            acceptor: self.tls.map(TlsAcceptor::from),
            internal: self.internal,
            limits: self.limits,
            hook: self.hook,
            failures: AtomicU64::new(0),
        });
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    (shared.hook)(names::ACCEPT_ERRORS, &|| {
                        format!("cannot accept an MQTT connection ({e}); pausing {ACCEPT_PAUSE:?}")
                    });
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                let max = shared.limits.max_connections;
                (shared.hook)(names::CONNECTIONS, &|| {
                    format!("{max} MQTT connections are open (--max-mqtt-connections); closed the one from {peer}")
                });
                drop(tcp);
                continue;
            };
            tokio::spawn(serve(shared.clone(), tcp, peer, permit));
        }
    }
}

/// One client connection, from the accept to its end.
async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.limits.connect_timeout;
    let result = match &shared.acceptor {
        None => relay(&shared, tcp, peer, deadline).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => relay(&shared, tls, peer, deadline).await,
            Ok(Err(e)) => {
                count_failure(
                    &shared.failures,
                    peer,
                    &format!("TLS handshake failed: {e}"),
                );
                Ok(())
            }
            Err(_) => Err(timed_out(&shared, peer)),
        },
    };
    if let Err(r) = result {
        (shared.hook)(r.limit, &|| r.detail.clone());
    }
}

fn timed_out(shared: &Shared, peer: SocketAddr) -> Refusal {
    refuse(
        names::CONNECT_TIMEOUT,
        format!(
            "{peer} sent no CONNECT within {:?} (--mqtt-connect-timeout-secs); closed",
            shared.limits.connect_timeout
        ),
    )
}

/// Logs a failed connection (bad TLS, broker unreachable) at a bounded rate.
fn count_failure(failures: &AtomicU64, peer: SocketAddr, error: &str) {
    let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 10 || n.is_multiple_of(1000) {
        tracing::warn!(%peer, error, failures = n, "MQTT connection failed");
    }
}

/// Reads more bytes into `buf`; `Ok(0)` at the end of the stream.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(BUF);
    }
    r.read_buf(buf).await
}

/// Waits for the CONNECT (the first packet) and judges it; `Ok(false)`: the client left.
async fn read_connect<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<bool, Refusal> {
    loop {
        let head = packet::fixed_header(buf)
            .map_err(|e| refuse(names::MALFORMED, format!("{peer}: {e}; closed")))?;
        if let Some(h) = head {
            if h.kind != CONNECT {
                return Err(refuse(
                    names::MALFORMED,
                    format!(
                        "{peer}: first packet is of type {}, not CONNECT; closed",
                        h.kind
                    ),
                ));
            }
            if h.remaining > MAX_CONNECT {
                return Err(refuse(
                    names::PACKET_BYTES,
                    format!(
                        "{peer}: CONNECT of {} bytes is above {MAX_CONNECT}; closed",
                        h.remaining
                    ),
                ));
            }
            let end = h.header_len + h.remaining;
            if buf.len() >= end {
                let will = packet::connect_will(&buf[h.header_len..end])
                    .map_err(|e| refuse(names::MALFORMED, format!("{peer}: {e}; closed")))?;
                if let Some((topic, true)) = will {
                    if !topic.starts_with(RETAINED_PREFIX) {
                        return Err(refuse(
                            names::RETAINED_TOPIC,
                            format!("{peer}: retained will on {topic:?}, outside {RETAINED_PREFIX}; closed"),
                        ));
                    }
                }
                return Ok(true);
            }
        }
        match fill(r, buf).await {
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
    }
}

/// Relays one client (after TLS) to rumqttd, judging every packet it sends.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    client: S,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(), Refusal> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut buf = Vec::with_capacity(BUF);
    match tokio::time::timeout_at(deadline, read_connect(&mut cr, &mut buf, peer)).await {
        Err(_) => return Err(timed_out(shared, peer)),
        Ok(Ok(false)) => return Ok(()),
        Ok(Ok(true)) => {}
        Ok(Err(r)) => return Err(r),
    }
    let broker = match TcpStream::connect(shared.internal).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot reach the broker at {}: {e}", shared.internal);
            count_failure(&shared.failures, peer, &why);
            return Ok(());
        }
    };
    let _ = broker.set_nodelay(true);
    let (br, mut bw) = broker.into_split();
    let down = async {
        let mut br = tokio::io::BufReader::with_capacity(BUF, br);
        let _ = tokio::io::copy_buf(&mut br, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        () = down => Ok(()),
        r = upstream(&shared.limits, &mut cr, &mut bw, buf, peer) => r,
    }
}

/// Passes the client's packets to rumqttd once each one's head passed [`judge`]; ends at the
/// client's end of stream, a write error, or a refusal.
async fn upstream<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    limits: &FrontLimits,
    cr: &mut R,
    bw: &mut W,
    mut buf: Vec<u8>,
    peer: SocketAddr,
) -> Result<(), Refusal> {
    // Bytes of the current packet that passed judgement and still have to be forwarded.
    let mut pass = 0usize;
    loop {
        if pass == 0 {
            if let Some(total) = judge(&buf, limits, peer)? {
                pass = total;
                continue;
            }
        } else if !buf.is_empty() {
            let n = pass.min(buf.len());
            if bw.write_all(&buf[..n]).await.is_err() {
                return Ok(());
            }
            buf.drain(..n);
            pass -= n;
            continue;
        }
        if buf.is_empty() && buf.capacity() > 4 * BUF {
            buf.shrink_to(BUF);
        }
        match fill(cr, &mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// The type name of a packet, for refusal messages.
fn kind_name(kind: u8) -> &'static str {
    match kind {
        CONNECT => "CONNECT",
        PUBLISH => "PUBLISH",
        8 => "SUBSCRIBE",
        _ => "MQTT",
    }
}

/// True for `fleet/<device>/status` and `fleet/<device>/cmd` (and the controller's status).
fn small_topic(topic: &str) -> bool {
    let mut levels = topic.split('/');
    matches!(
        (levels.next(), levels.next(), levels.next(), levels.next()),
        (Some("fleet"), Some(_), Some("status" | "cmd"), None)
    )
}

/// Judges the packet at the start of `buf`: `Ok(Some(len))` lets its `len` bytes through,
/// `Ok(None)` needs more bytes to decide.
fn judge(buf: &[u8], limits: &FrontLimits, peer: SocketAddr) -> Result<Option<usize>, Refusal> {
    let malformed =
        |e: packet::PacketError| refuse(names::MALFORMED, format!("{peer}: {e}; closed"));
    let Some(h) = packet::fixed_header(buf).map_err(malformed)? else {
        return Ok(None);
    };
    let FixedHeader {
        kind,
        flags,
        remaining,
        header_len,
    } = h;
    let too_big = || {
        refuse(
            names::PACKET_BYTES,
            format!(
                "{peer}: {} packet of {remaining} bytes is above the limit of {} (--mqtt-max-packet-bytes); closed",
                kind_name(kind),
                limits.max_packet
            ),
        )
    };
    if kind != PUBLISH {
        if remaining > limits.max_packet {
            return Err(too_big());
        }
        return Ok(Some(header_len + remaining));
    }
    let body = &buf[header_len..];
    let too_short = || {
        refuse(
            names::MALFORMED,
            format!("{peer}: PUBLISH topic runs past the packet; closed"),
        )
    };
    if remaining < 2 {
        return Err(too_short());
    }
    let Some(need) = packet::publish_topic_need(body) else {
        return Ok(None);
    };
    if need > remaining {
        return Err(too_short());
    }
    let Some(topic) = packet::publish_topic(body).map_err(malformed)? else {
        return Ok(None);
    };
    if flags & 1 == 1 && !topic.starts_with(RETAINED_PREFIX) {
        return Err(refuse(
            names::RETAINED_TOPIC,
            format!("{peer}: retained PUBLISH on {topic:?}, outside {RETAINED_PREFIX}; closed"),
        ));
    }
    if remaining > limits.max_packet {
        return Err(too_big());
    }
    if remaining > limits.max_status && small_topic(&topic) {
        return Err(refuse(
            names::STATUS_BYTES,
            format!(
                "{peer}: PUBLISH of {remaining} bytes on {topic} is above the limit of {} (--mqtt-max-status-bytes); closed",
                limits.max_status
            ),
        ));
    }
    Ok(Some(header_len + remaining))
}
