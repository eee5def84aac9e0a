//! Following a unit for the agent's supervisor: start it, find the run of its main process
//! that the start produced, and report when that run ends, as the same [`SupEvent`]s a process
//! the agent spawned itself produces. systemd restarts the unit on its own (Restart=), the
//! agent's supervisor counts each ended run as a restart, so crash loops, restart counts and
//! health checks work as for any other app. A run is identified by systemd's
//! `ExecMainStartTimestampMonotonic`, so an exit between two polls is never missed: the next
//! poll sees a newer run. The decisions are pure functions of two `systemctl show` answers.

use super::{Systemctl, SystemdError, UnitState};
use crate::runtime::raw;
use crate::supervisor::SupEvent;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a starting unit is asked for its state.
pub const START_POLL: Duration = Duration::from_millis(200);
/// How often the main process of a running unit is checked (in `/proc`, no `systemctl`).
pub const RUN_POLL: Duration = Duration::from_millis(250);
/// Longest wait for a start to produce a main process.
pub const START_WAIT_MAX: Duration = Duration::from_secs(600);
/// Polls after the main process vanished before systemd's word on it is given up on.
const END_POLLS: u32 = 40;

/// One run of a unit's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Its pid.
    pub pid: u32,
    /// When it started (systemd's monotonic µs), which identifies the run.
    pub started: u64,
}

/// The run of a unit whose main process is alive now.
pub fn running(s: &UnitState) -> Option<Run> {
    (s.active == "active" && s.main_pid > 0 && s.exec_exit == 0 && s.exec_pid == s.main_pid)
        .then_some(Run {
            pid: s.main_pid,
            started: s.exec_start,
        })
}

/// Where a start stands, comparing the state before it (`base`) with the state now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Nothing yet (queued, waiting for a pending restart, running ExecStartPre).
    Pending,
    /// A new run began (it may already have ended: the next check reports that).
    Began(Run),
    /// The unit failed before its main process ran.
    Failed(String),
}

/// Compares two answers of `systemctl show` around a start.
pub fn start_progress(base: &UnitState, now: &UnitState) -> Start {
    if now.exec_start != 0 && now.exec_start != base.exec_start && now.exec_pid > 0 {
        Start::Began(Run {
            pid: now.exec_pid,
            started: now.exec_start,
        })
    } else if now.restarts >= base.restarts.saturating_add(2) {
        // Two restarts without a main process: ExecStartPre (or the exec) keeps failing. One
        // is not enough: systemd counts a restart before the restarted run begins.
        Start::Failed(format!(
            "the unit failed before its main process ran, and systemd is restarting it (result {})",
            now.result
        ))
    } else if now.inactive_exit != base.inactive_exit
        && matches!(now.active.as_str(), "failed" | "inactive")
    {
        Start::Failed(format!(
            "the unit failed before its main process ran (result {})",
            now.result
        ))
    } else {
        Start::Pending
    }
}

/// How `run` ended, if it has.
pub fn run_end(run: &Run, s: &UnitState) -> Option<String> {
    if s.exec_start != run.started {
        Some("exited; systemd restarted it before the agent saw how".into())
    } else if s.exec_exit != 0 {
        Some(s.exit_description())
    } else if s.main_pid == 0 && matches!(s.active.as_str(), "inactive" | "failed") {
        Some(format!("ended (systemd result {})", s.result))
    } else {
        None
    }
}

/// A unit to install and start.
#[derive(Debug, Clone)]
pub struct StartJob {
    /// The driver.
    pub ctl: Systemctl,
    /// Held while the manager's state is changed, so changes apply in the order queued.
    pub lock: Arc<tokio::sync::Mutex<()>>,
    /// Unit name.
    pub unit: String,
    /// Unit file content.
    pub text: String,
}

/// Installs and starts the unit, reports `Spawned` (or `SpawnFailed`), then follows the run
/// and reports its `Exited`. A unit that already runs is taken as it is: never a second copy.
pub async fn start_and_follow(job: StartJob, report: impl Fn(SupEvent) + Send) {
    match start(&job).await {
        Ok(run) => {
            report(SupEvent::Spawned(run.pid));
            follow(&job.ctl, &job.unit, run, report).await;
        }
        Err(e) => report(SupEvent::SpawnFailed(e)),
    }
}

async fn start(job: &StartJob) -> Result<Run, String> {
    let text = |e: SystemdError| e.to_string();
    let base = {
        let _order = job.lock.lock().await;
        job.ctl.install(&job.unit, &job.text).await.map_err(text)?;
        let base = job.ctl.show(&job.unit).await.map_err(text)?;
        if let Some(run) = running(&base) {
            return Ok(run);
        }
        job.ctl.start(&job.unit).await.map_err(text)?;
        base
    };
    let deadline = Instant::now() + START_WAIT_MAX;
    loop {
        tokio::time::sleep(START_POLL).await;
        let now = job.ctl.show(&job.unit).await.map_err(text)?;
        match start_progress(&base, &now) {
            Start::Began(run) => return Ok(run),
            Start::Failed(e) => return Err(e),
            Start::Pending if Instant::now() > deadline => {
                return Err(format!(
                    "the unit did not start within {} s ({} {})",
                    START_WAIT_MAX.as_secs(),
                    now.active,
                    now.sub
                ))
            }
            Start::Pending => {}
        }
    }
}

/// Reports `Exited` once `run` has ended (its process is watched in `/proc`; systemd is
/// asked only when it is gone).
pub async fn follow(ctl: &Systemctl, unit: &str, run: Run, report: impl Fn(SupEvent)) {
    let start_time = raw::start_time(run.pid);
    let mut asked = 0;
    loop {
        if start_time.is_some_and(|t| raw::is_same_process(run.pid, t)) {
            tokio::time::sleep(RUN_POLL).await;
            continue;
        }
        if let Ok(s) = ctl.show(unit).await {
            if let Some(how) = run_end(&run, &s) {
                report(SupEvent::Exited { pid: run.pid, how });
                return;
            }
        }
        asked += 1;
        if asked >= END_POLLS {
            report(SupEvent::Exited {
                pid: run.pid,
                how: "ended (systemd did not say how)".into(),
            });
            return;
        }
        tokio::time::sleep(RUN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: &str, main: u32, exec: (u32, u64, u64), restarts: u32) -> UnitState {
        UnitState {
            load: "loaded".into(),
            active: active.into(),
            main_pid: main,
            exec_pid: exec.0,
            exec_start: exec.1,
            exec_exit: exec.2,
            exec_code: 1,
            exec_status: 3,
            restarts,
            result: "exit-code".into(),
            ..UnitState::default()
        }
    }

    #[test]
    fn a_running_unit_is_taken_as_it_is() {
        let s = state("active", 42, (42, 100, 0), 0);
        assert_eq!(
            running(&s),
            Some(Run {
                pid: 42,
                started: 100
            })
        );
        assert_eq!(running(&state("activating", 0, (41, 90, 95), 1)), None);
        assert_eq!(running(&state("deactivating", 42, (42, 100, 0), 0)), None);
    }

    #[test]
    fn a_start_is_seen_even_when_the_run_already_ended() {
        let base = state("inactive", 0, (0, 0, 0), 0);
        assert_eq!(start_progress(&base, &base), Start::Pending);
        let crashed = state("activating", 0, (7, 200, 210), 0);
        let run = Run {
            pid: 7,
            started: 200,
        };
        assert_eq!(start_progress(&base, &crashed), Start::Began(run));
        assert_eq!(run_end(&run, &crashed).as_deref(), Some("exit status 3"));
        let mut pre_failed = base.clone();
        pre_failed.active = "failed".into();
        pre_failed.inactive_exit = 5;
        assert!(
            matches!(start_progress(&base, &pre_failed), Start::Failed(e) if e.contains("exit-code"))
        );
        let mut restarting = base.clone();
        restarting.restarts = 1;
        assert_eq!(
            start_progress(&base, &restarting),
            Start::Pending,
            "run not begun yet"
        );
        restarting.restarts = 2;
        assert!(matches!(
            start_progress(&base, &restarting),
            Start::Failed(_)
        ));
    }

    #[test]
    fn the_end_of_a_run_is_never_missed() {
        let run = Run {
            pid: 7,
            started: 200,
        };
        assert_eq!(run_end(&run, &state("active", 7, (7, 200, 0), 0)), None);
        let newer = state("active", 9, (9, 300, 0), 1);
        assert!(run_end(&run, &newer).is_some_and(|h| h.contains("restarted")));
        let mut killed = state("failed", 0, (7, 200, 250), 0);
        killed.exec_code = 2;
        killed.exec_status = 15;
        assert_eq!(run_end(&run, &killed).as_deref(), Some("killed by SIGTERM"));
        let gone = UnitState {
            active: "inactive".into(),
            exec_start: 200,
            ..UnitState::default()
        };
        assert!(run_end(&run, &gone).is_some());
    }
}
