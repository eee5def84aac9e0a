//! The only way a simulated device puts a message on the bus or subscribes: QoS and retain come
//! from the topic contract ([`fleet_schema::Topic::spec`], documented in `topics.md`), as they
//! do for the agent, so the simulator loads fleetd with the traffic real devices send.

use fleet_schema::{Qos, Subscription, Topic};
use rumqttc::{AsyncClient, ClientError, LastWill, QoS};

/// rumqttc's name for a contract QoS.
pub fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// Queues `payload` on `topic` with the topic's QoS and retain flag, or fails at once when the
/// client's request channel is full.
pub fn try_publish(
    client: &AsyncClient,
    topic: &Topic,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    let spec = topic.spec();
    client.try_publish(topic.to_string(), qos(spec.qos()), spec.retain(), payload)
}

/// Subscribes to `sub` with its topic's QoS, or fails at once when the channel is full.
pub fn try_subscribe(client: &AsyncClient, sub: &Subscription) -> Result<(), ClientError> {
    client.try_subscribe(sub.filter(), qos(sub.qos()))
}

/// The last will `payload` on `topic`, with the topic's QoS and retain flag.
pub fn last_will(topic: &Topic, payload: Vec<u8>) -> LastWill {
    let spec = topic.spec();
    LastWill::new(topic.to_string(), payload, qos(spec.qos()), spec.retain())
}
