//! The in-agent TCP forwarder for blue-green traffic switching: the agent owns the listening
//! socket on an app's service port and splices every connection to the active instance, which
//! listens on an internal loopback port. Switching changes the backend for new connections only
//! (open ones finish on the instance they reached), and the listener never closes, so no
//! connection is refused during a switch.

use crate::limits::LimitHits;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// How long a connection waits for a backend to exist and accept before it is dropped.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to reach a backend.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// The limit's name in logs (see docs/limits.md).
pub const LIMIT: &str = "forward_connections";

/// A listening service port forwarding to a switchable loopback backend port.
#[derive(Debug)]
pub struct Forwarder {
    backend: Arc<AtomicU16>,
    open: Arc<Semaphore>,
    max: usize,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `addr:port` (must be called inside a tokio runtime) and forwards at most
    /// `max_connections` connections at once: one beyond that is closed as soon as it is
    /// accepted, so it holds no descriptor, and counted in `hits`. No backend yet: connections
    /// wait up to 10 s for one.
    pub fn bind(
        addr: IpAddr,
        port: u16,
        max_connections: usize,
        hits: Arc<LimitHits>,
    ) -> io::Result<Self> {
        let socket = match addr {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(addr, port))?;
        let listener = socket.listen(1024)?;
        let backend = Arc::new(AtomicU16::new(0));
        let open = Arc::new(Semaphore::new(max_connections));
        let (shared, slots) = (Arc::clone(&backend), Arc::clone(&open));
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            let backend = Arc::clone(&shared);
                            tokio::spawn(async move {
                                serve(client, backend).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            drop(client);
                            hits.hit(LIMIT, 1, || {
                                format!(
                                    "port {port} holds {max_connections} connections; \
                                     closed the one from {peer}"
                                )
                            });
                        }
                    },
                    Err(e) => {
                        tracing::warn!(port, error = %e, "forwarder accept failed");
                        tokio::time::sleep(CONNECT_RETRY).await;
                    }
                }
            }
        });
        Ok(Self {
            backend,
            open,
            max: max_connections,
            task,
        })
    }

    /// Connections being forwarded now.
    pub fn open_connections(&self) -> usize {
        self.max - self.open.available_permits()
    }

    /// Sends new connections to `127.0.0.1:port`; returns whether the backend changed.
    pub fn set_backend(&self, port: u16) -> bool {
        self.backend.swap(port, Ordering::AcqRel) != port
    }

    /// The current backend port (0: none).
    pub fn backend(&self) -> u16 {
        self.backend.load(Ordering::Acquire)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects `client` to the current backend (retrying while there is none or it does not
/// accept yet) and copies bytes both ways until either side closes.
async fn serve(mut client: TcpStream, backend: Arc<AtomicU16>) {
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    loop {
        let port = backend.load(Ordering::Acquire);
        if port != 0 {
            if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(CONNECT_RETRY).await;
    }
}

/// A loopback port free right now, for an instance to listen on.
pub fn free_loopback_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers every connection with `tag` and closes.
    async fn backend(tag: &'static [u8]) -> (u16, JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(tag).await;
            }
        });
        (port, h)
    }

    async fn ask(port: u16) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn switches_backends_without_refusing_a_connection() {
        let (blue, _b) = backend(b"blue").await;
        let (green, _g) = backend(b"green").await;
        let port = free_loopback_port().expect("port");
        let hits = Arc::new(LimitHits::default());
        let fwd = Forwarder::bind([127, 0, 0, 1].into(), port, 1024, hits).expect("bind");
        // A connection made before any backend exists waits for one.
        let early = tokio::spawn(ask(port));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fwd.set_backend(blue));
        assert_eq!(early.await.expect("join").expect("early"), b"blue");
        let mut seen = Vec::new();
        for i in 0..200 {
            if i == 100 {
                assert!(fwd.set_backend(green));
                assert!(!fwd.set_backend(green));
            }
            seen.push(ask(port).await.expect("never refused"));
        }
        assert!(seen[..100].iter().all(|r| r == b"blue"));
        assert!(seen[100..].iter().all(|r| r == b"green"));
        assert_eq!(fwd.backend(), green);
    }

    /// A backend that echoes every connection and keeps it open until the client closes.
    async fn echo() -> (u16, JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (port, h)
    }

    /// Issue 10: 10,500 connections to a forwarder exhausted the agent's descriptors. Here a
    /// real forwarder with a limit of 8 holds 8 live connections; every further one must be
    /// closed at once (read ends, nothing forwarded) and counted, and once the held ones close
    /// a new connection is served again.
    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once_and_counted() {
        const MAX: usize = 8;
        let (backend, _b) = echo().await;
        let port = free_loopback_port().expect("port");
        let hits = Arc::new(LimitHits::default());
        let fwd = Forwarder::bind([127, 0, 0, 1].into(), port, MAX, hits.clone()).expect("bind");
        fwd.set_backend(backend);
        let mut held = Vec::new();
        for _ in 0..MAX {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connects");
            s.write_all(b"x").await.expect("writes");
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .await
                .expect("echoed through the forwarder");
            held.push(s);
        }
        assert_eq!(fwd.open_connections(), MAX);
        for i in 0..50 {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("accepted by the kernel");
            let _ = s.write_all(b"x").await;
            let mut got = Vec::new();
            let read = tokio::time::timeout(CONNECT_WAIT, s.read_to_end(&mut got)).await;
            assert!(read.is_ok(), "excess connection {i} was held open");
            assert!(got.is_empty(), "excess connection {i} reached the backend");
        }
        assert_eq!(hits.count(LIMIT), 50, "every refusal counted");
        assert_eq!(fwd.open_connections(), MAX);
        drop(held);
        // The slots free as the held connections end: a new one is served again.
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        loop {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connects");
            s.write_all(b"y").await.expect("writes");
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).await.is_ok() {
                assert_eq!(&b, b"y");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never served again");
            tokio::time::sleep(CONNECT_RETRY).await;
        }
    }
}
