//! The MQTT broker that `fleetd` embeds by default, so a small fleet needs one process and no
//! external infrastructure. It wraps rumqttd (an MQTT 3.1.1 listener) running on its own
//! threads on a loopback port, and adds what rumqttd leaves out: a front on the public address
//! ([`Front`]) that bounds connections, CONNECT time and packet sizes and refuses junk retained
//! topics before rumqttd holds anything; a real check that the port is free (rumqttd's
//! `Broker::start` reports success even when its bind fails) and a readiness wait that proves the
//! listener answers an MQTT handshake before `start` returns.
//!
//! Nothing else in FleetD may assume this broker: `fleetd --mqtt-url` replaces it with any
//! MQTT 3.1.1 broker.

mod config;
mod front;
pub mod limits;
mod packet;
mod probe;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use config::{broker_config, MAX_PAYLOAD};
pub use front::{Front, ACCEPT_PAUSE};
pub use limits::{FrontLimits, LimitHook};

/// Decides one CONNECT from its client id, user name and password: true lets it in. fleetd
/// checks them against its device registry and API tokens.
pub type ConnectCheck = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// How the embedded broker listens and whom it lets in.
#[derive(Clone)]
pub struct BrokerOptions {
    /// Public address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The CONNECT check; `None` lets anyone in (only with `fleetd --insecure`).
    pub check: Option<ConnectCheck>,
    /// Serve MQTT over TLS on `listen` with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What the front admits.
    pub limits: FrontLimits,
    /// Receives every limit hit (fleetd counts and logs them).
    pub hook: LimitHook,
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("listen", &self.listen)
            .field("check", &self.check.is_some())
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A tracing filter directive that keeps rumqttd quiet when fleetd logs at info level
/// (rumqttd logs every connection at info, which drowns fleetd's own lines at fleet scale).
/// Its segment and routing warnings ("read cursor jumped") are routine once per-subscription
/// logs are bounded (`FrontLimits::device_log_bytes`): a device that was offline skips to the
/// newest desired state, which is what it needs.
pub const LOG_DIRECTIVE: &str =
    "rumqttd=warn,rumqttd::segments=error,rumqttd::router::routing=error";

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
///
/// rumqttd listens on a loopback port of its own ([`EmbeddedBroker::internal_addr`], still
/// behind the CONNECT check) and the front ([`Front`], run by the caller on its tokio runtime)
/// serves the public address, terminating TLS when configured, and forwards each connection to
/// it. The front uses rustls with the ring provider, like every other TLS endpoint of FleetD.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    internal: SocketAddr,
    front: Option<Front>,
    _thread: std::thread::JoinHandle<()>,
}

/// Wraps fleetd's check in rumqttd's asynchronous auth hook, letting the readiness probe in with
/// its own one-off password.
/// The probe is let in only until the broker is ready.
fn auth_handler(
    check: ConnectCheck,
    probe_password: String,
    probe_open: Arc<AtomicBool>,
) -> rumqttd::AuthHandler {
    Arc::new(move |client_id: String, user: String, pass: String| {
        let ok = if client_id == probe::PROBE_CLIENT_ID && user == probe::PROBE_USERNAME {
            probe_open.load(Ordering::SeqCst) && pass == probe_password
        } else {
            check(&client_id, &user, &pass)
        };
        Box::pin(async move { ok })
    })
}

/// 128 random bits as hex, from the operating system's randomness behind std's hash seeds
/// (the broker crate has no random generator of its own).
fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

impl EmbeddedBroker {
    /// Starts rumqttd on loopback and binds the front on the public address, and returns once
    /// rumqttd answers an MQTT CONNECT, or an error naming the address when the port is taken.
    pub fn start(opts: BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
        let probe_password = random_password();
        let probe_open = Arc::new(AtomicBool::new(true));
        let public = TcpListener::bind(opts.listen).map_err(|reason| BrokerError::Bind {
            addr: opts.listen,
            reason,
        })?;
        let addr = public.local_addr().map_err(|reason| BrokerError::Bind {
            addr: opts.listen,
            reason,
        })?;
        let internal = check_bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let front = Some(Front::new(
            public,
            opts.tls.clone(),
            internal,
            opts.limits,
            opts.hook.clone(),
        ));
        let auth = opts
            .check
            .clone()
            .map(|c| auth_handler(c, probe_password.clone(), probe_open.clone()));
        let config = broker_config(internal, auth, &opts.limits);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;
        probe::wait_ready(internal, &probe_password, READY_TIMEOUT)?;
        probe_open.store(false, Ordering::SeqCst);
        tracing::info!(%addr, tls = opts.tls.is_some(), max_connections = opts.limits.max_connections, authenticated = opts.check.is_some(), "embedded MQTT broker listening");
        Ok(EmbeddedBroker {
            addr,
            internal,
            front,
            _thread: thread,
        })
    }

    /// The address the broker listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-TCP loopback address of rumqttd itself, for clients in the same process (they
    /// bypass the front and its limits).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal
    }

    /// The front to run (once): until it runs, nothing answers on the public address.
    pub fn take_front(&mut self) -> Option<Front> {
        self.front.take()
    }

    /// Runs the front on a thread of its own with a one-thread tokio runtime, for embedders
    /// without a runtime (tests, tools). Does nothing when the front was already taken.
    pub fn serve_front_on_thread(&mut self) -> Result<(), BrokerError> {
        let Some(front) = self.front.take() else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::Thread)?;
        std::thread::Builder::new()
            .name("mqtt-front".into())
            .spawn(move || runtime.block_on(front.run()))
            .map_err(BrokerError::Thread)?;
        Ok(())
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

    fn open(listen: SocketAddr) -> BrokerOptions {
        BrokerOptions {
            listen,
            check: None,
            tls: None,
            limits: FrontLimits::default(),
            hook: limits::log_only(),
        }
    }

    fn connack(port: u16, id: &str, user: Option<(&str, &str)>) -> Result<(), String> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((u, p)) = user {
            opts.set_credentials(u, p);
        }
        let (_client, mut conn) = Client::new(opts, 10);
        for ev in conn.iter().take(5) {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no ConnAck".into())
    }

    #[test]
    fn every_connect_goes_through_the_check() {
        let check: ConnectCheck = Arc::new(|id: &str, user: &str, pass: &str| {
            id == "fleet-agent-d1" && user == "d1" && pass == "right"
        });
        let mut broker = EmbeddedBroker::start(BrokerOptions {
            check: Some(check),
            ..open(localhost0())
        })
        .expect("starts with the probe's own password");
        broker.serve_front_on_thread().expect("front runs");
        let port = broker.local_addr().port();
        assert!(connack(port, "fleet-agent-d1", Some(("d1", "right"))).is_ok());
        assert!(connack(port, "fleet-agent-d1", Some(("d1", "wrong"))).is_err());
        assert!(
            connack(port, "fleet-agent-d1", None).is_err(),
            "no credentials"
        );
        assert!(
            connack(port, "fleet-agent-d2", Some(("d1", "right"))).is_err(),
            "another client id"
        );
        assert!(connack(
            port,
            probe::PROBE_CLIENT_ID,
            Some((probe::PROBE_USERNAME, ""))
        )
        .is_err());
    }

    #[test]
    fn refuses_a_taken_port() {
        let taken = TcpListener::bind(localhost0()).expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = EmbeddedBroker::start(open(addr)).expect_err("port is taken");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn relays_a_retained_publish() {
        let mut broker = EmbeddedBroker::start(open(localhost0())).expect("starts");
        broker.serve_front_on_thread().expect("front runs");
        let port = broker.local_addr().port();

        let mut pub_opts = MqttOptions::new("pub", "127.0.0.1", port);
        pub_opts.set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD);
        let (publisher, mut pub_conn) = Client::new(pub_opts, 10);
        let big = vec![7u8; 1_000_000];
        publisher
            .publish("fleet/t1/logs", QoS::AtLeastOnce, true, big.clone())
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
            .subscribe("fleet/+/logs", QoS::AtLeastOnce)
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
        assert_eq!(p.topic, "fleet/t1/logs");
        assert_eq!(p.payload.len(), big.len());
    }
}
