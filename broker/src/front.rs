//! The TLS front of the embedded broker: accepts TLS connections on the public address,
//! completes each handshake within a timeout (a client that stalls it holds nothing), and
//! forwards the decrypted stream to rumqttd's loopback listener, which still checks every
//! CONNECT. At most [`crate::MAX_CONNECTIONS`] connections are open at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound public listener, waiting to be run.
#[derive(Debug)]
pub struct TlsFront {
    listener: std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    internal: SocketAddr,
}

impl TlsFront {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
        internal: SocketAddr,
    ) -> TlsFront {
        TlsFront {
            listener,
            config,
            internal,
        }
    }

    /// Serves until the process ends (call inside a tokio runtime, e.g. `tokio::spawn`).
    pub async fn run(self) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::error!(error = %e, "MQTT TLS front cannot be made non-blocking");
            return;
        }
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "MQTT TLS front cannot start");
                return;
            }
        };
        let acceptor = TlsAcceptor::from(self.config);
        let slots = Arc::new(Semaphore::new(crate::MAX_CONNECTIONS));
        let failures = Arc::new(AtomicU64::new(0));
        loop {
            let permit = match slots.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    count_failure(&failures, peer_unknown(), &e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let internal = self.internal;
            let failures = failures.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = forward(acceptor, tcp, internal).await {
                    count_failure(&failures, peer, &e);
                }
            });
        }
    }
}

fn peer_unknown() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Logs a failed connection at a bounded rate.
fn count_failure(failures: &AtomicU64, peer: SocketAddr, error: &str) {
    let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 10 || n.is_multiple_of(1000) {
        tracing::warn!(%peer, error, failures = n, "MQTT TLS connection failed");
    }
}

async fn forward(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    internal: SocketAddr,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let mut plain = TcpStream::connect(internal)
        .await
        .map_err(|e| format!("cannot reach the broker at {internal}: {e}"))?;
    let _ = plain.set_nodelay(true);
    // A closed or reset connection on either side simply ends the forwarding.
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
    Ok(())
}
