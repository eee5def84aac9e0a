//! `fleetctl devices`: the devices fleetd knows, from its HTTP API.

use super::print_json;
use crate::api::ApiClient;
use crate::display;
use crate::table::Table;
use crate::{Global, Output};
use anyhow::Result;
use fleet_schema::api::DeviceView;

/// Prints every known device: id, presence, labels, apps and when it was last heard from.
pub fn devices(g: &Global) -> Result<()> {
    let api = ApiClient::new(&g.server);
    let mut devices: Vec<DeviceView> = api.get("/api/v1/devices")?;
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    if g.output == Output::Json {
        return print_json(&devices);
    }
    if devices.is_empty() {
        println!("no devices yet (a device appears once its agent publishes a status)");
        return Ok(());
    }
    print!("{}", table(&devices, display::now_ms()).render());
    Ok(())
}

fn table(devices: &[DeviceView], now: u64) -> Table {
    let mut t = Table::new(&["ID", "ONLINE", "LABELS", "APPS", "LAST SEEN"]);
    for d in devices {
        t.row(vec![
            d.id.clone(),
            if d.online { "yes" } else { "no" }.into(),
            display::labels(&d.labels),
            display::apps(&d.apps),
            display::ago(now, d.last_seen),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rows() {
        let d = DeviceView {
            id: "rpi-1".into(),
            online: true,
            labels: [("site".to_string(), "a".to_string())].into(),
            inventory: None,
            agent_version: "0.1.0".into(),
            desired_generation: 2,
            observed_generation: 2,
            apps: Vec::new(),
            last_seen: 5_000,
        };
        let text = table(&[d], 7_000).render();
        assert!(
            text.contains("rpi-1  yes     site=a  -     2s ago"),
            "{text}"
        );
    }
}
