//! What the broker's integration tests share: an embedded broker with its front on a thread,
//! a client, and waiting for an event.
#![allow(dead_code)] // each test file uses a part

use fleet_broker::{BrokerOptions, EmbeddedBroker, FrontLimits, LimitHook};
use rumqttc::{Client, Connection, Event, MqttOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limit hits by name, as fleetd would count them.
#[derive(Clone, Default)]
pub struct Hits(Arc<Mutex<HashMap<&'static str, u64>>>);

impl Hits {
    pub fn hook(&self) -> LimitHook {
        let map = self.0.clone();
        Arc::new(move |limit, _what| {
            *map.lock().expect("hits lock").entry(limit).or_default() += 1;
        })
    }

    pub fn get(&self, limit: &str) -> u64 {
        self.0
            .lock()
            .expect("hits lock")
            .get(limit)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `limit` was hit at least `n` times.
    pub fn wait(&self, limit: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get(limit) < n {
            assert!(
                Instant::now() < deadline,
                "{limit} hit {} times, expected {n}",
                self.get(limit)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn broker(limits: FrontLimits) -> (EmbeddedBroker, Hits) {
    let hits = Hits::default();
    let mut b = EmbeddedBroker::start(BrokerOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        check: None,
        tls: None,
        limits,
        hook: hits.hook(),
    })
    .expect("broker starts");
    b.serve_front_on_thread().expect("front runs");
    (b, hits)
}

pub fn client(port: u16, id: &str) -> (Client, Connection) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    Client::new(opts, 10)
}

/// Polls `conn` until `pred` holds for an event, or `secs` pass; returns the event.
pub fn wait_event(
    conn: &mut Connection,
    secs: u64,
    pred: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(ev)) if pred(&ev) => return Some(ev),
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    None
}
