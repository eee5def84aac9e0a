//! Readiness probe: a minimal MQTT 3.1.1 CONNECT/CONNACK exchange over a plain TCP
//! socket. A bare TCP connect would prove only that the port is open (and makes rumqttd log an
//! error for the missing CONNECT); the handshake proves the broker actually serves MQTT.

use crate::BrokerError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Client id of the probe connection.
const PROBE_CLIENT_ID: &[u8] = b"fleet-broker-probe";

/// Retries the handshake until it succeeds or `timeout` passes.
pub(crate) fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), BrokerError> {
    let started = Instant::now();
    loop {
        let last_error = match handshake(addr) {
            Ok(()) => return Ok(()),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            return Err(BrokerError::NotReady {
                addr,
                waited: timeout,
                last_error,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One CONNECT (clean session), expecting CONNACK "accepted".
fn handshake(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(&connect_packet())?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other(format!(
            "unexpected CONNACK bytes {connack:02x?}"
        )));
    }
    // Close without DISCONNECT: rumqttd logs a spurious error when a client sends DISCONNECT
    // and then closes the socket (it handles the disconnection twice).
    Ok(())
}

/// The bytes of an MQTT 3.1.1 CONNECT with a clean session and a 60 s keep-alive.
fn connect_packet() -> Vec<u8> {
    let id_len = u8::try_from(PROBE_CLIENT_ID.len()).expect("probe client id is short");
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C];
    body.extend_from_slice(&[0x00, id_len]);
    body.extend_from_slice(PROBE_CLIENT_ID);
    let body_len = u8::try_from(body.len()).expect("CONNECT body fits one length byte");
    let mut packet = vec![0x10, body_len];
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_well_formed() {
        let p = connect_packet();
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[4..8], b"MQTT");
    }
}
