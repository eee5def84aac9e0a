//! The HTTP(S) server under the API (hyper's HTTP/1 connection, driven here rather than by
//! `axum::serve`, which has neither timeouts nor a connection limit). Every connection holds a
//! permit of `--max-http-connections`; one beyond it is closed as soon as it is accepted. Each
//! connection has a TLS handshake timeout (HTTPS), a header timeout, an idle keep-alive
//! timeout, and a timeout between the pieces of a request body and of a response (see
//! [`super::watch`]); every one of them, and every accept error, is counted in
//! `fleetd_limit_hits_total`. Accept errors (out of file descriptors, ...) back off briefly.

use super::watch::{timed_body, Activity, BodyStall, Timeouts, Tracked};
use crate::limits::LimitArgs;
use crate::metrics::Metrics;
use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (out of file descriptors, ...), so a persistent failure never
/// turns into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// File descriptors kept for everything but HTTP connections (the broker's devices, the
/// database, the store): at most half of the open-file limit goes to HTTP.
pub fn connection_budget(requested: u32, nofile: Option<u64>) -> u32 {
    match nofile {
        Some(limit) => {
            let half = u32::try_from(limit / 2).unwrap_or(u32::MAX).max(1);
            requested.min(half)
        }
        None => requested,
    }
}

/// The server's settings, from the limit flags.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Header, body and idle timeouts.
    pub timeouts: Timeouts,
    /// TLS handshake timeout.
    pub handshake: Duration,
}

impl ServerLimits {
    /// From the flags, with the connection count kept within `nofile` (see
    /// [`connection_budget`]).
    pub fn from_args(l: &LimitArgs, nofile: Option<u64>) -> Self {
        let max_connections = connection_budget(l.max_http_connections, nofile);
        if max_connections < l.max_http_connections {
            tracing::warn!(
                requested = l.max_http_connections,
                used = max_connections,
                open_file_limit = nofile,
                "--max-http-connections lowered to half of the open-file limit, so the broker keeps file descriptors"
            );
        }
        Self {
            max_connections,
            timeouts: Timeouts {
                header: Duration::from_secs(l.http_header_timeout_secs),
                body: Duration::from_secs(l.http_body_timeout_secs),
                idle: Duration::from_secs(l.http_idle_timeout_secs),
            },
            handshake: Duration::from_secs(l.tls_handshake_timeout_secs),
        }
    }
}

/// Serves `router` on `listener` (HTTPS with `tls`) until `shutdown`, then lets the open
/// connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let acceptor = tls.map(TlsAcceptor::from);
    let conn = Arc::new(ConnShared {
        router,
        limits: limits.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                metrics.limits.hit("http_accept_errors", || {
                    format!("accepting an HTTP connection failed: {e} (retrying after {ACCEPT_BACKOFF:?})")
                });
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.limits.hit("http_connections", || {
                format!(
                    "{} HTTP connections are open (--max-http-connections); closed a new one from {peer}",
                    limits.max_connections
                )
            });
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            conn.clone(),
            tcp,
            peer,
            acceptor.clone(),
            permit,
        ));
    }
    drop(listener);
    // Every connection gives its permit back when it ends (the caller bounds this wait).
    let _all = permits.acquire_many(limits.max_connections).await;
    Ok(())
}

/// What every connection task shares.
struct ConnShared {
    router: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// One connection: the TLS handshake (bounded), then HTTP until it ends or a timeout passes.
async fn connection(
    shared: Arc<ConnShared>,
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    _permit: OwnedSemaphorePermit,
) {
    // The header timeout counts from here, or from the end of the TLS handshake.
    match acceptor {
        None => {
            let activity = Activity::new();
            http(&shared, Tracked::new(tcp, activity.clone()), activity).await
        }
        Some(acceptor) => {
            match tokio::time::timeout(shared.limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let activity = Activity::new();
                    http(&shared, Tracked::new(tls, activity.clone()), activity).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => shared.metrics.limits.hit("http_tls_handshake_timeout", || {
                    format!(
                        "{peer} did not complete the TLS handshake within {:?} (--tls-handshake-timeout-secs); closed",
                        shared.limits.handshake
                    )
                }),
            }
        }
    }
}

/// Serves HTTP/1 on one connection, closing it when a timeout passes.
async fn http<S>(shared: &ConnShared, io: Tracked<S>, activity: Arc<Activity>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = shared.limits.timeouts;
    let inner = TowerToHyperService::new(shared.router.clone());
    let metrics = shared.metrics.clone();
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = act.handling();
        let m = metrics.clone();
        let stall = BodyStall::default();
        let mut req = req.map(|b| {
            timed_body(Body::new(b), timeouts.body, stall.clone(), move || {
                m.limits.hit("http_body_timeout", || {
                    format!(
                        "a request body stalled for {:?} (--http-body-timeout-secs); the request failed",
                        timeouts.body
                    )
                })
            })
        });
        req.extensions_mut().insert(stall);
        let fut = hyper::service::Service::call(&inner, req);
        async move {
            let out = fut.await;
            drop(guard);
            out
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let tick = timeouts
        .header
        .min(timeouts.body)
        .min(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        shared.metrics.limits.hit("http_idle_timeout", || format!(
                            "a kept-alive HTTP connection sent no request for {:?} (--http-idle-timeout-secs); closed",
                            timeouts.idle
                        ));
                    } else {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticker.tick() => {
                if let Some(expired) = activity.expired(&timeouts, Instant::now()) {
                    shared.metrics.limits.hit(expired.label(), || match expired {
                        super::watch::Expired::Header => format!(
                            "an HTTP client did not send a complete request head within {:?} (--http-header-timeout-secs); closed",
                            timeouts.header
                        ),
                        super::watch::Expired::Write => format!(
                            "an HTTP client took no response data for {:?} (--http-body-timeout-secs); closed",
                            timeouts.body
                        ),
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_within_half_the_open_file_limit() {
        assert_eq!(connection_budget(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_budget(1024, Some(1024)), 512);
        assert_eq!(connection_budget(1024, None), 1024);
        assert_eq!(connection_budget(1024, Some(1)), 1);
    }
}
