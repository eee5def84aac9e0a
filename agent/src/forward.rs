//! The in-agent TCP forwarder for blue-green traffic switching: the agent owns the listening
//! socket on an app's service port and splices every connection to the active instance, which
//! listens on an internal loopback port. Switching changes the backend for new connections only
//! (open ones finish on the instance they reached), and the listener never closes, so no
//! connection is refused during a switch.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// How long a connection waits for a backend to exist and accept before it is dropped.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to reach a backend.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// A listening service port forwarding to a switchable loopback backend port.
#[derive(Debug)]
pub struct Forwarder {
    backend: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `0.0.0.0:port` (must be called inside a tokio runtime). No backend yet:
    /// connections wait up to 10 s for one.
    pub fn bind(port: u16) -> io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))?;
        let listener = socket.listen(1024)?;
        let backend = Arc::new(AtomicU16::new(0));
        let shared = Arc::clone(&backend);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        tokio::spawn(serve(client, Arc::clone(&shared)));
                    }
                    Err(e) => {
                        tracing::warn!(port, error = %e, "forwarder accept failed");
                        tokio::time::sleep(CONNECT_RETRY).await;
                    }
                }
            }
        });
        Ok(Self { backend, task })
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
        let fwd = Forwarder::bind(port).expect("bind");
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
}
