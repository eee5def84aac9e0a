//! The embedded broker's front against real sockets: connection cap, CONNECT timeout, and
//! refusal by size and by retained topic before rumqttd holds the message.

mod support;

use fleet_broker::limits::names;
use fleet_broker::FrontLimits;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{broker, client, wait_event};

/// True when the PUBLISH just queued on `conn` is acknowledged; false when the connection
/// ends first (or nothing comes within 5 s).
fn acked(conn: &mut Connection) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
            Ok(Err(_)) => return false,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// True once the peer closed `s` (read returns 0 or an error) within `secs`.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs)))
        .expect("timeout");
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn closes_connections_beyond_the_cap_at_once() {
    let (b, hits) = broker(FrontLimits {
        max_connections: 2,
        ..FrontLimits::default()
    });
    let addr = b.local_addr();
    let _idle1 = TcpStream::connect(addr).expect("first");
    let _idle2 = TcpStream::connect(addr).expect("second");
    let mut third = TcpStream::connect(addr).expect("third is accepted by the kernel");
    assert!(closed_within(&mut third, 5), "third connection closed");
    hits.wait(names::CONNECTIONS, 1);
    // The two idle ones still hold their slots (the default CONNECT timeout is 10 s).
    assert_eq!(hits.get(names::CONNECT_TIMEOUT), 0);
}

#[test]
fn closes_a_client_that_sends_no_connect() {
    let (b, hits) = broker(FrontLimits {
        connect_timeout: Duration::from_millis(300),
        ..FrontLimits::default()
    });
    let mut idle = TcpStream::connect(b.local_addr()).expect("connect");
    assert!(closed_within(&mut idle, 5), "idle connection closed");
    hits.wait(names::CONNECT_TIMEOUT, 1);

    let mut junk = TcpStream::connect(b.local_addr()).expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    assert!(closed_within(&mut junk, 5), "non-MQTT connection closed");
    hits.wait(names::MALFORMED, 1);
}

/// The attack as reported: retained 1.9 MB messages on junk topics, and an oversized status.
/// None of them reaches rumqttd: a fresh subscriber to `#` gets only the marker.
#[test]
fn refuses_oversized_and_junk_retained_publishes_before_the_broker_holds_them() {
    let (b, hits) = broker(FrontLimits::default());
    let port = b.local_addr().port();
    let big = vec![0x5a; 1_900_000];
    let attacks: [(&str, Vec<u8>); 4] = [
        ("junk/1", big.clone()),
        ("junk/2", vec![1; 100]),
        ("fleet/forged/status", vec![2; 300 * 1024]),
        ("fleet/x/logs", big),
    ];
    for (i, (topic, payload)) in attacks.iter().enumerate() {
        let (c, mut conn) = client(port, &format!("attacker-{i}"));
        c.publish(*topic, QoS::AtLeastOnce, true, payload.clone())
            .expect("queued");
        assert!(!acked(&mut conn), "{topic}: refused, never acknowledged");
    }
    hits.wait(names::RETAINED_TOPIC, 2);
    hits.wait(names::STATUS_BYTES, 1);
    hits.wait(names::PACKET_BYTES, 1);
    assert_eq!(
        hits.get(names::PACKET_BYTES),
        1,
        "junk/1 counts as junk retained"
    );

    let (c, mut conn) = client(port, "marker");
    c.publish("fleet/marker/logs", QoS::AtLeastOnce, true, vec![3; 10])
        .expect("queued");
    assert!(
        acked(&mut conn),
        "a small retained message under fleet/ passes"
    );

    let (sub, mut sub_conn) = client(port, "watcher");
    sub.subscribe("#", QoS::AtLeastOnce).expect("queued");
    let mut topics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topics.iter().any(|t| t == "fleet/marker/logs") && Instant::now() < deadline {
        if let Some(Event::Incoming(Packet::Publish(p))) = wait_event(&mut sub_conn, 1, |e| {
            matches!(e, Event::Incoming(Packet::Publish(_)))
        }) {
            topics.push(p.topic);
        }
    }
    assert_eq!(topics, vec!["fleet/marker/logs".to_string()]);
}

#[test]
fn refuses_a_retained_will_outside_fleet() {
    let (b, hits) = broker(FrontLimits::default());
    let mut opts = MqttOptions::new("will-junk", "127.0.0.1", b.local_addr().port());
    opts.set_last_will(rumqttc::LastWill::new(
        "junk/will",
        vec![0; 10],
        QoS::AtLeastOnce,
        true,
    ));
    let (_c, mut conn) = Client::new(opts, 10);
    let connack = wait_event(&mut conn, 3, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    });
    assert!(connack.is_none(), "refused before CONNACK");
    hits.wait(names::RETAINED_TOPIC, 1);
}
