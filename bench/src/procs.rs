//! The processes the benchmark runs: fleetd and, optionally, Mosquitto. Each is owned by a
//! [`Children`] guard that stops it on drop (SIGTERM, then SIGKILL), so an error or timeout
//! never leaves a broker or controller behind. Also raises the open-file limit, which both
//! this process and its children (who inherit it) need for thousands of connections.

use anyhow::{anyhow, bail, Context, Result};
use fleet_schema::ReadyLine;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child processes, stopped in reverse start order when dropped.
#[derive(Default)]
pub struct Children {
    procs: Vec<(String, Child)>,
}

impl Children {
    fn push(&mut self, name: &str, child: Child) {
        self.procs.push((name.to_string(), child));
    }

    /// The process id of the child started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Fails if a child has already exited (with its name and status).
    pub fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.procs {
            if let Some(status) = child.try_wait().context("checking a child process")? {
                bail!("{name} exited unexpectedly ({status})");
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        while let Some((name, mut child)) = self.procs.pop() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                continue;
            }
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                tracing::warn!("{name} ignored SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    }
    Ok(hard)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What rumqttd logs (at error level, which fleetd keeps) when a client id connects again while
/// its previous connection is still registered: it drops the previous connection.
pub const RUMQTTD_DUPLICATE_CLIENT_ID: &str = "Duplicate client_id";

/// Lines of a log file that contain `needle` (0 when the file is unreadable).
pub fn count_in_log(path: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter(|l| l.contains(needle)).count() as u64
}

fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Mosquitto queues at most 1000 QoS 1 messages per client by default and silently drops the
/// rest: fleetd's single connection receives every device's status (and its own `cmd` echoes)
/// in one burst, so a fleet of more than a few hundred devices would lose statuses.
const MOSQUITTO_QUEUE: &str = "max_queued_messages 1000000";

/// Where fleetd keeps the Mosquitto password and ACL files of a secured Mosquitto.
pub fn mosquitto_files(dir: &Path) -> PathBuf {
    dir.join("mosquitto-fleet")
}

/// Starts Mosquitto on a free 127.0.0.1 port (unlimited connections, no persistence) with
/// FleetD's password and ACL files in force (empty until fleetd writes them), and waits until
/// it accepts connections; returns its port.
pub fn start_mosquitto(children: &mut Children, dir: &Path) -> Result<u16> {
    let bin = find_mosquitto().ok_or_else(|| {
        anyhow!("--broker mosquitto needs the mosquitto binary, which is not on PATH or in /usr/sbin (install it, e.g. `apt-get install mosquitto`)")
    })?;
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    let files = mosquitto_files(dir);
    std::fs::create_dir_all(&files).context("creating the Mosquitto files directory")?;
    // Started as root, Mosquitto drops to its own user: it must be able to read its files and
    // write its log.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .context("making the run directory readable by the broker")?;
        std::fs::write(&log, "").context("creating mosquitto.log")?;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))
            .context("making mosquitto.log writable by the broker")?;
    }
    for f in ["fleet.passwd", "fleet.acl"] {
        std::fs::write(files.join(f), "").with_context(|| format!("writing {f}"))?;
    }
    let auth = format!(
        "allow_anonymous false\npassword_file {files}/fleet.passwd\nacl_file {files}/fleet.acl\n",
        files = files.display()
    );
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\n{auth}max_connections -1\n\
             persistence false\n{MOSQUITTO_QUEUE}\nlog_dest file {}\nlog_type error\nlog_type warning\n",
            log.display(),
        ),
    )
    .context("writing mosquitto.conf")?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    children.push("mosquitto", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        children
            .check_alive()
            .with_context(|| format!("mosquitto log:\n{}", log_tail(&log, 20)))?;
        if Instant::now() > deadline {
            bail!("mosquitto did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(port)
}

/// The default fleetd: the `fleetd` binary next to this executable (target/<profile>/).
pub fn default_fleetd() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fleet-sim executable")?;
    Ok(exe.with_file_name("fleetd"))
}

/// The admin token fleet-sim starts fleetd with (`FLEETD_ADMIN_TOKEN`).
pub fn admin_token() -> Result<String> {
    let id = &fleet_schema::trust::keys::new_secret_hex().map_err(|e| anyhow!("{e}"))?[..8];
    let secret = fleet_schema::trust::keys::new_secret_hex().map_err(|e| anyhow!("{e}"))?;
    Ok(fleet_schema::trust::tokens::api_token(id, &secret))
}

/// Starts fleetd with a data dir under `dir`, either with its embedded broker on a free port
/// or against `external_mqtt` (a secured Mosquitto whose files fleetd keeps, reloading it with
/// SIGHUP), with `token` as its admin token, and waits up to 60 s for its ready line.
pub fn start_fleetd(
    children: &mut Children,
    bin: &Path,
    dir: &Path,
    external_mqtt: Option<&str>,
    token: &str,
    extra: &[String],
) -> Result<ReadyLine> {
    if !bin.is_file() {
        bail!(
            "fleetd not found at {} (build it with `cargo build --release --bins`, or pass --fleetd PATH)",
            bin.display()
        );
    }
    let data = dir.join("fleetd-data");
    let log = dir.join("fleetd.log");
    let log_file = std::fs::File::create(&log).context("creating fleetd.log")?;
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["--http-listen", "127.0.0.1:0"]);
    match external_mqtt {
        Some(url) => {
            let pid = children
                .pid("mosquitto")
                .context("an external broker must be the Mosquitto fleet-sim started")?;
            cmd.args(["--mqtt-url", url])
                .arg("--mosquitto-dir")
                .arg(mosquitto_files(dir))
                .arg("--mosquitto-reload")
                .arg(format!("kill -HUP {pid}"))
        }
        None => cmd.args(["--mqtt-listen", &format!("127.0.0.1:{}", free_port()?)]),
    };
    cmd.args(extra);
    cmd.env("FLEETD_ADMIN_TOKEN", token);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("fleetd stdout was not piped")?;
    children.push("fleetd", child);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep draining stdout after the ready line so fleetd never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ready) = ReadyLine::parse(&line).transpose() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(ready);
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(ready)) => return Ok(ready),
            Ok(Err(e)) => bail!("{e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                children
                    .check_alive()
                    .with_context(|| format!("fleetd log:\n{}", log_tail(&log, 30)))?;
            }
            Err(_) => bail!(
                "fleetd did not print its ready line within 60 s; log:\n{}",
                log_tail(&log, 30)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_stopped_on_drop() {
        let mut children = Children::default();
        let child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let pid = child.id();
        children.push("sleep", child);
        children.check_alive().expect("still running");
        drop(children);
        // The process is reaped: signalling it now fails.
        let gone = kill(Pid::from_raw(pid as i32), None).is_err();
        assert!(gone, "child {pid} survived the guard");
    }
}
