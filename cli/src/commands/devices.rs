//! `fleetctl device list [--pending]`: the devices fleetd knows (`GET /api/v1/devices`), or the
//! enrollment requests waiting for an operator (`GET /api/v1/enrollments?state=pending`); and
//! `fleetctl device show ID`: one device (`GET /api/v1/devices/{id}`).

use super::print_json;
use crate::api::{encode, ApiClient};
use crate::display;
use crate::table::Table;
use crate::{Global, Output};
use anyhow::Result;
use clap::Args;
use fleet_schema::api::DeviceView;
use fleet_schema::trust::tokens::EnrollmentView;

/// Arguments of `device list` (and of its old spelling `devices`).
#[derive(Args, Debug)]
#[command(after_long_help = "\
Output (table): ID, ONLINE (yes/no), ENROLLMENT (accepted, pending, rejected, revoked, or - when \
fleetd has none, e.g. with --insecure), LABELS (k=v,...), APPS (name@version phase; ...), LAST SEEN.
With --pending: DEVICE, KEY ID, REQUESTED, AGENT (version), ARCH, LABELS; accept one with \
`fleetctl device accept ID`.
--output json prints the API's list as is (DeviceView or EnrollmentView objects).")]
pub struct DevicesArgs {
    /// Show the enrollment requests waiting for an operator instead (admin).
    #[arg(long)]
    pub pending: bool,
}

/// Prints every known device, or the pending enrollment requests.
pub fn list(g: &Global, args: &DevicesArgs) -> Result<()> {
    let api = ApiClient::new(g)?;
    let now = display::now_ms();
    if args.pending {
        let mut pending: Vec<EnrollmentView> = api.get("/api/v1/enrollments?state=pending")?;
        pending.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.device_id.cmp(&b.device_id)));
        if g.output == Output::Json {
            return print_json(&pending);
        }
        if pending.is_empty() {
            println!("no pending enrollment requests");
            return Ok(());
        }
        print!("{}", pending_table(&pending, now).render());
        return Ok(());
    }
    let mut devices: Vec<DeviceView> = api.get("/api/v1/devices")?;
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    if g.output == Output::Json {
        return print_json(&devices);
    }
    if devices.is_empty() {
        println!("no devices yet (a device appears once it enrolls and its agent reports)");
        return Ok(());
    }
    print!("{}", table(&devices, now).render());
    Ok(())
}

/// Prints one device: FIELD/VALUE rows, or the API's `DeviceView` with --output json.
pub fn show(g: &Global, id: &str) -> Result<()> {
    let api = ApiClient::new(g)?;
    let device: DeviceView = api.get(&format!("/api/v1/devices/{}", encode(id)))?;
    if g.output == Output::Json {
        return print_json(&device);
    }
    print!("{}", details(&device, display::now_ms()).render());
    Ok(())
}

/// The FIELD/VALUE rows of `device show`.
fn details(d: &DeviceView, now: u64) -> Table {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    let mut row = |field: &str, value: String| t.row(vec![field.to_string(), value]);
    row("id", d.id.clone());
    row("online", if d.online { "yes" } else { "no" }.into());
    row("enrollment", enrollment(d));
    row("agent", or_dash(&d.agent_version));
    row(
        "generation",
        format!(
            "{} observed of {} desired",
            d.observed_generation, d.desired_generation
        ),
    );
    row("labels", display::labels(&d.labels));
    row("apps", display::apps(&d.apps));
    row("last seen", display::ago(now, d.last_seen));
    row("refused", super::status::refused(d.refused.as_ref(), now));
    t
}

/// A device's enrollment state for a table cell ("-" when it has none).
pub fn enrollment(d: &DeviceView) -> String {
    d.enrollment.map_or("-", |e| e.as_str()).to_string()
}

fn table(devices: &[DeviceView], now: u64) -> Table {
    let mut t = Table::new(&["ID", "ONLINE", "ENROLLMENT", "LABELS", "APPS", "LAST SEEN"]);
    for d in devices {
        t.row(vec![
            d.id.clone(),
            if d.online { "yes" } else { "no" }.into(),
            enrollment(d),
            display::labels(&d.labels),
            display::apps(&d.apps),
            display::ago(now, d.last_seen),
        ]);
    }
    t
}

fn pending_table(pending: &[EnrollmentView], now: u64) -> Table {
    let mut t = Table::new(&["DEVICE", "KEY ID", "REQUESTED", "AGENT", "ARCH", "LABELS"]);
    for e in pending {
        t.row(vec![
            e.device_id.clone(),
            e.key_id.clone(),
            display::ago(now, e.at),
            or_dash(&e.agent_version),
            or_dash(&e.inventory.arch),
            display::labels(&e.inventory.labels),
        ]);
    }
    t
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fleet_schema::trust::tokens::EnrollmentState;

    /// A device view for tests.
    fn device(id: &str) -> DeviceView {
        DeviceView {
            id: id.into(),
            online: true,
            labels: [("site".to_string(), "a".to_string())].into(),
            inventory: None,
            agent_version: "0.1.0".into(),
            desired_generation: 2,
            observed_generation: 2,
            apps: Vec::new(),
            last_seen: 5_000,
            enrollment: Some(EnrollmentState::Accepted),
            refused: None,
        }
    }

    #[test]
    fn device_rows() {
        let mut other = device("rpi-2");
        other.enrollment = None;
        other.online = false;
        let text = table(&[device("rpi-1"), other], 7_000).render();
        assert_eq!(
            text,
            "ID     ONLINE  ENROLLMENT  LABELS  APPS  LAST SEEN\n\
             rpi-1  yes     accepted    site=a  -     2s ago\n\
             rpi-2  no      -           site=a  -     2s ago\n"
        );
    }

    #[test]
    fn pending_rows() {
        let e = EnrollmentView {
            device_id: "rpi-9".into(),
            state: EnrollmentState::Pending,
            key_id: "ab12cd34".into(),
            at: 1_000,
            token_id: None,
            agent_version: "0.2.0".into(),
            inventory: fleet_schema::Inventory {
                arch: "arm64".into(),
                labels: [("site".to_string(), "b".to_string())].into(),
                ..Default::default()
            },
        };
        let text = pending_table(&[e], 61_000).render();
        assert_eq!(
            text,
            "DEVICE  KEY ID    REQUESTED  AGENT  ARCH   LABELS\n\
             rpi-9   ab12cd34  1m ago     0.2.0  arm64  site=b\n"
        );
    }

    #[test]
    fn pending_is_a_flag_of_list_and_of_the_old_spelling() {
        let cli = crate::Cli::try_parse_from(["fleetctl", "device", "list", "--pending"])
            .expect("parses");
        match cli.command {
            crate::Command::Device(crate::DeviceCmd::List(a)) => assert!(a.pending),
            other => panic!("parsed as {other:?}"),
        }
        let cli = crate::Cli::try_parse_from(["fleetctl", "devices", "--pending"]).expect("parses");
        match cli.command {
            crate::Command::Devices(a) => assert!(a.pending),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn show_rows() {
        let text = details(&device("rpi-1"), 7_000).render();
        assert!(
            text.starts_with("FIELD       VALUE\nid          rpi-1\n"),
            "{text}"
        );
        assert!(
            text.contains("generation  2 observed of 2 desired\n"),
            "{text}"
        );
        assert!(text.contains("refused     -\n"), "{text}");
    }
}
