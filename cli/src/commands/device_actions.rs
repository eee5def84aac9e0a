//! `fleetctl device accept|reject|revoke|reset ID`: an operator's decision on a device's
//! enrollment (`POST /api/v1/devices/{id}/{action}`, admin).

use super::print_json;
use crate::api::{encode, ApiClient};
use crate::{Global, Output};
use anyhow::Result;
use clap::Subcommand;
use fleet_schema::trust::tokens::DeviceActionResult;

/// The enrollment decisions among the subcommands of `device`. Each prints one line, `device ID: ACTION done; enrollment STATE
/// (key KEY)` (or `...; no enrollment` after a reset); --output json prints the API's answer
/// (`device_id`, `action`, `enrollment`).
#[derive(Subcommand, Debug)]
pub enum Decision {
    /// Accept a pending enrollment request: the device gets its credentials and may connect.
    Accept {
        /// The device id.
        #[arg(value_parser = crate::args::device_id)]
        id: String,
    },
    /// Reject a pending enrollment request.
    Reject {
        /// The device id.
        #[arg(value_parser = crate::args::device_id)]
        id: String,
    },
    /// Revoke an enrolled device: it is disconnected and refused from then on.
    Revoke {
        /// The device id.
        #[arg(value_parser = crate::args::device_id)]
        id: String,
    },
    /// Forget the device's key, so that it (or a replacement board) can enroll again.
    Reset {
        /// The device id.
        #[arg(value_parser = crate::args::device_id)]
        id: String,
    },
}

impl Decision {
    /// The action's name in the API path, and the device.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Decision::Accept { id } => ("accept", id),
            Decision::Reject { id } => ("reject", id),
            Decision::Revoke { id } => ("revoke", id),
            Decision::Reset { id } => ("reset", id),
        }
    }
}

/// Runs an enrollment decision.
pub fn run(g: &Global, cmd: &Decision) -> Result<()> {
    let (action, id) = cmd.parts();
    let result: DeviceActionResult = ApiClient::new(g)?.post_json(
        &format!("/api/v1/devices/{}/{action}", encode(id)),
        &serde_json::json!({}),
    )?;
    match g.output {
        Output::Json => print_json(&result),
        Output::Table => {
            println!("{}", line(&result));
            Ok(())
        }
    }
}

/// The one-line summary of an action's result.
fn line(r: &DeviceActionResult) -> String {
    let after = match &r.enrollment {
        Some(e) => format!("enrollment {} (key {})", e.state.as_str(), e.key_id),
        None => "no enrollment".into(),
    };
    format!("device {}: {} done; {after}", r.device_id, r.action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fleet_schema::trust::tokens::{EnrollmentState, EnrollmentView};

    fn parse(args: &[&str]) -> Result<Decision, clap::Error> {
        let mut full = vec!["fleetctl", "device"];
        full.extend_from_slice(args);
        match crate::Cli::try_parse_from(full)?.command {
            crate::Command::Device(crate::DeviceCmd::Decision(cmd)) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn actions_parse() {
        for (word, action) in [
            ("accept", "accept"),
            ("reject", "reject"),
            ("revoke", "revoke"),
            ("reset", "reset"),
        ] {
            let cmd = parse(&[word, "rpi-1"]).expect(word);
            assert_eq!(cmd.parts(), (action, "rpi-1"));
        }
        assert!(parse(&["accept"]).is_err());
        assert!(parse(&["accept", "../x"]).is_err());
        assert!(parse(&["promote", "rpi-1"]).is_err());
    }

    #[test]
    fn results_are_one_line() {
        let mut r = DeviceActionResult {
            device_id: "rpi-1".into(),
            action: "accept".into(),
            enrollment: Some(EnrollmentView {
                device_id: "rpi-1".into(),
                state: EnrollmentState::Accepted,
                key_id: "ab12cd34".into(),
                at: 0,
                token_id: None,
                agent_version: String::new(),
                inventory: Default::default(),
            }),
        };
        assert_eq!(
            line(&r),
            "device rpi-1: accept done; enrollment accepted (key ab12cd34)"
        );
        r.action = "reset".into();
        r.enrollment = None;
        assert_eq!(line(&r), "device rpi-1: reset done; no enrollment");
    }
}
