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
    /// Deploy an application version to devices, or control a rollout (`deploy watch ID`, ...).
    Deploy(DeployArgs),
    /// Register an application version from its manifest (`apply -f app.yaml`).
    Apply {
        /// The manifest file (YAML, or JSON with a .json extension).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Inspect deployments.
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// List the devices fleetd knows.
    Devices,
    /// Show device status from the bus (live with --watch).
    Status(StatusArgs),
    /// Show a device's recent app output (and follow new lines with -f).
    Logs(LogsArgs),
    /// Generate an ed25519 key pair for signing artifacts.
    Keygen(commands::signing::KeygenArgs),
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
    /// Show one version's metadata (checksums, signatures, requirements).
    Show {
        /// Artifact name.
        name: String,
        /// Version.
        version: String,
    },
    /// Sign a stored version's manifest with a private key from `fleetctl keygen`.
    Sign(commands::signing::SignArgs),
    /// Verify a stored version's signatures against trusted public keys.
    Verify(commands::signing::VerifyArgs),
}

/// Arguments of `artifact push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The file to upload (not with `--image`).
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub file: Option<PathBuf>,
    /// For `--type oci-image`: a registry reference the devices pull (`docker pull` /
    /// `podman pull`) instead of an image tarball, e.g. registry.example:5000/app@sha256:...
    #[arg(long)]
    pub image: Option<String>,
    /// With a tagged `--image`: the manifest digest (sha256:...) the pulled image must have.
    #[arg(long, requires = "image")]
    pub image_digest: Option<String>,
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
    /// Sign the manifest with this private key (from `fleetctl keygen`).
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Requirements as JSON, e.g. '{"min_memory":1048576,"capabilities":["gpu"]}', or @FILE.
    #[arg(long)]
    pub requirements: Option<String>,
}

/// Arguments of `deploy`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["devices", "selector", "group"])))]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    /// Control an existing deployment instead of creating one.
    #[command(subcommand)]
    pub action: Option<DeployAction>,
    /// Application name (registered with `apply`, or an artifact name).
    #[arg(long, required = true)]
    pub app: Option<String>,
    /// Version to deploy.
    #[arg(long, required = true)]
    pub version: Option<String>,
    /// Strategy: all-at-once (default), canary, rolling, blue-green.
    #[arg(long)]
    pub strategy: Option<String>,
    /// A strategy parameter KEY=VALUE (repeatable), e.g. initial_percentage=10.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// A rollback trigger replacing that type's defaults (repeatable), e.g.
    /// `high-error-rate:0.05:2m:gradual`, `crash-loop:3:5m`, `health-check-failure:0.5:1m`.
    #[arg(long = "trigger", value_name = "TYPE:THRESHOLD[:DURATION[:ACTION]]")]
    pub triggers: Vec<String>,
    /// A named device group.
    #[arg(long)]
    pub group: Option<String>,
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

/// Lifecycle subcommands of `deploy`.
#[derive(Subcommand, Debug)]
pub enum DeployAction {
    /// Show a rollout's steps and the trigger that fired.
    Status {
        /// Deployment id.
        id: String,
    },
    /// Follow a rollout with live progress bars per step.
    Watch {
        /// Deployment id.
        id: String,
    },
    /// Stop touching new devices.
    Pause {
        /// Deployment id.
        id: String,
    },
    /// Continue a paused rollout.
    Resume {
        /// Deployment id.
        id: String,
    },
    /// Stop for good, leaving devices where they are.
    Abort {
        /// Deployment id.
        id: String,
    },
    /// Send every touched device back to its previous version.
    Rollback {
        /// Deployment id.
        id: String,
        /// Reverse batches instead of all at once.
        #[arg(long)]
        gradual: bool,
    },
    /// Skip the wait before the next step.
    Promote {
        /// Deployment id.
        id: String,
    },
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

/// Arguments of `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The device.
    pub device: String,
    /// Only this app's lines.
    #[arg(long)]
    pub app: Option<String>,
    /// How many recent lines to ask the agent for.
    #[arg(long, default_value_t = 100)]
    pub lines: u32,
    /// Keep printing new lines until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Artifact(ArtifactCmd::Push(args)) => commands::artifact::push(g, &args),
        Command::Artifact(ArtifactCmd::List) => commands::artifact::list(g),
        Command::Artifact(ArtifactCmd::Versions { name }) => commands::artifact::versions(g, &name),
        Command::Artifact(ArtifactCmd::Show { name, version }) => {
            commands::artifact::show(g, &name, &version)
        }
        Command::Artifact(ArtifactCmd::Sign(args)) => commands::signing::sign(g, &args),
        Command::Artifact(ArtifactCmd::Verify(args)) => commands::signing::verify(g, &args),
        Command::Keygen(args) => commands::signing::keygen(g, &args),
        Command::Deploy(DeployArgs {
            action: Some(action),
            ..
        }) => match action {
            DeployAction::Status { id } => commands::watch::status(g, &id),
            DeployAction::Watch { id } => commands::watch::watch(g, &id),
            DeployAction::Pause { id } => commands::watch::action(g, &id, "pause", false),
            DeployAction::Resume { id } => commands::watch::action(g, &id, "resume", false),
            DeployAction::Abort { id } => commands::watch::action(g, &id, "abort", false),
            DeployAction::Rollback { id, gradual } => {
                commands::watch::action(g, &id, "rollback", gradual)
            }
            DeployAction::Promote { id } => commands::watch::action(g, &id, "promote", false),
        },
        Command::Deploy(args) => commands::deploy::deploy(g, &args),
        Command::Apply { file } => commands::apply::apply(g, &file),
        Command::Deployment(DeploymentCmd::Show { id }) => commands::deploy::show(g, &id),
        Command::Deployment(DeploymentCmd::List) => commands::deploy::list(g),
        Command::Devices => commands::devices::devices(g),
        Command::Status(args) => commands::status::status(g, &args),
        Command::Logs(args) => commands::logs::logs(g, &args),
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

    #[test]
    fn deploy_subcommands_need_no_target() {
        let ok = Cli::try_parse_from(["fleetctl", "deploy", "rollback", "d-1", "--gradual"])
            .expect("rollback subcommand");
        match ok.command {
            Command::Deploy(DeployArgs {
                action: Some(DeployAction::Rollback { id, gradual }),
                ..
            }) => assert!(id == "d-1" && gradual),
            other => panic!("parsed as {other:?}"),
        }
        let err = Cli::try_parse_from(["fleetctl", "deploy", "watch"]).expect_err("needs an id");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(Cli::try_parse_from(["fleetctl", "apply", "-f", "app.yaml"]).is_ok());
    }
}
