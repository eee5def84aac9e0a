//! One module per `fleetctl` command family.

pub mod apply;
pub mod artifact;
pub mod broker;
pub mod certs;
pub mod deploy;
pub mod deploy_wait;
pub mod device_actions;
pub mod devices;
pub mod enroll;
pub mod groups;
pub mod logs;
pub mod signing;
pub mod status;
pub mod status_changes;
pub mod tokens;
pub mod watch;

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::IsTerminal;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON output")?;
    println!("{text}");
    Ok(())
}

/// Prints `value` as one compact JSON line on stdout (for streams: JSON lines).
pub fn print_json_line<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string(value).context("encoding JSON output")?;
    println!("{text}");
    Ok(())
}

/// Whether progress bars should be drawn: only for humans looking at a terminal.
pub fn show_progress(output: crate::Output) -> bool {
    output == crate::Output::Table && std::io::stderr().is_terminal()
}
