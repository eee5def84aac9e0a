//! The supervisor of one app version's process, as a pure state machine. The I/O shell feeds it
//! events (spawned, spawn failed, exited, stop requested, time passed) with the current time and
//! performs the [`Effect`]s it returns, so restart policy, crash-loop detection and graceful
//! stopping are unit-tested on a simulated clock without sleeping or spawning anything.

use crate::backoff::Backoff;
use fleet_schema::AppPhase;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a new process must stay alive before it counts as running.
pub const STARTUP_WINDOW: Duration = Duration::from_secs(1);
/// First restart delay after a crash.
pub const RESTART_INITIAL: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const RESTART_MAX: Duration = Duration::from_secs(60);
/// Running this long without exiting resets the restart backoff and the crash-loop count.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Window in which [`CRASH_LOOP_RESTARTS`] restarts mean a crash loop.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(300);
/// Restarts within [`CRASH_LOOP_WINDOW`] that mean a crash loop.
pub const CRASH_LOOP_RESTARTS: usize = 3;
/// Time between SIGTERM and SIGKILL when stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the shell must do for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Launch the process (answer with [`SupEvent::Spawned`] or [`SupEvent::SpawnFailed`]).
    Spawn,
    /// Send SIGTERM to the process group led by this pid.
    Terminate(u32),
    /// Send SIGKILL to the process group led by this pid (also used to sweep leftovers of a
    /// group whose leader has exited, so no orphan survives).
    Kill(u32),
}

/// What happened to the supervised process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupEvent {
    /// The process was launched with this pid.
    Spawned(u32),
    /// The process could not be launched.
    SpawnFailed(String),
    /// The process with this pid exited (description of how).
    Exited {
        /// Which process.
        pid: u32,
        /// How it ended, e.g. "exit status 1".
        how: String,
    },
    /// Stop the process for good (undesired version, shutdown).
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the restart delay to pass.
    Waiting { until: Instant },
    /// Spawn requested, result pending.
    Spawning { stop_requested: bool },
    /// Alive, inside the startup window.
    Starting { pid: u32, since: Instant },
    /// Alive past the startup window.
    Running {
        pid: u32,
        since: Instant,
        stable: bool,
    },
    /// SIGTERM sent; SIGKILL at `kill_at` unless it exits.
    Stopping {
        pid: u32,
        kill_at: Instant,
        killed: bool,
    },
    /// Stopped on purpose.
    Stopped,
    /// Gave up (only when another version keeps serving).
    Failed,
}

/// Supervises one version of one app.
#[derive(Debug, Clone)]
pub struct Supervisor {
    state: State,
    fallback: bool,
    restart_count: u32,
    backoff: Backoff,
    recent_restarts: VecDeque<Instant>,
    crash_loop: bool,
    last_error: Option<String>,
}

impl Supervisor {
    /// A supervisor that starts a new process now. With `fallback` (another version of the app
    /// keeps running), a process that dies inside its startup window is a failed upgrade and is
    /// not restarted; without it, the restart policy applies.
    pub fn start(fallback: bool) -> (Self, Vec<Effect>) {
        let sup = Self::with_state(
            State::Spawning {
                stop_requested: false,
            },
            fallback,
        );
        (sup, vec![Effect::Spawn])
    }

    /// A supervisor for a process that already runs (adopted after an agent restart).
    pub fn adopt(pid: u32, now: Instant) -> Self {
        Self::with_state(
            State::Running {
                pid,
                since: now,
                stable: false,
            },
            false,
        )
    }

    fn with_state(state: State, fallback: bool) -> Self {
        Self {
            state,
            fallback,
            restart_count: 0,
            backoff: Backoff::new(RESTART_INITIAL, RESTART_MAX),
            recent_restarts: VecDeque::new(),
            crash_loop: false,
            last_error: None,
        }
    }

    /// Feeds an event; returns what to do.
    pub fn on_event(&mut self, event: SupEvent, now: Instant) -> Vec<Effect> {
        match (event, self.state.clone()) {
            (SupEvent::Spawned(pid), State::Spawning { stop_requested }) => {
                if stop_requested {
                    self.state = State::Stopping {
                        pid,
                        kill_at: now + STOP_GRACE,
                        killed: false,
                    };
                    vec![Effect::Terminate(pid)]
                } else {
                    self.state = State::Starting { pid, since: now };
                    Vec::new()
                }
            }
            (SupEvent::SpawnFailed(err), State::Spawning { stop_requested }) => {
                self.last_error = Some(format!("cannot start: {err}"));
                if stop_requested {
                    self.state = State::Stopped;
                } else {
                    self.failed_start(now);
                }
                Vec::new()
            }
            (SupEvent::Exited { pid, how }, State::Starting { pid: p, .. }) if pid == p => {
                self.last_error = Some(format!("exited during startup: {how}"));
                self.failed_start(now);
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Exited { pid, how }, State::Running { pid: p, since, .. }) if pid == p => {
                self.last_error = Some(format!("exited: {how}"));
                if now.saturating_duration_since(since) >= STABLE_AFTER {
                    self.backoff.reset();
                }
                self.schedule_restart(now);
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Exited { pid, .. }, State::Stopping { pid: p, .. }) if pid == p => {
                self.state = State::Stopped;
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Stop, State::Waiting { .. }) => {
                self.state = State::Stopped;
                Vec::new()
            }
            (SupEvent::Stop, State::Spawning { .. }) => {
                self.state = State::Spawning {
                    stop_requested: true,
                };
                Vec::new()
            }
            (SupEvent::Stop, State::Starting { pid, .. } | State::Running { pid, .. }) => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now + STOP_GRACE,
                    killed: false,
                };
                vec![Effect::Terminate(pid)]
            }
            // Stale events (an exit of a pid we no longer track, a stop when already stopping).
            _ => Vec::new(),
        }
    }

    /// Lets time pass: call at (or after) [`Supervisor::deadline`].
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        match self.state.clone() {
            State::Waiting { until } if now >= until => {
                self.state = State::Spawning {
                    stop_requested: false,
                };
                vec![Effect::Spawn]
            }
            State::Starting { pid, since } if now >= since + STARTUP_WINDOW => {
                self.state = State::Running {
                    pid,
                    since,
                    stable: false,
                };
                self.on_tick(now)
            }
            State::Running {
                pid,
                since,
                stable: false,
            } if now >= since + STABLE_AFTER => {
                self.backoff.reset();
                self.crash_loop = false;
                self.recent_restarts.clear();
                self.state = State::Running {
                    pid,
                    since,
                    stable: true,
                };
                Vec::new()
            }
            State::Stopping {
                pid,
                kill_at,
                killed: false,
            } if now >= kill_at => {
                self.state = State::Stopping {
                    pid,
                    kill_at,
                    killed: true,
                };
                vec![Effect::Kill(pid)]
            }
            _ => Vec::new(),
        }
    }

    /// When [`Supervisor::on_tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Starting { since, .. } => Some(since + STARTUP_WINDOW),
            State::Running {
                since,
                stable: false,
                ..
            } => Some(since + STABLE_AFTER),
            State::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(kill_at),
            _ => None,
        }
    }

    fn failed_start(&mut self, now: Instant) {
        if self.fallback {
            self.state = State::Failed;
        } else {
            self.schedule_restart(now);
        }
    }

    fn schedule_restart(&mut self, now: Instant) {
        self.restart_count = self.restart_count.saturating_add(1);
        self.recent_restarts.push_back(now);
        while self
            .recent_restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CRASH_LOOP_WINDOW)
        {
            self.recent_restarts.pop_front();
        }
        if self.recent_restarts.len() >= CRASH_LOOP_RESTARTS {
            self.crash_loop = true;
        }
        self.state = State::Waiting {
            until: now + self.backoff.next_delay(),
        };
    }

    /// The phase to report for this version.
    pub fn phase(&self) -> AppPhase {
        match self.state {
            State::Failed => AppPhase::Failed,
            State::Stopped | State::Stopping { .. } => AppPhase::Stopped,
            _ if self.crash_loop => AppPhase::CrashLoop,
            State::Running { .. } => AppPhase::Running,
            State::Waiting { .. } | State::Spawning { .. } | State::Starting { .. } => {
                AppPhase::Starting
            }
        }
    }

    /// The pid of the live process, if any.
    pub fn pid(&self) -> Option<u32> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// True while the supervisor still has (or will have) a process: not stopped or failed.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, State::Stopped | State::Failed)
    }

    /// True when the process is past its startup window and no stop was requested.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// True once a stop was requested (stopping or stopped).
    pub fn is_stopping(&self) -> bool {
        matches!(
            self.state,
            State::Stopping { .. }
                | State::Stopped
                | State::Spawning {
                    stop_requested: true
                }
        )
    }

    /// True when the supervisor gave up on a failed upgrade.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// True when stopped for good.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }

    /// Restarts of this version so far.
    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }

    /// Why the process last ended or could not start.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
