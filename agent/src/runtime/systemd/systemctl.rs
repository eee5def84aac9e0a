//! The `systemctl` driver: writes and removes unit files, runs `systemctl [--user]` as a
//! process (no D-Bus library: the agent stays small) with a timeout on every call, and parses
//! `systemctl show` into a [`UnitState`]. Calls that change the manager's state are made by
//! the daemon one at a time, so a unit is never removed under a start of the same unit.

use super::{parse_unit_name, Scope, Settings, SystemdError};
use crate::runtime::files;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The properties the agent reads from `systemctl show`.
pub const PROPERTIES: &str = "LoadState,ActiveState,SubState,MainPID,ExecMainPID,\
ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic,ExecMainCode,ExecMainStatus,\
NRestarts,Result,InactiveExitTimestampMonotonic";
/// Longest wait for one `systemctl` call that does not stop anything.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the manager to answer the availability probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Where the system manager announces itself (what `sd_booted()` checks).
const SYSTEM_MARKER: &str = "/run/systemd/system";

/// A unit as `systemctl show` describes it; missing or unparsable numbers are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, ...
    pub load: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`.
    pub active: String,
    /// e.g. `running`, `auto-restart`, `exited`, `dead`.
    pub sub: String,
    /// The live main process, 0 when none.
    pub main_pid: u32,
    /// The pid of the latest main process run (kept after it exits).
    pub exec_pid: u32,
    /// When the latest run started (monotonic µs): identifies a run.
    pub exec_start: u64,
    /// When the latest run exited (0 while it runs).
    pub exec_exit: u64,
    /// How it exited: 1 exited, 2 killed, 3 dumped core (`siginfo` codes).
    pub exec_code: i32,
    /// Exit status or signal number.
    pub exec_status: i32,
    /// Restarts systemd made since the unit was loaded.
    pub restarts: u32,
    /// `success`, `exit-code`, `signal`, `timeout`, ...
    pub result: String,
    /// When the unit last left the inactive state (a start attempt).
    pub inactive_exit: u64,
}

impl UnitState {
    /// Parses `KEY=VALUE` lines, in any order.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k {
                "LoadState" => s.load = v.to_string(),
                "ActiveState" => s.active = v.to_string(),
                "SubState" => s.sub = v.to_string(),
                "MainPID" => s.main_pid = v.parse().unwrap_or(0),
                "ExecMainPID" => s.exec_pid = v.parse().unwrap_or(0),
                "ExecMainStartTimestampMonotonic" => s.exec_start = v.parse().unwrap_or(0),
                "ExecMainExitTimestampMonotonic" => s.exec_exit = v.parse().unwrap_or(0),
                "ExecMainCode" => s.exec_code = v.parse().unwrap_or(0),
                "ExecMainStatus" => s.exec_status = v.parse().unwrap_or(0),
                "NRestarts" => s.restarts = v.parse().unwrap_or(0),
                "Result" => s.result = v.to_string(),
                "InactiveExitTimestampMonotonic" => s.inactive_exit = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        s
    }

    /// How the latest run ended, worded like the agent's own supervisor does.
    pub fn exit_description(&self) -> String {
        match self.exec_code {
            1 => format!("exit status {}", self.exec_status),
            2 | 3 => match nix::sys::signal::Signal::try_from(self.exec_status) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {}", self.exec_status),
            },
            _ => format!("ended (systemd result {})", self.result),
        }
    }
}

/// Drives one systemd manager through `systemctl`.
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
    scope: Scope,
    unit_dir: PathBuf,
}

impl Systemctl {
    /// The driver for the configured scope and unit directory (nothing is run yet).
    pub fn new(settings: &Settings) -> Result<Self, SystemdError> {
        Ok(Self::with_program(
            Path::new("systemctl"),
            settings.scope,
            &settings.unit_dir()?,
        ))
    }

    /// A driver with an explicit `systemctl` program (tests use a stand-in).
    pub fn with_program(program: &Path, scope: Scope, unit_dir: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            scope,
            unit_dir: unit_dir.to_path_buf(),
        }
    }

    /// Which manager this drives.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The file of a unit.
    pub fn unit_path(&self, unit: &str) -> PathBuf {
        self.unit_dir.join(unit)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        if self.scope == Scope::User {
            c.arg("--user");
        }
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `Ok` when the manager answers; otherwise why not (for the capability report and the
    /// error of an app that needs it).
    pub fn probe(&self) -> Result<(), String> {
        if self.scope == Scope::System && !Path::new(SYSTEM_MARKER).is_dir() {
            return Err(format!("{SYSTEM_MARKER} is missing: PID 1 is not systemd"));
        }
        let out = run_sync(
            self.command(&["show", "-p", "Version", "-p", "SystemState"]),
            PROBE_TIMEOUT,
        )
        .map_err(|e| e.to_string())?;
        let state = UnitStateProbe::parse(&String::from_utf8_lossy(&out.stdout));
        if out.status.success() && !state.version.is_empty() && state.system != "offline" {
            Ok(())
        } else {
            Err(format!(
                "systemctl{} does not answer: {}",
                if self.scope == Scope::User {
                    " --user"
                } else {
                    ""
                },
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `systemctl show` of a unit, without a runtime (agent start).
    pub fn show_sync(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let out = run_sync(
            self.command(&["show", "-p", PROPERTIES, unit]),
            CALL_TIMEOUT,
        )?;
        checked("show", out).map(|t| UnitState::parse(&t))
    }

    /// Runs `systemctl [--user] ARGS` within `timeout`; stdout on success.
    pub async fn call(&self, args: &[&str], timeout: Duration) -> Result<String, SystemdError> {
        let action = args.first().copied().unwrap_or_default().to_string();
        let mut cmd = tokio::process::Command::from(self.command(args));
        cmd.kill_on_drop(true);
        let out = match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(failed(&action, e.to_string())),
            Err(_) => return Err(failed(&action, format!("no answer within {timeout:?}"))),
        };
        checked(&action, out)
    }

    /// `systemctl show` of a unit.
    pub async fn show(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let text = self
            .call(&["show", "-p", PROPERTIES, unit], CALL_TIMEOUT)
            .await?;
        Ok(UnitState::parse(&text))
    }

    /// Writes the unit atomically, reloads the manager and enables the unit (so it also
    /// starts at boot, before the agent). Mode 0600: the unit's `Environment=` lines carry the
    /// app's configuration, secrets included, and only the manager needs to read it.
    pub async fn install(&self, unit: &str, text: &str) -> Result<(), SystemdError> {
        let path = self.unit_path(unit);
        files::write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| SystemdError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.call(&["daemon-reload"], CALL_TIMEOUT).await?;
        self.call(&["enable", unit], CALL_TIMEOUT).await.map(drop)
    }

    /// Queues a start and returns at once (a unit waiting to be restarted by systemd is not
    /// waited for).
    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(&["start", "--no-block", unit], CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Queues a stop: SIGTERM to the unit's processes, SIGKILL after its TimeoutStopSec.
    pub async fn stop_no_block(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(&["stop", "--no-block", unit], CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Stops the unit (waiting up to `stop_timeout`), disables it, deletes its file and
    /// reloads the manager: nothing of it is left. A unit that is already gone is fine.
    pub async fn remove(&self, unit: &str, stop_timeout: Duration) -> Result<(), SystemdError> {
        let stopped = self.call(&["stop", unit], stop_timeout).await;
        let _ = self.call(&["disable", unit], CALL_TIMEOUT).await;
        let path = self.unit_path(unit);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SystemdError::Io {
                    path,
                    message: e.to_string(),
                })
            }
        }
        self.call(&["daemon-reload"], CALL_TIMEOUT).await?;
        let _ = self.call(&["reset-failed", unit], CALL_TIMEOUT).await;
        if let Some((app, _)) = parse_unit_name(unit) {
            if !self.installed().iter().any(|(_, a, _)| *a == app) {
                // systemd groups an app's versions in an implicit slice; drop it with the last.
                let _ = self
                    .call(&["stop", &super::app_slice(&app, self.scope)], CALL_TIMEOUT)
                    .await;
            }
        }
        match stopped {
            // Stopping a unit that is not loaded fails; what matters is that nothing runs.
            Err(e) if self.show(unit).await.is_ok_and(|s| s.main_pid != 0) => Err(e),
            _ => Ok(()),
        }
    }

    /// The agent's unit files in the unit directory: (unit, app, version).
    pub fn installed(&self) -> Vec<(String, String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.unit_dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String, String)> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let (app, version) = parse_unit_name(&name)?;
                Some((name, app, version))
            })
            .collect();
        out.sort();
        out
    }
}

/// The answer to the availability probe.
#[derive(Debug, Default)]
struct UnitStateProbe {
    version: String,
    system: String,
}

impl UnitStateProbe {
    fn parse(text: &str) -> Self {
        let mut p = Self::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("Version", v)) => p.version = v.trim().to_string(),
                Some(("SystemState", v)) => p.system = v.trim().to_string(),
                _ => {}
            }
        }
        p
    }
}

fn failed(action: &str, detail: String) -> SystemdError {
    SystemdError::Systemctl {
        action: action.to_string(),
        detail,
    }
}

/// stdout of a successful call; otherwise the exit status and stderr as the error.
fn checked(action: &str, out: Output) -> Result<String, SystemdError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(
            action,
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Runs a command to completion within `timeout` (killed after it) without a runtime.
fn run_sync(mut cmd: Command, timeout: Duration) -> Result<Output, SystemdError> {
    let mut child = cmd.spawn().map_err(|e| failed("(spawn)", e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                return child
                    .wait_with_output()
                    .map_err(|e| failed("(wait)", e.to_string()))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed("(wait)", format!("no answer within {timeout:?}")));
            }
        }
    }
}

#[cfg(test)]
#[path = "systemctl_tests.rs"]
mod tests;
