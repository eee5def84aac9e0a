//! `fleetctl status [--watch]`: device status as fleetd verified it (`GET /api/v1/devices`).
//! Tools cannot verify agents' signed messages themselves, so fleetctl never reads the bus:
//! it shows what fleetd accepted. `--watch` polls every second and prints one line per change
//! ([`super::status_changes`]).

use super::{print_json, print_json_line};
use crate::api::{ApiClient, HttpFailure};
use crate::display;
use crate::table::Table;
use crate::{Global, Output};
use anyhow::Result;
use clap::Args;
use fleet_schema::api::DeviceView;
use fleet_schema::Refusal;
use std::time::Duration;

use super::status_changes::{line, Tracker};

/// How often `--watch` asks fleetd.
const POLL: Duration = Duration::from_secs(1);

/// Arguments of `status`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Output (table): DEVICE, ONLINE (yes/no), ENROLLMENT (accepted, pending, rejected, revoked, or -), \
GEN (observed/desired generation), APPS (name@version phase [health] ...; ...), REFUSED (the last \
message the agent refused: reason, topic, when, how many since it started; or -).
--output json: the API's device list (DeviceView objects, with `enrollment` and `refused`).

With --watch, one line per change, `HH:MM:SS  DEVICE  WHAT` (UTC), WHAT being one of: online, \
offline, enrollment STATE, APP@VERSION PHASE [HEALTH] (running V) error: E, APP removed, \
refused a message on TOPIC: REASON (N since the agent started), removed. The first poll reports \
every device as new. With --output json each change is a JSON line {\"at\", \"device\", \
\"change\": \"online\"|\"offline\"|\"enrollment\"|\"app\"|\"app-removed\"|\"refused\"|\"removed\", ...}.")]
pub struct StatusArgs {
    /// Keep polling fleetd every second and print one line per change until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// Runs `status`: a snapshot table, or with `--watch` one line per change until interrupted.
pub fn status(g: &Global, args: &StatusArgs) -> Result<()> {
    let api = ApiClient::new(g)?;
    if args.watch {
        return watch(g, &api);
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
    print!("{}", table(&devices, display::now_ms()).render());
    Ok(())
}

fn watch(g: &Global, api: &ApiClient) -> Result<()> {
    let mut tracker = Tracker::default();
    let mut first = true;
    let mut failing: Option<String> = None;
    loop {
        match api.get::<Vec<DeviceView>>("/api/v1/devices") {
            Ok(devices) => {
                if failing.take().is_some() {
                    eprintln!("fleetd answers again");
                }
                for change in tracker.update(devices, display::now_ms()) {
                    match g.output {
                        Output::Json => print_json_line(&change)?,
                        Output::Table => println!("{}", line(&change)),
                    }
                }
            }
            // A bad server, token or CA shows at once; so does losing the right to read.
            Err(e) if first => return Err(e),
            Err(e)
                if e.downcast_ref::<HttpFailure>()
                    .is_some_and(|f| matches!(f.status, 401 | 403)) =>
            {
                return Err(e)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if failing.as_deref() != Some(msg.as_str()) {
                    eprintln!("warning: {msg}; retrying every second");
                    failing = Some(msg);
                }
            }
        }
        first = false;
        std::thread::sleep(POLL);
    }
}

/// The REFUSED cell: reason, topic, when and how many, or "-".
pub fn refused(r: Option<&Refusal>, now: u64) -> String {
    match r {
        None => "-".into(),
        Some(r) => format!(
            "{} on {} ({}, {} since the agent started)",
            r.reason,
            r.topic,
            display::ago(now, r.at),
            r.count
        ),
    }
}

fn table(devices: &[DeviceView], now: u64) -> Table {
    let mut t = Table::new(&["DEVICE", "ONLINE", "ENROLLMENT", "GEN", "APPS", "REFUSED"]);
    for d in devices {
        t.row(vec![
            d.id.clone(),
            if d.online { "yes" } else { "no" }.into(),
            super::devices::enrollment(d),
            format!("{}/{}", d.observed_generation, d.desired_generation),
            display::apps(&d.apps),
            refused(d.refused.as_ref(), now),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fleet_schema::trust::tokens::EnrollmentState;
    use fleet_schema::{AppPhase, AppStatus};

    #[test]
    fn snapshot_rows() {
        let d = DeviceView {
            id: "dev-1".into(),
            online: true,
            labels: Default::default(),
            inventory: None,
            agent_version: "0.1.0".into(),
            desired_generation: 3,
            observed_generation: 2,
            apps: vec![AppStatus {
                name: "web".into(),
                version: "2.0.0".into(),
                phase: AppPhase::Installing,
                restart_count: 0,
                last_error: None,
                running_version: Some("1.0.0".into()),
                deployment_id: None,
                health: Default::default(),
                health_message: None,
                components: Vec::new(),
            }],
            last_seen: 1,
            enrollment: Some(EnrollmentState::Accepted),
            refused: Some(Refusal {
                topic: "fleet/dev-1/desired".into(),
                reason: "bad signature".into(),
                at: 1_000,
                count: 1,
            }),
        };
        let mut bare = d.clone();
        bare.id = "dev-2".into();
        bare.online = false;
        bare.apps.clear();
        bare.enrollment = None;
        bare.refused = None;
        assert_eq!(
            table(&[d, bare], 121_000).render(),
            "DEVICE  ONLINE  ENROLLMENT  GEN  APPS                                  REFUSED\n\
             dev-1   yes     accepted    2/3  web@2.0.0 installing (running 1.0.0)  \
             bad signature on fleet/dev-1/desired (2m ago, 1 since the agent started)\n\
             dev-2   no      -           2/3  -                                     -\n"
        );
    }

    #[test]
    fn watch_is_a_flag() {
        let cli = crate::Cli::try_parse_from(["fleetctl", "status", "--watch", "--output", "json"])
            .expect("parses");
        assert_eq!(cli.global.output, Output::Json);
        match cli.command {
            crate::Command::Status(a) => assert!(a.watch),
            other => panic!("parsed as {other:?}"),
        }
    }
}
