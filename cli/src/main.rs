//! `fleetctl`: the operator and CI command line for FleetD. It talks to fleetd's HTTP API for
//! artifacts, deployments and devices, and listens on the MQTT bus for live device status.

mod api;
mod commands;
mod display;
mod mqtt;
mod multipart;
mod table;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// fleetctl: manage artifacts, deployments and devices of a FleetD fleet.
#[derive(Parser, Debug)]
#[command(name = "fleetctl", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command shares.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Base URL of fleetd's HTTP API.
    #[arg(
        long,
        env = "FLEET_SERVER",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub server: String,
    /// MQTT broker URL (for `status`).
    #[arg(
        long,
        env = "FLEET_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883",
        global = true
    )]
    pub mqtt_url: String,
    /// Output format: readable tables or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned text tables.
    Table,
    /// JSON (one document, or JSON lines for streams).
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload and inspect artifacts.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Deploy an application version to devices.
    Deploy(DeployArgs),
    /// Inspect deployments.
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// List the devices fleetd knows.
    Devices,
    /// Show device status from the bus (live with --watch).
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
enum ArtifactCmd {
    /// Upload a file as a new artifact version.
    Push(PushArgs),
    /// List artifact names.
    List,
    /// List the versions of one artifact, oldest first.
    Versions {
        /// Artifact name.
        name: String,
    },
}

/// Arguments of `artifact push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// Artifact name.
    #[arg(long)]
    pub name: String,
    /// Semantic version, e.g. 1.2.0.
    #[arg(long)]
    pub version: String,
    /// Artifact type (binary, oci-image, archive, ...).
    #[arg(long = "type", default_value = "binary")]
    pub kind: String,
    /// Platform, e.g. linux/arm64.
    #[arg(long)]
    pub platform: Option<String>,
}

/// Arguments of `deploy`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["devices", "selector"])))]
pub struct DeployArgs {
    /// Application (artifact) name.
    #[arg(long)]
    pub app: String,
    /// Version to deploy.
    #[arg(long)]
    pub version: String,
    /// Explicit device ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Label selector, k=v[,k2=v2]; every pair must match.
    #[arg(long)]
    pub selector: Option<String>,
    /// Wait until the deployment finishes, showing progress; fail if it fails.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
enum DeploymentCmd {
    /// Show one deployment with per-device progress.
    Show {
        /// Deployment id.
        id: String,
    },
    /// List deployments.
    List,
}

/// Arguments of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Keep printing one line per status change until interrupted.
    #[arg(long)]
    pub watch: bool,
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Artifact(ArtifactCmd::Push(args)) => commands::artifact::push(g, &args),
        Command::Artifact(ArtifactCmd::List) => commands::artifact::list(g),
        Command::Artifact(ArtifactCmd::Versions { name }) => commands::artifact::versions(g, &name),
        Command::Deploy(args) => commands::deploy::deploy(g, &args),
        Command::Deployment(DeploymentCmd::Show { id }) => commands::deploy::show(g, &id),
        Command::Deployment(DeploymentCmd::List) => commands::deploy::list(g),
        Command::Devices => commands::devices::devices(g),
        Command::Status(args) => commands::status::status(g, &args),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deploy_needs_a_target() {
        let err = Cli::try_parse_from(["fleetctl", "deploy", "--app", "a", "--version", "1.0.0"])
            .expect_err("no target");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let ok = Cli::try_parse_from([
            "fleetctl",
            "deploy",
            "--app",
            "a",
            "--version",
            "1.0.0",
            "--devices",
            "d1,d2",
        ])
        .expect("devices target");
        match ok.command {
            Command::Deploy(d) => assert_eq!(d.devices, ["d1", "d2"]),
            other => panic!("parsed as {other:?}"),
        }
    }
}
