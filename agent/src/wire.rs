//! The only way the agent puts a message on the bus or subscribes: QoS and retain come from the
//! topic contract ([`fleet_schema::Topic::spec`], documented in `topics.md`), never from the
//! call site, so what `topics.md` promises is what the wire carries.

use fleet_schema::{Qos, Subscription, Topic};
use rumqttc::{AsyncClient, ClientError, LastWill, QoS};

/// rumqttc's name for a contract QoS.
pub fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// Queues `payload` on `topic` with the topic's QoS and retain flag, waiting for room in the
/// request channel.
pub async fn publish(
    client: &AsyncClient,
    topic: &Topic,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    let spec = topic.spec();
    client
        .publish(topic.to_string(), qos(spec.qos()), spec.retain(), payload)
        .await
}

/// Queues `payload` on `topic` as [`publish`] does, or fails at once when the request channel
/// is full (telemetry, which must never hold up the publisher).
pub fn try_publish(
    client: &AsyncClient,
    topic: &Topic,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    let spec = topic.spec();
    client.try_publish(topic.to_string(), qos(spec.qos()), spec.retain(), payload)
}

/// Subscribes to `sub` with its topic's QoS.
pub async fn subscribe(client: &AsyncClient, sub: &Subscription) -> Result<(), ClientError> {
    client.subscribe(sub.filter(), qos(sub.qos())).await
}

/// The last will `payload` on `topic`, with the topic's QoS and retain flag.
pub fn last_will(topic: &Topic, payload: Vec<u8>) -> LastWill {
    let spec = topic.spec();
    LastWill::new(topic.to_string(), payload, qos(spec.qos()), spec.retain())
}
