//! `fleetd demo`: FleetD's main job on embedded defaults, in one command. It starts a real
//! controller (this same binary, with its embedded broker and local store) and three real agents
//! as separate processes, each with its own data directory, then drives them exactly as an
//! operator or CI job would, with `fleetctl`: upload the sample HTTP service as v1, deploy it,
//! upload v2, deploy it, until every device runs v2. Ctrl-C stops everything and leaves no
//! process behind.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// The sibling binaries the demo runs; they are built by `cargo build --release --bins`.
struct Binaries {
    fleetd: PathBuf,
    agent: PathBuf,
    fleetctl: PathBuf,
    sample_app: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Self> {
        let me = std::env::current_exe().context("finding the fleetd executable")?;
        let dir = me
            .parent()
            .context("fleetd executable has no parent directory")?;
        let find = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{} not found next to fleetd; build every binary first: cargo build --release --bins",
                    p.display()
                )
            }
        };
        Ok(Self {
            fleetd: me.clone(),
            agent: find("fleet-agent")?,
            fleetctl: find("fleetctl")?,
            sample_app: find("fleet-sample-app")?,
        })
    }
}

/// Children of the demo, stopped in reverse order of start.
struct Processes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Processes {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            children: Vec::new(),
        }
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File> {
        let path = self.dir.join(name);
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
    }

    /// Starts fleetd and returns the HTTP and MQTT URLs from its ready line.
    fn start_fleetd(
        &mut self,
        bins: &Binaries,
        http: &str,
        mqtt: &str,
    ) -> Result<(String, String)> {
        let log = self.log_file("fleetd.log")?;
        let mut child = Command::new(&bins.fleetd)
            .arg("--data-dir")
            .arg(self.dir.join("controller"))
            .args(["--http-listen", http, "--mqtt-listen", mqtt])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting fleetd")?;
        let stdout = child.stdout.take().context("fleetd stdout is piped")?;
        self.children.push(("fleetd".into(), child));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(urls) = ready_urls(&line) {
                    let _ = tx.send(urls);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            anyhow::anyhow!(
                "fleetd did not become ready within 30 s; see {}",
                self.dir.join("fleetd.log").display()
            )
        })
    }

    fn start_agent(&mut self, bins: &Binaries, device: &str, mqtt_url: &str) -> Result<()> {
        let base = self.dir.join("agents").join(device);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let log = self.log_file(&format!("agents/{device}/agent.log"))?;
        let child = Command::new(&bins.agent)
            .args(["--device-id", device, "--mqtt-url", mqtt_url, "--data-dir"])
            .arg(base.join("data"))
            .args(["--label", "demo=true", "--label", &format!("name={device}")])
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the agent log handle")?,
            )
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting agent {device}"))?;
        self.children.push((device.to_string(), child));
        Ok(())
    }

    /// SIGTERM to every child (agents stop their apps), then wait, then SIGKILL stragglers and
    /// anything still running from the demo directory.
    fn shutdown(&mut self) {
        step("stopping agents (they stop their apps) and fleetd");
        for (_, child) in self.children.iter().rev() {
            terminate(child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (name, child) in self.children.iter_mut().rev() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("  {name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.children.clear();
        kill_leftovers(&self.dir);
    }
}

/// The (http, mqtt) URLs of fleetd's `fleetd ready http=... mqtt=...` line.
fn ready_urls(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("fleetd ready ")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .map(str::to_string)
    };
    Some((field("http=")?, field("mqtt=")?))
}

/// Uses `want` when it can be bound, otherwise a free port on the same IP.
fn pick_addr(want: &str) -> Result<String> {
    let addr: std::net::SocketAddr = want
        .parse()
        .with_context(|| format!("{want:?} is not an IP:PORT address"))?;
    if addr.port() == 0 || std::net::TcpListener::bind(addr).is_ok() {
        return Ok(addr.to_string());
    }
    let free = std::net::TcpListener::bind((addr.ip(), 0))
        .and_then(|l| l.local_addr())
        .with_context(|| format!("no free port on {}", addr.ip()))?;
    println!("  {want} is taken; using {free}");
    Ok(free.to_string())
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

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Safety net: SIGKILL any process whose executable lives under the demo directory (an app an
/// agent failed to stop, for instance).
fn kill_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            if exe.starts_with(dir) {
                eprintln!("  killing leftover process {pid} ({})", exe.display());
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Sets `flag` when SIGINT or SIGTERM arrives, instead of dying, so the demo can stop its
/// children first. The handlers are installed before this returns.
fn install_stop_handler(flag: &Arc<AtomicBool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    let (mut int, mut term) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        )
    };
    let flag = Arc::clone(flag);
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
            }
        });
    });
    Ok(())
}
