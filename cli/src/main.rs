//! `fleetctl`: the operator and CI command line for FleetD. It talks only to fleetd's HTTP API
//! (authenticated with an API token, over TLS for `https://` servers): artifacts, deployments,
//! devices and their verified status and logs, tokens, enrollment, broker files; and it makes
//! development certificates locally.

mod api;
mod args;
mod auth;
mod commands;
mod dev_certs;
mod display;
mod multipart;
mod table;
mod tls;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// fleetctl: manage artifacts, deployments, devices and credentials of a FleetD fleet.
///
/// Every command talks to fleetd's HTTP API at --server (FLEET_SERVER) with the API token of
/// --token (FLEET_TOKEN); an https:// server is verified against --ca (FLEET_CA) or the
/// system's CA store. Human output is tables; --output json prints JSON for scripts (one
/// document, or JSON lines for streams).
#[derive(Parser, Debug)]
#[command(name = "fleetctl", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command shares.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Base URL of fleetd's HTTP API, http:// or https:// (env FLEET_SERVER).
    #[arg(
        long,
        env = "FLEET_SERVER",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub server: String,
    /// API token (fleet_<id>_<secret>, from `fleetctl token create`), sent as `Authorization:
    /// Bearer`. Prefer the environment variable FLEET_TOKEN: a flag is visible to other users in
    /// the process list.
    #[arg(
        long,
        env = "FLEET_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<auth::ApiToken>,
    /// PEM CA certificate(s) an https:// server's certificate must chain to (env FLEET_CA;
    /// default: the system's CA store), e.g. ca.pem from `fleetctl certs dev`.
    #[arg(long, env = "FLEET_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
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
    /// Upload and inspect artifacts: push, list, versions, show, sign, verify.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Register an application version from its manifest (`apply -f app.yaml`).
    Apply {
        /// The manifest file (YAML, or JSON with a .json extension).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Deploy an application version to devices (`deploy --app A --version V --devices ...`),
    /// or list, show, watch and control deployments (`deploy show ID`, `deploy rollback ID`).
    Deploy(DeployArgs),
    /// Old spelling of `deploy list` and `deploy show ID`, kept for scripts.
    #[command(subcommand, hide = true)]
    Deployment(DeploymentCmd),
    /// List and show devices, and decide on their enrollment: list, show, accept, reject,
    /// revoke, reset.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Old spelling of `device list`, kept for scripts.
    #[command(hide = true)]
    Devices(commands::devices::DevicesArgs),
    /// Create, list, show and delete named device groups (targets for `deploy --group`).
    #[command(subcommand)]
    Group(commands::groups::GroupCmd),
    /// Show the status of every device as verified by fleetd (one line per change with
    /// --watch).
    Status(commands::status::StatusArgs),
    /// Show a device's recent app output (and follow new lines with -f).
    Logs(commands::logs::LogsArgs),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(commands::tokens::TokenCmd),
    /// Show who fleetd takes the token for: its id, name, scope and application limit
    /// (`--output json` for scripts; a CI job can check its token with it).
    Whoami,
    /// Create, list and revoke enrollment tokens for devices (admin).
    #[command(subcommand)]
    Enroll(commands::enroll::EnrollCmd),
    /// Configuration for an external MQTT broker (admin).
    #[command(subcommand)]
    Broker(commands::broker::BrokerCmd),
    /// Make TLS certificates (locally; no server involved).
    #[command(subcommand)]
    Certs(commands::certs::CertsCmd),
    /// Generate an ed25519 key pair for signing artifacts (locally; no server involved).
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
    /// A platform the artifact runs on, e.g. linux/arm64 (repeatable for multi-platform
    /// artifacts such as scripts and archives).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// Sign the manifest with this private key (from `fleetctl keygen`).
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = args::label)]
    pub labels: Vec<(String, String)>,
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
    /// Wait until the deployment finishes, showing progress (JSON lines with --output json).
    /// Exit code: 0 succeeded, 3 failed, 4 rolled back, 5 aborted, 6 timed out, 7 superseded,
    /// 1 any other error.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit code 6; the deployment goes on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Subcommands of `deploy`: every deployment command but creating one.
#[derive(Subcommand, Debug)]
pub enum DeployAction {
    /// List deployments, newest first (ID, APP, VERSION, STATE, SUCCEEDED, CREATED).
    List,
    /// Show one deployment: its state, each rollout step, the trigger that fired, and every
    /// device's progress.
    #[command(alias = "status")]
    Show {
        /// Deployment id.
        id: String,
    },
    /// Follow a rollout with live progress bars per step until it ends or waits for an
    /// operator.
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

/// The old `deployment` command: the same as `deploy show` and `deploy list`.
#[derive(Subcommand, Debug)]
enum DeploymentCmd {
    /// Same as `deploy show ID`.
    Show {
        /// Deployment id.
        id: String,
    },
    /// Same as `deploy list`.
    List,
}

/// Subcommands of `device`.
#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// List the devices fleetd knows, or with --pending the enrollment requests waiting for an
    /// operator.
    List(commands::devices::DevicesArgs),
    /// Show one device: presence, enrollment, labels, generations, apps, last refusal.
    Show {
        /// The device id.
        #[arg(value_parser = crate::args::device_id)]
        id: String,
    },
    #[command(flatten)]
    Decision(commands::device_actions::Decision),
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
            DeployAction::List => commands::deploy::list(g),
            DeployAction::Show { id } => commands::deploy::show(g, &id),
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
        Command::Group(cmd) => commands::groups::run(g, &cmd),
        Command::Device(DeviceCmd::List(args)) | Command::Devices(args) => {
            commands::devices::list(g, &args)
        }
        Command::Device(DeviceCmd::Show { id }) => commands::devices::show(g, &id),
        Command::Device(DeviceCmd::Decision(cmd)) => commands::device_actions::run(g, &cmd),
        Command::Whoami => commands::tokens::whoami(g),
        Command::Status(args) => commands::status::status(g, &args),
        Command::Logs(args) => commands::logs::logs(g, &args),
        Command::Token(cmd) => commands::tokens::run(g, &cmd),
        Command::Enroll(cmd) => commands::enroll::run(g, &cmd),
        Command::Broker(cmd) => commands::broker::run(g, &cmd),
        Command::Certs(cmd) => commands::certs::run(g, &cmd),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        // `deploy --wait` exits with its outcome's own code; every other error with 1.
        let code = e
            .downcast_ref::<commands::deploy_wait::Unsuccessful>()
            .map_or(1, |u| u.outcome.code());
        std::process::exit(code);
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

    const TOKEN: &str =
        "fleet_0123abcd_cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn global_options_parse_and_hide_the_token() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "devices",
            "--server",
            "https://fleet.example:7878",
            "--token",
            TOKEN,
            "--ca",
            "ca.pem",
        ])
        .expect("parses");
        assert_eq!(cli.global.server, "https://fleet.example:7878");
        assert_eq!(cli.global.ca, Some(PathBuf::from("ca.pem")));
        let token = cli.global.token.as_ref().expect("a token");
        assert_eq!(token.validated().expect("valid").id(), "0123abcd");
        assert!(!format!("{cli:?}").contains("cccccccc"), "{cli:?}");
        let err = Cli::try_parse_from(["fleetctl", "--mqtt-url", "mqtt://x", "status"])
            .expect_err("no MQTT any more");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
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

    /// Every command path `fleetctl` shows in its help, e.g. "deploy show".
    fn visible_paths(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let shown = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help");
        for sub in shown {
            let path = format!("{prefix}{}", sub.get_name());
            out.push(path.clone());
            visible_paths(sub, &format!("{path} "), out);
        }
    }

    #[test]
    fn every_help_text_names_the_environment_variables_it_reads() {
        let mut root = Cli::command();
        root.build();
        let mut paths = vec![String::new()];
        visible_paths(&root, "", &mut paths);
        for path in paths {
            let mut cmd = root.clone();
            for word in path.split_whitespace() {
                cmd = cmd
                    .find_subcommand(word)
                    .unwrap_or_else(|| panic!("{path}: no {word}"))
                    .clone();
            }
            let help = cmd.render_long_help().to_string();
            for var in ["FLEET_SERVER", "FLEET_TOKEN", "FLEET_CA"] {
                assert!(
                    help.contains(&format!("[env: {var}")),
                    "`fleetctl {path} --help` names {var}:\n{help}"
                );
            }
        }
    }

    #[test]
    fn the_readme_shows_the_command_tree() {
        let readme = include_str!("../../README.md");
        let tree: Vec<&str> = readme
            .split("```text\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README.md has the command tree in the first text block")
            .lines()
            .collect();
        let mut paths = Vec::new();
        visible_paths(&Cli::command(), "", &mut paths);
        for path in paths {
            let mut words = path.split(' ');
            let family = words.next().expect("a path has a first word");
            let rest: Vec<&str> = words.collect();
            let documented = tree.iter().any(|line| {
                let mut cols = line.split_whitespace();
                cols.next() == Some("fleetctl")
                    && cols.next() == Some(family)
                    && rest.iter().all(|w| {
                        line.split(|c: char| c.is_whitespace() || c == '|')
                            .any(|t| t == *w)
                    })
            });
            assert!(documented, "README's command tree lists `fleetctl {path}`");
        }
    }

    #[test]
    fn old_spellings_still_parse_as_the_new_commands() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").command;
        for old in [
            &["fleetctl", "deploy", "status", "d-1"][..],
            &["fleetctl", "deploy", "show", "d-1"][..],
        ] {
            match parse(old) {
                Command::Deploy(DeployArgs {
                    action: Some(DeployAction::Show { id }),
                    ..
                }) => assert_eq!(id, "d-1"),
                other => panic!("{old:?} parsed as {other:?}"),
            }
        }
        assert!(matches!(
            parse(&["fleetctl", "deployment", "show", "d-1"]),
            Command::Deployment(DeploymentCmd::Show { .. })
        ));
        assert!(matches!(
            parse(&["fleetctl", "deployment", "list"]),
            Command::Deployment(DeploymentCmd::List)
        ));
        assert!(matches!(
            parse(&["fleetctl", "deploy", "list"]),
            Command::Deploy(DeployArgs {
                action: Some(DeployAction::List),
                ..
            })
        ));
        assert!(matches!(
            parse(&["fleetctl", "device", "show", "rpi-1"]),
            Command::Device(DeviceCmd::Show { .. })
        ));
        let root = Cli::command();
        for hidden in ["deployment", "devices"] {
            let cmd = root
                .find_subcommand(hidden)
                .expect("the old spelling exists");
            assert!(cmd.is_hide_set(), "{hidden} is not listed in the help");
        }
        let deploy = root.find_subcommand("deploy").expect("deploy");
        let show = deploy.find_subcommand("show").expect("deploy show");
        assert_eq!(show.get_all_aliases().collect::<Vec<_>>(), ["status"]);
        assert_eq!(
            show.get_visible_aliases().count(),
            0,
            "status is a hidden alias"
        );
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
