//! Readiness probe: a minimal MQTT 3.1.1 CONNECT/CONNACK exchange over a plain TCP
//! socket. A bare TCP connect would prove only that the port is open (and makes rumqttd log an
//! error for the missing CONNECT); the handshake proves the broker actually serves MQTT.

use crate::BrokerError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Client id of the probe connection (the broker's CONNECT check lets it in with the
/// per-start probe password only).
pub(crate) const PROBE_CLIENT_ID: &str = "fleet-broker-probe";

/// User name of the probe connection.
pub(crate) const PROBE_USERNAME: &str = "_probe";

/// Retries the handshake until it succeeds or `timeout` passes.
pub(crate) fn wait_ready(
    addr: SocketAddr,
    password: &str,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let started = Instant::now();
    loop {
        let last_error = match handshake(addr, password) {
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
fn handshake(addr: SocketAddr, password: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(&connect_packet(password))?;
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

/// The bytes of an MQTT 3.1.1 CONNECT with a clean session, a 60 s keep-alive and the probe's
/// user name and password.
fn connect_packet(password: &str) -> Vec<u8> {
    // Flags: user name (0x80), password (0x40), clean session (0x02).
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3C];
    for field in [PROBE_CLIENT_ID, PROBE_USERNAME, password] {
        let len = u16::try_from(field.len()).expect("probe fields are short");
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
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
        let p = connect_packet("secret");
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[4..8], b"MQTT");
        assert!(p.ends_with(b"\x00\x06secret"));
    }
}
