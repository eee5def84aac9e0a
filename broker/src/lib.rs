//! The MQTT broker that `fleetd` embeds by default, so a small fleet needs one process and no
//! external infrastructure. It wraps rumqttd (an MQTT 3.1.1 listener) running on its own
//! threads, and adds what rumqttd leaves out: a real check that the port is free (rumqttd's
//! `Broker::start` reports success even when its bind fails) and a readiness wait that proves the
//! listener answers an MQTT handshake before `start` returns.
//!
//! Nothing else in FleetD may assume this broker: `fleetd --mqtt-url` replaces it with any
//! MQTT 3.1.1 broker.

mod config;
mod probe;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

pub use config::{broker_config, MAX_CONNECTIONS, MAX_PAYLOAD};

/// A tracing filter directive that keeps rumqttd quiet when fleetd logs at info level
/// (rumqttd logs every connection at info, which drowns fleetd's own lines at fleet scale).
pub const LOG_DIRECTIVE: &str = "rumqttd=warn";

/// How long [`EmbeddedBroker::start`] waits for the listener to answer an MQTT handshake.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the embedded broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not bindable here.
    #[error("cannot listen for MQTT on {addr}: {reason}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The broker thread could not be created.
    #[error("cannot start the MQTT broker thread: {0}")]
    Thread(std::io::Error),
    /// The broker started but did not answer an MQTT handshake in time.
    #[error("MQTT broker on {addr} did not become ready within {waited:?}: {last_error}")]
    NotReady {
        /// The address probed.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// The last probe failure.
        last_error: String,
    },
}

/// A running embedded broker. rumqttd has no shutdown: the broker lives until the process exits,
/// which is what fleetd wants (it stops with the process, crash-only).
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: std::thread::JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts rumqttd listening on `listen` (port 0 picks a free port) and returns once it
    /// answers an MQTT CONNECT, or an error naming the address when the port is taken.
    pub fn start(listen: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        let addr = check_bind(listen)?;
        let config = broker_config(addr);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;
        probe::wait_ready(addr, READY_TIMEOUT)?;
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(EmbeddedBroker {
            addr,
            _thread: thread,
        })
    }

    /// The address the broker listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds the address once to prove it is free (and to pick a port when 0 was given), then
/// releases it for rumqttd.
fn check_bind(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(listen).map_err(|reason| BrokerError::Bind {
        addr: listen,
        reason,
    })?;
    let addr = listener.local_addr().map_err(|reason| BrokerError::Bind {
        addr: listen,
        reason,
    })?;
    drop(listener);
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

    fn localhost0() -> SocketAddr {
        "127.0.0.1:0".parse().expect("valid address")
    }

    #[test]
    fn refuses_a_taken_port() {
        let taken = TcpListener::bind(localhost0()).expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = EmbeddedBroker::start(addr).expect_err("port is taken");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn relays_a_retained_publish() {
        let broker = EmbeddedBroker::start(localhost0()).expect("starts");
        let port = broker.local_addr().port();

        let mut pub_opts = MqttOptions::new("pub", "127.0.0.1", port);
        pub_opts.set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD);
        let (publisher, mut pub_conn) = Client::new(pub_opts, 10);
        let big = vec![7u8; 1_500_000];
        publisher
            .publish("fleet/t1/cmd", QoS::AtLeastOnce, true, big.clone())
            .expect("queued");
        let mut acked = false;
        for ev in pub_conn.iter().take(20) {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = ev {
                acked = true;
                break;
            }
        }
        assert!(acked, "publish acknowledged");

        let mut sub_opts = MqttOptions::new("sub", "127.0.0.1", port);
        sub_opts.set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD);
        let (subscriber, mut sub_conn) = Client::new(sub_opts, 10);
        subscriber
            .subscribe("fleet/+/cmd", QoS::AtLeastOnce)
            .expect("queued");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while std::time::Instant::now() < deadline {
            match sub_conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    got = Some(p);
                    break;
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => panic!("subscriber connection failed: {e}"),
            }
        }
        let p = got.expect("retained message delivered");
        assert_eq!(p.topic, "fleet/t1/cmd");
        assert_eq!(p.payload.len(), big.len());
    }
}
