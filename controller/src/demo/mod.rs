//! `fleetd demo`: FleetD's main job on embedded defaults, in one command. It starts a real
//! controller (this same binary, with its embedded broker and local store) and three real agents
//! as separate processes, each with its own data directory, then drives them exactly as an
//! operator or CI job would, with `fleetctl`: upload the sample HTTP service as v1, deploy it,
//! upload v2, deploy it, until every device runs v2. Ctrl-C stops everything and leaves no
//! process behind.

mod procs;

use anyhow::{bail, Context, Result};
use procs::{install_stop_handler, pick_addr, Binaries, Processes};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `fleetd demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's controller, agents and logs (emptied first).
    #[arg(long, default_value = "./fleet-demo")]
    pub dir: PathBuf,
    /// How many agents to start.
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
    /// HTTP address for the demo's controller (a free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub http_listen: String,
    /// MQTT address for the demo's embedded broker (a free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_listen: String,
    /// Stop everything once all devices run v2 instead of waiting for Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
}

const APP: &str = "sample-app";

/// Runs the demo until done (or Ctrl-C), then stops every process it started.
pub fn run(args: DemoArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    install_stop_handler(&stop)?;
    let bins = Binaries::locate()?;
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("emptying demo directory {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating demo directory {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .context("resolving the demo directory")?;

    let mut procs = Processes::new(dir.clone());
    let outcome = scenario(&args, &dir, &bins, &mut procs, &stop);
    procs.shutdown();
    match outcome {
        Err(e) if stop.load(Ordering::SeqCst) => {
            println!("\nstopped ({e:#}); every demo process is gone");
            Ok(())
        }
        Err(e) => Err(e),
        Ok(()) => {
            println!("every demo process is gone");
            Ok(())
        }
    }
}

fn scenario(
    args: &DemoArgs,
    dir: &Path,
    bins: &Binaries,
    procs: &mut Processes,
    stop: &AtomicBool,
) -> Result<()> {
    let http = pick_addr(&args.http_listen)?;
    let mqtt = pick_addr(&args.mqtt_listen)?;
    step(&format!(
        "starting fleetd: HTTP {http}, embedded MQTT broker {mqtt}, data in {}",
        dir.join("controller").display()
    ));
    let (server, mqtt_url) = procs.start_fleetd(bins, &http, &mqtt)?;
    println!("  logs: {}", dir.join("fleetd.log").display());
    println!("  try:  FLEET_SERVER={server} FLEET_MQTT_URL={mqtt_url} fleetctl devices");

    step(&format!("starting {} agents", args.devices));
    let devices: Vec<String> = (1..=args.devices).map(|i| format!("demo-{i}")).collect();
    for d in &devices {
        procs.start_agent(bins, d, &mqtt_url)?;
        println!("  {d}: data in {}", dir.join("agents").join(d).display());
    }
    wait_until(stop, Duration::from_secs(60), "agents to register", || {
        let out = fleetctl_capture(bins, &server, &["--output", "json", "devices"])?;
        let online = devices
            .iter()
            .filter(|d| out.contains(&format!("\"id\":\"{d}\"")))
            .count();
        Ok(online == devices.len())
    })?;
    fleetctl(bins, &server, &["devices"])?;

    let v1 = dir.join("artifacts").join(format!("{APP}-1.0.0"));
    let v2 = dir.join("artifacts").join(format!("{APP}-2.0.0"));
    make_artifacts(&bins.sample_app, &v1, &v2)?;
    for (version, file) in [("1.0.0", &v1), ("2.0.0", &v2)] {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        step(&format!("CI uploads {APP} {version}"));
        fleetctl(
            bins,
            &server,
            &[
                "artifact",
                "push",
                &file.to_string_lossy(),
                "--name",
                APP,
                "--version",
                version,
                "--type",
                "binary",
                "--platform",
                &host_platform(),
            ],
        )?;
        step(&format!("deploying {APP} {version} to every demo device"));
        fleetctl(
            bins,
            &server,
            &[
                "deploy",
                "--app",
                APP,
                "--version",
                version,
                "--selector",
                "demo=true",
                "--wait",
            ],
        )?;
        fleetctl(bins, &server, &["devices"])?;
    }

    step(&format!("all {} devices run {APP} 2.0.0", devices.len()));
    for d in &devices {
        let logs = dir.join("agents").join(d).join("data").join("logs");
        let text = ["out", "err"]
            .map(|s| {
                std::fs::read_to_string(logs.join(format!("{APP}.{s}.log"))).unwrap_or_default()
            })
            .concat();
        if let Some(line) = text.lines().rev().find(|l| l.contains("listening on")) {
            println!("  {d}: {line}");
        }
    }
    if args.exit_when_done {
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop the controller, the agents and their apps.");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// v1 is the sample app as built; v2 is the same program with a trailer appended (ELF loaders
/// ignore trailing bytes), so the two versions have different bytes and checksums.
fn make_artifacts(sample_app: &Path, v1: &Path, v2: &Path) -> Result<()> {
    let bytes =
        std::fs::read(sample_app).with_context(|| format!("reading {}", sample_app.display()))?;
    let parent = v1.parent().context("artifact path has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::write(v1, &bytes).with_context(|| format!("writing {}", v1.display()))?;
    let mut b2 = bytes;
    b2.extend_from_slice(b"\nfleetd-demo-trailer 2.0.0\n");
    std::fs::write(v2, &b2).with_context(|| format!("writing {}", v2.display()))?;
    Ok(())
}

fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

fn step(msg: &str) {
    println!("\n==> {msg}");
}

fn fleetctl(bins: &Binaries, server: &str, args: &[&str]) -> Result<()> {
    println!("$ fleetctl {}", args.join(" "));
    let status = Command::new(&bins.fleetctl)
        .args(["--server", server])
        .args(args)
        .status()
        .context("running fleetctl")?;
    if !status.success() {
        bail!("fleetctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn fleetctl_capture(bins: &Binaries, server: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(&bins.fleetctl)
        .args(["--server", server])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .context("running fleetctl")?;
    Ok(String::from_utf8_lossy(&out.stdout).replace(' ', ""))
}

fn wait_until(
    stop: &AtomicBool,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {what}");
        }
        if check()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}
