//! A TCP gate in front of a real server: while shut it accepts connections and drops them at
//! once (a server that is restarting, a link that is down); once opened it forwards bytes both
//! ways. Deterministic where killing the real server would race with the device.

#![allow(dead_code)]

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The gate; dropped with the test (its thread ends with the process).
pub struct Gate {
    /// The port clients connect to.
    pub port: u16,
    /// Where to forward; 0 while shut.
    target: Arc<AtomicU16>,
    refused: Arc<AtomicU64>,
    /// Client sides of the connections let through, so shutting again can break them.
    through: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    /// A shut gate (see [`Gate::open_to`]).
    pub fn shut() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let port = listener.local_addr().expect("gate address").port();
        let target = Arc::new(AtomicU16::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let through: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (t, r, th) = (target.clone(), refused.clone(), through.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let to = t.load(Ordering::SeqCst);
                if to == 0 {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                }
                if let Ok(c) = conn.try_clone() {
                    th.lock().expect("gate lock").push(c);
                }
                std::thread::spawn(move || forward(conn, to));
            }
        });
        Gate {
            port,
            target,
            refused,
            through,
        }
    }

    /// Lets connections through to `127.0.0.1:target` from now on.
    pub fn open_to(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// Shuts the gate again: breaks the connections let through (a client's pooled keep-alive
    /// connection too) and drops every new one from now on.
    pub fn shut_again(&self) {
        self.target.store(0, Ordering::SeqCst);
        for c in self.through.lock().expect("gate lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Connections dropped while shut.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

fn forward(client: TcpStream, target: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut client = client;
        let mut server = server;
        let _ = std::io::copy(&mut client, &mut server);
        let _ = server.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.flush();
    let _ = c2.shutdown(Shutdown::Write);
    let _ = up.join();
}
