//! A network link the test can cut: a TCP proxy in front of a real server (the broker) that,
//! while cut, closes every connection through it and refuses new ones, as a pulled cable or a
//! dead uplink looks to both ends once their keep-alive expires. Restored, it forwards again.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The proxy; its threads end with the test process.
pub struct Link {
    /// The port clients connect to (127.0.0.1).
    pub port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    refused: Arc<AtomicU64>,
}

impl Link {
    /// A link to `127.0.0.1:upstream`, up.
    pub fn to(upstream: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link");
        let port = listener.local_addr().expect("link address").port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let (up2, open2, refused2) = (up.clone(), open.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    refused2.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                splice(client, server, &open2);
            }
        });
        Link {
            port,
            up,
            open,
            refused,
        }
    }

    /// Breaks every connection through the link and refuses new ones until [`Link::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().expect("link lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Connections refused while cut (a client that keeps trying shows up here).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Copies bytes both ways on two threads, remembering both sockets so a cut can close them.
fn splice(client: TcpStream, server: TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let mut list = open.lock().expect("link lock");
    for s in [&client, &server] {
        if let Ok(c) = s.try_clone() {
            list.push(c);
        }
    }
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    for (from, to) in pairs {
        let (Ok(mut from), Ok(mut to)) = (from, to) else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}
