//! The only way fleetd puts a message on the bus or subscribes: QoS and retain come from the
//! topic contract ([`fleet_schema::Topic::spec`], documented in `topics.md`), never from the
//! call site, so what `topics.md` promises is what the wire carries.

use fleet_schema::{Qos, Subscription, Topic};
use rumqttc::{AsyncClient, ClientError, LastWill, QoS, SubscribeFilter};

/// rumqttc's name for a contract QoS.
pub fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// Queues `payload` on `topic` with the topic's QoS and retain flag.
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

/// Queues `payload` on `topic` with the topic's QoS but not retained, whatever the topic's
/// retain flag: for an answer that must not replace the topic's retained message (a refused CI
/// request whose refusal would stand in for the verdict of the request's rightful owner, see
/// `topics.md`, "answers to CI").
pub async fn publish_unretained(
    client: &AsyncClient,
    topic: &Topic,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    client
        .publish(topic.to_string(), qos(topic.spec().qos()), false, payload)
        .await
}

/// Deletes the retained message of a retained topic (an empty retained publish); a topic
/// published without retain has nothing to delete, so nothing is sent.
pub async fn clear_retained(client: &AsyncClient, topic: &Topic) -> Result<(), ClientError> {
    if !topic.spec().retain() {
        return Ok(());
    }
    publish(client, topic, Vec::new()).await
}

/// Subscribes to every filter of `subs` in one request, each with its topic's QoS.
pub async fn subscribe_many(
    client: &AsyncClient,
    subs: &[Subscription],
) -> Result<(), ClientError> {
    let filters: Vec<SubscribeFilter> = subs
        .iter()
        .map(|s| SubscribeFilter::new(s.filter().to_string(), qos(s.qos())))
        .collect();
    client.subscribe_many(filters).await
}

/// The last will `payload` on `topic`, with the topic's QoS and retain flag.
pub fn last_will(topic: &Topic, payload: Vec<u8>) -> LastWill {
    let spec = topic.spec();
    LastWill::new(topic.to_string(), payload, qos(spec.qos()), spec.retain())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_wills_and_qos_follow_the_contract() {
        for spec in &Topic::SPECS {
            assert_eq!(
                qos(spec.qos()) as u8,
                spec.qos().level(),
                "{}",
                spec.pattern()
            );
        }
        let will = last_will(&Topic::ControllerStatus, vec![1]);
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
        assert_eq!(will.topic, "fleet/_controller/status");
    }
}
