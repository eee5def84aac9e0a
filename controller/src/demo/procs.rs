//! The demo's processes: locating the sibling binaries, starting fleetd and the agents with
//! their logs, and stopping every one of them (and anything they left) on exit or Ctrl-C.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::step;

/// The sibling binaries the demo runs; they are built by `cargo build --release --bins`.
pub(super) struct Binaries {
    pub(super) fleetd: PathBuf,
    pub(super) agent: PathBuf,
    pub(super) fleetctl: PathBuf,
    pub(super) sample_app: PathBuf,
}

impl Binaries {
    pub(super) fn locate() -> Result<Self> {
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

/// What an agent needs to join the demo's controller.
pub(super) struct Join<'a> {
    pub(super) server: &'a str,
    pub(super) mqtt_url: &'a str,
    pub(super) ca: &'a Path,
    pub(super) token_file: &'a Path,
}

/// Children of the demo, stopped in reverse order of start.
pub(super) struct Processes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Processes {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            children: Vec::new(),
        }
    }

    pub(super) fn log_file(&self, name: &str) -> Result<std::fs::File> {
        let path = self.dir.join(name);
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
    }

    /// Starts fleetd and returns the HTTP and MQTT URLs from its ready line.
    pub(super) fn start_fleetd(
        &mut self,
        bins: &Binaries,
        http: &str,
        mqtt: &str,
        certs: &Path,
        admin_token: &str,
    ) -> Result<(String, String)> {
        let log = self.log_file("fleetd.log")?;
        let mut child = Command::new(&bins.fleetd)
            .arg("--data-dir")
            .arg(self.dir.join("controller"))
            .args(["--http-listen", http, "--mqtt-listen", mqtt])
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .env("FLEETD_ADMIN_TOKEN", admin_token)
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
                if let Some(ready) = fleet_schema::ReadyLine::parse(&line).transpose() {
                    let _ = tx.send(ready.map(|r| (r.http, r.mqtt.to_string())));
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            anyhow::anyhow!(
                "fleetd did not become ready within 30 s; see {}",
                self.dir.join("fleetd.log").display()
            )
        })?;
        Ok(ready?)
    }

    pub(super) fn start_agent(
        &mut self,
        bins: &Binaries,
        device: &str,
        join: &Join<'_>,
    ) -> Result<()> {
        let base = self.dir.join("agents").join(device);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let log = self.log_file(&format!("agents/{device}/agent.log"))?;
        let child = Command::new(&bins.agent)
            .args(["--device-id", device, "--mqtt-url", join.mqtt_url])
            .args(["--server", join.server])
            .arg("--ca")
            .arg(join.ca)
            .arg("--enroll-token-file")
            .arg(join.token_file)
            .arg("--data-dir")
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
    pub(super) fn shutdown(&mut self) {
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

/// Uses `want` when it can be bound, otherwise a free port on the same IP.
pub(super) fn pick_addr(want: &str) -> Result<String> {
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
pub(super) fn install_stop_handler(flag: &Arc<AtomicBool>) -> Result<()> {
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
