//! `fleetd`: the FleetD controller. Parses flags, sets up logging and limits, and runs
//! [`fleet_controller::server::run`]; everything else lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_controller::config::ServeArgs;
use fleet_controller::{server, system};
use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;

/// fleetd: HTTP API, artifact store, deployment engine and MQTT bridge of FleetD.
#[derive(Debug, Parser)]
#[command(name = "fleetd", version, about)]
struct Cli {
    /// What to do; without a subcommand fleetd serves.
    #[command(subcommand)]
    command: Option<Command>,
    /// Serving flags.
    #[command(flatten)]
    serve: ServeArgs,
}

/// Subcommands besides serving.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the main job end to end on embedded defaults: this controller with its embedded
    /// broker, three local agents and a sample HTTP service deployed as v1 then v2.
    Demo(fleet_controller::demo::DemoArgs),
    /// Print a fresh token string (nothing is stored): a value for FLEETD_ADMIN_TOKEN, which
    /// fleetd installs as an admin token at start (automation, docker-compose).
    GenToken,
    /// Create an admin API token in the data directory (fleetd must not be running) and print
    /// it once; use it with `fleetctl --token` (or FLEET_TOKEN) to create the others.
    Init {
        /// Directory holding the database (as for serving).
        #[arg(long, default_value = "./fleet-data")]
        data_dir: std::path::PathBuf,
        /// A name for the token.
        #[arg(long, default_value = "admin")]
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The demo drives separate processes and prints its own narrative: no logging setup,
        // no runtime of ours.
        Some(Command::Demo(args)) => fleet_controller::demo::run(args),
        Some(Command::Init { data_dir, name }) => init(&data_dir, &name),
        Some(Command::GenToken) => {
            let hex = fleet_schema::trust::keys::new_secret_hex()?;
            let id = fleet_schema::trust::keys::new_secret_hex()?;
            println!("{}", fleet_schema::trust::tokens::api_token(&id[..8], &hex));
            Ok(())
        }
        None => run_server(cli.serve),
    }
}

/// `fleetd init`: a new admin token, printed on stdout (only there, only now).
fn init(data_dir: &std::path::Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let path = data_dir.join("fleetd.redb");
    let db = fleet_controller::db::Db::open(&path).with_context(|| {
        format!(
            "cannot open {} (is fleetd running on it? stop it first)",
            path.display()
        )
    })?;
    let (rec, token) = fleet_controller::trust::tokens::new_api_token(
        &fleet_schema::trust::tokens::CreateToken {
            name: name.to_string(),
            scopes: vec![fleet_schema::trust::Scope::Admin],
            apps: vec![],
            expires_in: None,
        },
        fleet_controller::clock::now_ms(),
    )?;
    db.put_token(&rec)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")?;
    drop(out);
    eprintln!(
        "admin token {} ({name}) created: it is shown only now; give it to fleetctl with --token or FLEET_TOKEN",
        rec.id
    );
    Ok(())
}

/// Sets up logging and limits, then serves.
fn run_server(mut args: ServeArgs) -> anyhow::Result<()> {
    init_logging()?;
    let nofile = match system::raise_nofile_limit() {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit raised");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            None
        }
    };
    if let (None, Some(nofile)) = (&args.mqtt_url, nofile) {
        let wanted = args.limits.max_mqtt_connections;
        let fitted = system::fit_mqtt_connections(nofile, wanted);
        if fitted < wanted {
            tracing::warn!(
                nofile,
                wanted,
                admitted = fitted,
                "--max-mqtt-connections {wanted} needs {} open files but the hard limit is {nofile}: the embedded broker admits at most {fitted} connections (raise LimitNOFILE / ulimit -Hn)",
                wanted as u64 * system::FDS_PER_MQTT_CONNECTION + system::FD_RESERVE
            );
            args.limits.max_mqtt_connections = fitted;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// Serves until SIGINT/SIGTERM, printing the ready line on stdout.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    server::run(
        args,
        |ready| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", ready.line());
            let _ = out.flush();
        },
        server::wait_for_signal(),
    )
    .await
    .context("fleetd failed")
}

/// Logs to stderr with a RUST_LOG-style filter (default info); rumqttd stays at warn unless
/// RUST_LOG names it.
fn init_logging() -> anyhow::Result<()> {
    let from_env = std::env::var("RUST_LOG").ok();
    let mut filter = match &from_env {
        Some(spec) => {
            EnvFilter::try_new(spec).with_context(|| format!("invalid RUST_LOG {spec:?}"))?
        }
        None => EnvFilter::new("info"),
    };
    if !from_env.as_deref().is_some_and(|s| s.contains("rumqttd")) {
        for directive in fleet_broker::LOG_DIRECTIVE.split(',') {
            filter = filter.add_directive(directive.parse().context("broker log directive")?);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    Ok(())
}
