//! Retained messages through the embedded broker (vendor/rumqttd patches 3 and 4): a wildcard
//! subscription gets every retained message, not the first 100, and a SUBSCRIBE to a filter the
//! session already has (a resumed session re-subscribing) is handed the retained message again.

mod support;

use fleet_broker::FrontLimits;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{broker, client, wait_event};

/// Publishes `topic -> payload` retained with QoS 1 and waits for every acknowledgement.
fn publish_retained(port: u16, messages: &[(String, Vec<u8>)]) {
    // Capacity for every request: nothing polls the connection until all are queued.
    let opts = MqttOptions::new("publisher", "127.0.0.1", port);
    let (c, mut conn) = Client::new(opts, messages.len() + 10);
    for (topic, payload) in messages {
        c.publish(topic.as_str(), QoS::AtLeastOnce, true, payload.clone())
            .expect("queued");
    }
    let mut acks = 0;
    while acks < messages.len() {
        match wait_event(&mut conn, 10, |e| {
            matches!(e, Event::Incoming(Packet::PubAck(_)))
        }) {
            Some(_) => acks += 1,
            None => panic!(
                "{acks} of {} retained publishes acknowledged",
                messages.len()
            ),
        }
    }
}

/// Retained publishes received on `conn` within `secs`, as (topic, payload), until `enough`.
fn receive(conn: &mut Connection, secs: u64, enough: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while got.len() < enough && Instant::now() < deadline {
        if let Some(Event::Incoming(Packet::Publish(p))) = wait_event(conn, 1, |e| {
            matches!(e, Event::Incoming(Packet::Publish(_)))
        }) {
            got.push((p.topic, p.payload.to_vec()));
        }
    }
    got
}

#[test]
fn a_wildcard_subscription_gets_every_retained_message_in_pages() {
    let (b, _hits) = broker(FrontLimits::default());
    let port = b.local_addr().port();
    let messages: Vec<(String, Vec<u8>)> = (0..250)
        .map(|i| {
            (
                format!("fleet/d{i:03}/status"),
                format!("s{i}").into_bytes(),
            )
        })
        .collect();
    publish_retained(port, &messages);

    let (sub, mut conn) = client(port, "watcher");
    sub.subscribe("fleet/+/status", QoS::AtLeastOnce)
        .expect("queued");
    let got = receive(&mut conn, 20, messages.len());
    let topics: BTreeSet<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics.len(),
        messages.len(),
        "distinct retained statuses delivered to fleet/+/status (rumqttd 0.20 stops at 100)"
    );
    for (topic, payload) in &got {
        let expected = &messages.iter().find(|(t, _)| t == topic).expect("known").1;
        assert_eq!(payload, expected, "{topic} carries its own payload");
    }

    // An exact filter gets its one message, and nothing of its neighbours.
    let (one, mut one_conn) = client(port, "one");
    one.subscribe("fleet/d007/status", QoS::AtLeastOnce)
        .expect("queued");
    let got = receive(&mut one_conn, 5, 2);
    assert_eq!(got, vec![("fleet/d007/status".into(), b"s7".to_vec())]);
}

fn persistent_client(port: u16, id: &str) -> (Client, Connection) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(false);
    Client::new(opts, 10)
}

#[test]
fn subscribing_again_hands_over_the_retained_message_again() {
    let (b, _hits) = broker(FrontLimits::default());
    let port = b.local_addr().port();
    publish_retained(port, &[("fleet/dev1/cmd".into(), b"desired-1".to_vec())]);
    let expected = vec![("fleet/dev1/cmd".to_string(), b"desired-1".to_vec())];

    let (c, mut conn) = persistent_client(port, "dev1");
    c.subscribe("fleet/dev1/cmd", QoS::AtLeastOnce)
        .expect("queued");
    assert_eq!(receive(&mut conn, 5, 1), expected, "first subscribe");

    // The same session subscribes again: the subscription is replaced, the retained message
    // sent again (MQTT 3.1.1 section 3.8.4).
    c.subscribe("fleet/dev1/cmd", QoS::AtLeastOnce)
        .expect("queued");
    assert_eq!(
        receive(&mut conn, 5, 1),
        expected,
        "same session re-subscribes"
    );

    // The device goes away and resumes its session, re-subscribing as agents do on connect.
    c.disconnect().expect("queued");
    let _ = wait_event(&mut conn, 2, |e| {
        matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect))
    });
    drop(conn);
    let (c, mut conn) = persistent_client(port, "dev1");
    let connack = wait_event(&mut conn, 5, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    });
    match connack {
        Some(Event::Incoming(Packet::ConnAck(ack))) => {
            assert!(ack.session_present, "the broker resumed the session")
        }
        other => panic!("no CONNACK on resume: {other:?}"),
    }
    c.subscribe("fleet/dev1/cmd", QoS::AtLeastOnce)
        .expect("queued");
    assert_eq!(
        receive(&mut conn, 5, 1),
        expected,
        "resumed session re-subscribes"
    );
}
