//! `fleetctl logs DEVICE [--app A] [--lines N] [-f]`: an app's recent output and, with `-f`,
//! new lines as they come. It subscribes to `fleet/<device>/logs`, then asks the agent for its
//! recent history with an `AgentRequest::LogHistory` on `fleet/<device>/req`; the answer is a
//! `LogBatch` on the logs topic like any other. Clean session, random client id: nothing is
//! left on the broker.

use crate::display;
use crate::mqtt;
use crate::{Global, LogsArgs, Output};
use anyhow::{bail, Context, Result};
use fleet_schema::{
    decode, encode, AgentRequest, DeviceId, LogBatch, LogEntry, Topic, DEFAULT_MAX_PAYLOAD,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Without -f: how long to wait for the agent's history answer.
const HISTORY_WAIT: Duration = Duration::from_secs(5);
/// Without -f: stop once the history started arriving and nothing came for this long.
const QUIET: Duration = Duration::from_millis(500);

/// Runs `logs`.
pub fn logs(g: &Global, args: &LogsArgs) -> Result<()> {
    let device = DeviceId::parse(&args.device).context("invalid device id")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(g, args, device))
}

fn client_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("fleetctl-logs-{:016x}", h.finish())
}

/// One printed line (table output).
pub fn line(e: &LogEntry) -> String {
    format!(
        "{} {:<5} {}: {}",
        display::clock(e.timestamp),
        e.level.as_str(),
        e.app,
        e.message
    )
}

fn print_batch(output: Output, batch: &LogBatch, app: Option<&str>) -> Result<()> {
    for e in batch
        .entries
        .iter()
        .filter(|e| app.is_none_or(|a| e.app == a))
    {
        match output {
            Output::Json => println!("{}", serde_json::to_string(e)?),
            Output::Table => println!("{}", line(e)),
        }
    }
    if batch.dropped > 0 {
        eprintln!(
            "({} lines dropped by the agent's rate limit)",
            batch.dropped
        );
    }
    Ok(())
}

async fn run(g: &Global, args: &LogsArgs, device: DeviceId) -> Result<()> {
    let (host, port) = mqtt::parse_url(&g.mqtt_url)?;
    let mut opts = MqttOptions::new(client_id(), host, port);
    opts.set_clean_session(true);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let logs_topic = Topic::Logs(device.clone()).to_string();
    let req_topic = Topic::Req(device).to_string();
    let request = encode(&AgentRequest::LogHistory {
        app: args.app.clone(),
        lines: args.lines,
    })
    .context("encoding the history request")?;
    let mut connected = false;
    let mut got_any = false;
    let started = tokio::time::Instant::now();
    loop {
        let event = if args.follow {
            events.poll().await
        } else {
            let budget = if got_any {
                QUIET
            } else {
                HISTORY_WAIT.saturating_sub(started.elapsed())
            };
            match tokio::time::timeout(budget, events.poll()).await {
                Ok(event) => event,
                Err(_) if got_any => return Ok(()),
                Err(_) if connected => {
                    bail!(
                        "no answer from device {} (is its agent online?)",
                        args.device
                    )
                }
                Err(_) => bail!("no answer from the MQTT broker at {}", g.mqtt_url),
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                client
                    .try_subscribe(logs_topic.clone(), QoS::AtMostOnce)
                    .context("subscribing to the device's logs")?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .try_publish(req_topic.clone(), QoS::AtLeastOnce, false, request.clone())
                    .context("asking for the log history")?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == logs_topic => {
                match decode::<LogBatch>(&p.payload, DEFAULT_MAX_PAYLOAD) {
                    Ok(batch) => {
                        got_any = true;
                        print_batch(g.output, &batch, args.app.as_deref())?;
                    }
                    Err(e) => eprintln!("warning: unreadable log batch: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) if !connected => {
                bail!("cannot connect to the MQTT broker at {}: {e}", g.mqtt_url)
            }
            Err(e) => {
                eprintln!("warning: lost the MQTT connection ({e}); reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::LogLevel;

    #[test]
    fn lines_show_level_app_and_message() {
        let e = LogEntry {
            timestamp: 0,
            app: "web".into(),
            stream: "output".into(),
            level: LogLevel::Warn,
            message: "slow request".into(),
        };
        let l = line(&e);
        assert!(l.ends_with("warn  web: slow request"), "{l}");
    }
}
