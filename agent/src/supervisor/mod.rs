//! The supervisor of one app version's process, as a pure state machine. The I/O shell feeds it
//! events (spawned, spawn failed, exited, stop requested, time passed) with the current time and
//! performs the [`Effect`]s it returns, so restart policy, crash-loop detection and graceful
//! stopping are unit-tested on a simulated clock without sleeping or spawning anything.
//!
//! The app's [`Policy`] (from its `AppSpec`) decides whether an exit is restarted (`always`,
//! `on-failure`, `never`), whether "running" waits for the first healthy probe, how long that
//! may take (startup timeout) and how long a stop waits between SIGTERM and SIGKILL.

use fleet_schema::backoff::Backoff;
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
/// Time between SIGTERM and SIGKILL when stopping, unless the app's spec says otherwise.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long an app with a health check may take to become healthy, unless its spec says
/// otherwise.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How the shell describes a clean exit (see `runtime::raw::describe_exit`).
pub const CLEAN_EXIT: &str = "exit status 0";

mod policy;
pub use policy::Policy;
mod events;
pub use events::{Effect, SupEvent};

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the restart delay to pass.
    Waiting { until: Instant },
    /// Spawn requested, result pending.
    Spawning { stop_requested: bool },
    /// Alive, inside the startup window (or waiting for the first healthy probe).
    Starting {
        pid: u32,
        since: Instant,
        timed_out: bool,
    },
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
    /// Exited and the restart policy says not to restart.
    Done { clean: bool },
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
    /// Why the agent killed the process itself; reported instead of the exit status.
    kill_reason: Option<String>,
    policy: Policy,
}

impl Supervisor {
    /// A supervisor with the default policy that starts a new process now (see
    /// [`Supervisor::start_with`]).
    pub fn start(fallback: bool) -> (Self, Vec<Effect>) {
        Self::start_with(fallback, Policy::default())
    }

    /// A supervisor that starts a new process now. With `fallback` (another version of the app
    /// keeps running), a process that dies inside its startup window is a failed upgrade and is
    /// not restarted; without it, the restart policy applies.
    pub fn start_with(fallback: bool, policy: Policy) -> (Self, Vec<Effect>) {
        let sup = Self::with_state(
            State::Spawning {
                stop_requested: false,
            },
            fallback,
            policy,
        );
        (sup, vec![Effect::Spawn])
    }

    /// A supervisor for a process that already runs (adopted after an agent restart).
    pub fn adopt(pid: u32, now: Instant, policy: Policy) -> Self {
        Self::with_state(
            State::Running {
                pid,
                since: now,
                stable: false,
            },
            false,
            policy,
        )
    }

    fn with_state(state: State, fallback: bool, policy: Policy) -> Self {
        Self {
            state,
            fallback,
            restart_count: 0,
            backoff: Backoff::new(RESTART_INITIAL, RESTART_MAX),
            recent_restarts: VecDeque::new(),
            crash_loop: false,
            last_error: None,
            kill_reason: None,
            policy,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn stopping(&mut self, pid: u32, now: Instant) -> Vec<Effect> {
        self.state = State::Stopping {
            pid,
            kill_at: now + self.policy.stop_grace,
            killed: false,
        };
        vec![Effect::Terminate(pid)]
    }

    /// The error to report for an exit: the agent's own kill reason wins.
    fn exit_error(&mut self, prefix: &str, how: &str) -> (String, bool) {
        match self.kill_reason.take() {
            Some(reason) => (reason, false),
            None => (format!("{prefix}: {how}"), how == CLEAN_EXIT),
        }
    }

    /// Feeds an event; returns what to do.
    pub fn on_event(&mut self, event: SupEvent, now: Instant) -> Vec<Effect> {
        match (event, self.state.clone()) {
            (SupEvent::Spawned(pid), State::Spawning { stop_requested }) => {
                if stop_requested {
                    self.stopping(pid, now)
                } else {
                    self.state = State::Starting {
                        pid,
                        since: now,
                        timed_out: false,
                    };
                    Vec::new()
                }
            }
            (SupEvent::SpawnFailed(err), State::Spawning { stop_requested }) => {
                self.last_error = Some(format!("cannot start: {err}"));
                if stop_requested {
                    self.state = State::Stopped;
                } else {
                    self.failed_start(now, false);
                }
                Vec::new()
            }
            (
                SupEvent::Exited { pid, how },
                State::Starting {
                    pid: p, timed_out, ..
                },
            ) if pid == p => {
                let (error, clean) = self.exit_error("exited during startup", &how);
                if !timed_out {
                    self.last_error = Some(error);
                }
                self.failed_start(now, clean && !timed_out);
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Exited { pid, how }, State::Running { pid: p, since, .. }) if pid == p => {
                let (error, clean) = self.exit_error("exited", &how);
                self.last_error = Some(error);
                if now.saturating_duration_since(since) >= STABLE_AFTER {
                    self.backoff.reset();
                }
                if self.policy.restarts(clean) {
                    self.schedule_restart(now);
                } else {
                    self.state = State::Done { clean };
                }
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Exited { pid, .. }, State::Stopping { pid: p, .. }) if pid == p => {
                self.state = State::Stopped;
                vec![Effect::Kill(pid)]
            }
            (SupEvent::Stop, State::Waiting { .. } | State::Done { .. }) => {
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
                self.stopping(pid, now)
            }
            (
                SupEvent::Healthy,
                State::Starting {
                    pid,
                    since,
                    timed_out: false,
                },
            ) if self.policy.wait_healthy => {
                self.enter_running(pid, since);
                self.on_tick(now)
            }
            (
                SupEvent::LimitExceeded(reason),
                State::Starting { pid, .. } | State::Running { pid, .. },
            ) => {
                self.kill_reason = Some(reason);
                vec![Effect::Kill(pid)]
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
            State::Starting {
                pid,
                since,
                timed_out: false,
            } if self.policy.wait_healthy && now >= since + self.policy.startup_timeout => {
                self.last_error = Some(format!(
                    "not healthy within the startup timeout of {} ms",
                    self.policy.startup_timeout.as_millis()
                ));
                self.state = State::Starting {
                    pid,
                    since,
                    timed_out: true,
                };
                vec![Effect::Kill(pid)]
            }
            State::Starting {
                pid,
                since,
                timed_out: false,
            } if !self.policy.wait_healthy && now >= since + STARTUP_WINDOW => {
                self.enter_running(pid, since);
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
            State::Starting {
                since,
                timed_out: false,
                ..
            } => Some(
                since
                    + if self.policy.wait_healthy {
                        self.policy.startup_timeout
                    } else {
                        STARTUP_WINDOW
                    },
            ),
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

    /// A version that ran is no longer an upgrade on trial: from now on a failed start is
    /// restarted by its policy, like any app's (the old version is being stopped).
    fn enter_running(&mut self, pid: u32, since: Instant) {
        self.fallback = false;
        self.state = State::Running {
            pid,
            since,
            stable: false,
        };
    }

    fn failed_start(&mut self, now: Instant, clean: bool) {
        if self.fallback {
            self.state = State::Failed;
        } else if self.policy.restarts(clean) {
            self.schedule_restart(now);
        } else {
            self.state = State::Done { clean };
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
            State::Failed | State::Done { clean: false } => AppPhase::Failed,
            State::Stopped | State::Stopping { .. } | State::Done { clean: true } => {
                AppPhase::Stopped
            }
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
        !matches!(
            self.state,
            State::Stopped | State::Failed | State::Done { .. }
        )
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

    /// True when the supervisor will not start the version again by itself: a failed upgrade,
    /// or an exit its restart policy does not restart (only a new generation retries).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed | State::Done { .. })
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
mod tests;
