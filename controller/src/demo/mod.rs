//! `fleetd demo`: FleetD's main job on embedded defaults, in one command. It makes a development
//! CA and certificates, starts a real controller (this same binary, with its embedded broker and
//! local store, HTTPS and MQTT over TLS, authentication on) and three real agents as separate
//! processes, each with its own data directory, that enroll with a token the demo's operator
//! creates; then it drives them exactly as an operator or CI job would, with `fleetctl`: upload
//! the sample HTTP service as v1, deploy it, upload v2, deploy it, until every device runs v2.
//! Ctrl-C stops everything and leaves no process behind.

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
    let certs = dir.join("certs");
    step("making a development CA and TLS certificates");
    let mut ctl = Ctl {
        bin: bins.fleetctl.clone(),
        server: String::new(),
        token: String::new(),
        ca: certs.join("ca.pem"),
    };
    ctl.run(&["certs", "dev", "--out", &certs.to_string_lossy()])?;
    ctl.token = new_admin_token(&dir.join("admin.token"))?;
    step(&format!(
        "starting fleetd: HTTPS {http}, embedded MQTT broker over TLS {mqtt}, data in {}",
        dir.join("controller").display()
    ));
    let (server, mqtt_url) = procs.start_fleetd(bins, &http, &mqtt, &certs, &ctl.token)?;
    ctl.server = server.clone();
    println!("  logs: {}", dir.join("fleetd.log").display());
    println!(
        "  try:  FLEET_SERVER={server} FLEET_CA={} FLEET_TOKEN=$(cat {}) fleetctl device list",
        ctl.ca.display(),
        dir.join("admin.token").display()
    );

    step("the operator creates an enrollment token for the demo devices");
    let created = ctl.capture(&[
        "--output",
        "json",
        "enroll",
        "create",
        "--name",
        "demo",
        "--label",
        "demo=true",
        "--uses",
        &args.devices.to_string(),
    ])?;
    let enroll_token = serde_json::from_str::<serde_json::Value>(&created)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .context("fleetctl enroll create printed no token")?;
    let token_file = dir.join("enroll.token");
    std::fs::write(&token_file, format!("{enroll_token}\n"))
        .with_context(|| format!("writing {}", token_file.display()))?;
    println!(
        "  written to {} (agents read it with --enroll-token-file)",
        token_file.display()
    );

    step(&format!(
        "starting {} agents; they enroll, then connect",
        args.devices
    ));
    let devices: Vec<String> = (1..=args.devices).map(|i| format!("demo-{i}")).collect();
    let join = procs::Join {
        server: &server,
        mqtt_url: &mqtt_url,
        ca: &ctl.ca,
        token_file: &token_file,
    };
    for d in &devices {
        procs.start_agent(bins, d, &join)?;
        println!("  {d}: data in {}", dir.join("agents").join(d).display());
    }
    wait_until(stop, Duration::from_secs(60), "agents to register", || {
        let out = ctl
            .capture(&["--output", "json", "devices"])?
            .replace(' ', "");
        let online = devices
            .iter()
            .filter(|d| out.contains(&format!("\"id\":\"{d}\"")))
            .count();
        Ok(online == devices.len())
    })?;
    ctl.run(&["devices"])?;

    let v1 = dir.join("artifacts").join(format!("{APP}-1.0.0"));
    let v2 = dir.join("artifacts").join(format!("{APP}-2.0.0"));
    make_artifacts(&bins.sample_app, &v1, &v2)?;
    for (version, file) in [("1.0.0", &v1), ("2.0.0", &v2)] {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        step(&format!("CI uploads {APP} {version}"));
        ctl.run(&[
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
        ])?;
        step(&format!("deploying {APP} {version} to every demo device"));
        ctl.run(&[
            "deploy",
            "--app",
            APP,
            "--version",
            version,
            "--selector",
            "demo=true",
            "--wait",
        ])?;
        ctl.run(&["devices"])?;
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

/// How the demo calls `fleetctl`: the server, the admin token and the CA to trust.
struct Ctl {
    bin: PathBuf,
    server: String,
    token: String,
    ca: PathBuf,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("FLEET_SERVER", &self.server)
            .env("FLEET_TOKEN", &self.token)
            .env("FLEET_CA", &self.ca)
            .args(args);
        cmd
    }

    /// Runs fleetctl, printing the command line (never the token) and its output.
    fn run(&self, args: &[&str]) -> Result<()> {
        println!("$ fleetctl {}", args.join(" "));
        let status = self.command(args).status().context("running fleetctl")?;
        if !status.success() {
            bail!("fleetctl {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Runs fleetctl quietly and returns its standard output.
    fn capture(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .stderr(Stdio::null())
            .output()
            .context("running fleetctl")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A fresh admin token for the demo's controller, kept in `path` (0600) for the operator.
fn new_admin_token(path: &Path) -> Result<String> {
    let hex = |n: usize| -> Result<String> {
        let s = fleet_schema::trust::keys::new_secret_hex().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(s[..n].to_string())
    };
    let token = fleet_schema::trust::tokens::api_token(&hex(8)?, &hex(64)?);
    crate::trust::controller_key::write_private(path, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
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
