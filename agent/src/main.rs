//! The `fleet-agent` binary: parses settings, prepares the data directory, opens the agent
//! database and runs the agent on a current-thread runtime until SIGTERM/SIGINT.

use anyhow::Context;
use fleet_agent::config::{Cli, Config};
use fleet_agent::runtime::resource_limits::{launcher_main, LAUNCH_ARG};
use fleet_agent::{daemon, layout, logging, store::Store};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    // The limits launcher: `fleet-agent __fleet-launch ...` sets the app's limits on itself
    // and execs the app (see runtime::resource_limits); it never returns on success.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == LAUNCH_ARG) {
        let err = launcher_main(&args[1..]);
        eprintln!("{err}");
        std::process::exit(127);
    }
    let spec = std::env::var("RUST_LOG").ok();
    let (filter, bad_spec) = match logging::filter(spec.as_deref()) {
        Ok(f) => (f, None),
        Err(e) => (
            logging::filter(None).expect("the default filter is valid"),
            Some(e),
        ),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
    if let Some(e) = bad_spec {
        tracing::warn!("{e}; logging at {}", logging::DEFAULT_LEVEL);
    }
    let cli = Cli::parse();
    let mut cfg = Config::from_cli(&cli)?;
    fleet_agent::http::init(&cfg.tls).map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)
        .with_context(|| format!("cannot resolve data directory {}", cfg.data_dir.display()))?;
    let store = Store::open(&layout::database(&cfg.data_dir))
        .context("cannot open the agent database (is another agent using this data directory?)")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.spawn(fleet_agent::resident::trim_periodically());
    let result = runtime.block_on(daemon::run(cfg, store));
    // A download stuck in a blocking read must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.context("agent failed")
}
