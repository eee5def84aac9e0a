//! `fleetctl status [--watch]`: device status straight from the bus. It subscribes to
//! `fleet/+/status` with a clean session and a random client id, so it never disturbs agents or
//! the controller and leaves nothing behind on the broker.

use crate::display;
use crate::mqtt;
use crate::table::Table;
use crate::{Global, Output, StatusArgs};
use anyhow::{bail, Context, Result};
use fleet_schema::topic::DeviceTopicKind;
use fleet_schema::{decode, DeviceStatus, Topic, DEFAULT_MAX_PAYLOAD};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Without --watch: stop once no retained status arrived for this long.
const QUIET: Duration = Duration::from_millis(1000);
/// Without --watch: never wait longer than this for the snapshot.
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(10);

/// Runs `status`: a snapshot table, or with `--watch` one line per change until interrupted.
pub fn status(g: &Global, args: &StatusArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(g, args.watch))
}

fn client_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("fleetctl-{:016x}", h.finish())
}

/// What a decoded message means for the output.
enum Seen {
    /// A status that differs from the last one seen for its device.
    Changed(Box<DeviceStatus>),
    /// Same as before (apart from the report time), or not a status topic.
    Nothing,
}

/// Remembers the last status per device so only changes are printed.
#[derive(Default)]
struct Tracker {
    last: BTreeMap<String, DeviceStatus>,
}

impl Tracker {
    /// Folds one message; `Err` carries the warning for an undecodable payload.
    fn observe(&mut self, topic: &str, payload: &[u8]) -> Result<Seen, String> {
        let Ok(Topic::Status(device)) = Topic::parse(topic) else {
            return Ok(Seen::Nothing);
        };
        if payload.is_empty() {
            // A retained status was deleted; nothing to show.
            return Ok(Seen::Nothing);
        }
        let status: DeviceStatus = decode(payload, DEFAULT_MAX_PAYLOAD)
            .map_err(|e| format!("undecodable status on {topic}: {e}"))?;
        if status.device_id != device.as_str() {
            return Err(format!(
                "status on {topic} names device {:?}; ignored",
                status.device_id
            ));
        }
        let mut key = status.clone();
        key.reported_at = 0;
        let changed = self.last.get(device.as_str()) != Some(&key);
        self.last.insert(device.as_str().to_string(), key);
        Ok(if changed {
            Seen::Changed(Box::new(status))
        } else {
            Seen::Nothing
        })
    }
}

/// One human line for a status: time, device, presence, generation, apps.
fn line(s: &DeviceStatus, received_ms: u64) -> String {
    let at = if s.reported_at > 0 {
        s.reported_at
    } else {
        received_ms
    };
    if !s.online && s.apps.is_empty() && s.inventory.is_none() {
        return format!("{}  {}  offline", display::clock(at), s.device_id);
    }
    format!(
        "{}  {}  {}  gen {}  {}",
        display::clock(at),
        s.device_id,
        if s.online { "online" } else { "offline" },
        s.observed_generation,
        display::apps(&s.apps)
    )
}

async fn run(g: &Global, watch: bool) -> Result<()> {
    let (host, port) = mqtt::parse_url(&g.mqtt_url)?;
    let mut opts = MqttOptions::new(client_id(), host, port);
    opts.set_clean_session(true);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let filter = DeviceTopicKind::Status.all_devices_filter();
    let mut tracker = Tracker::default();
    let mut connected = false;
    let started = tokio::time::Instant::now();
    loop {
        let event = if watch {
            events.poll().await
        } else {
            let budget = SNAPSHOT_LIMIT.saturating_sub(started.elapsed()).min(QUIET);
            match tokio::time::timeout(budget, events.poll()).await {
                Ok(event) => event,
                Err(_) if connected => break,
                Err(_) => bail!(
                    "no answer from the MQTT broker at {} (set --mqtt-url or FLEET_MQTT_URL)",
                    g.mqtt_url
                ),
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                client
                    .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    .context("subscribing to device status")?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                match tracker.observe(&p.topic, &p.payload) {
                    Ok(Seen::Changed(s)) if watch => print_change(g.output, &s)?,
                    Ok(_) => {}
                    Err(warning) => eprintln!("warning: {warning}"),
                }
            }
            Ok(_) => {}
            Err(e) if !connected => bail!(
                "cannot connect to the MQTT broker at {}: {e} (set --mqtt-url or FLEET_MQTT_URL)",
                g.mqtt_url
            ),
            Err(e) => {
                eprintln!(
                    "warning: lost the MQTT connection to {} ({e}); reconnecting",
                    g.mqtt_url
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    print_snapshot(g.output, &tracker)
}

fn print_change(output: Output, s: &DeviceStatus) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(s)?),
        Output::Table => println!("{}", line(s, display::now_ms())),
    }
    Ok(())
}

fn print_snapshot(output: Output, tracker: &Tracker) -> Result<()> {
    let statuses: Vec<&DeviceStatus> = tracker.last.values().collect();
    if output == Output::Json {
        return super::print_json(&statuses);
    }
    if statuses.is_empty() {
        println!("no device status on the bus");
        return Ok(());
    }
    let mut t = Table::new(&["DEVICE", "ONLINE", "GEN", "APPS"]);
    for s in statuses {
        t.row(vec![
            s.device_id.clone(),
            if s.online { "yes" } else { "no" }.into(),
            s.observed_generation.to_string(),
            display::apps(&s.apps),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{encode, AppPhase, AppStatus};

    fn status(online: bool, version: &str, at: u64) -> DeviceStatus {
        DeviceStatus {
            device_id: "dev-1".into(),
            online,
            agent_version: "0.1.0".into(),
            inventory: None,
            observed_generation: 3,
            apps: vec![AppStatus {
                name: "web".into(),
                version: version.into(),
                phase: AppPhase::Running,
                restart_count: 0,
                last_error: None,
                running_version: None,
                deployment_id: None,
                health: Default::default(),
                health_message: None,
            }],
            reported_at: at,
        }
    }

    #[test]
    fn only_changes_are_reported() {
        let mut t = Tracker::default();
        let topic = "fleet/dev-1/status";
        let first = encode(&status(true, "1.0.0", 1)).expect("encodes");
        let same_later = encode(&status(true, "1.0.0", 2)).expect("encodes");
        let newer = encode(&status(true, "2.0.0", 3)).expect("encodes");
        assert!(matches!(t.observe(topic, &first), Ok(Seen::Changed(_))));
        assert!(matches!(t.observe(topic, &same_later), Ok(Seen::Nothing)));
        assert!(matches!(t.observe(topic, &newer), Ok(Seen::Changed(_))));
        assert!(matches!(
            t.observe("fleet/dev-1/metrics", &newer),
            Ok(Seen::Nothing)
        ));
    }

    #[test]
    fn garbage_is_a_warning_not_a_failure() {
        let mut t = Tracker::default();
        let warning = t
            .observe("fleet/dev-1/status", b"\xff\x00garbage")
            .err()
            .expect("garbage is refused");
        assert!(warning.contains("fleet/dev-1/status"), "{warning}");
        let foreign = encode(&status(true, "1.0.0", 1)).expect("encodes");
        assert!(t.observe("fleet/dev-2/status", &foreign).is_err());
    }

    #[test]
    fn lines_show_versions_and_offline_wills() {
        let l = line(&status(true, "2.0.0", 3_723_000), 0);
        assert_eq!(l, "01:02:03  dev-1  online  gen 3  web@2.0.0 running");
        let will = DeviceStatus {
            device_id: "dev-1".into(),
            online: false,
            agent_version: String::new(),
            inventory: None,
            observed_generation: 0,
            apps: Vec::new(),
            reported_at: 0,
        };
        assert_eq!(line(&will, 1_000), "00:00:01  dev-1  offline");
    }
}
