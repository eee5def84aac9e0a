//! What the supervisor's state machine takes in ([`SupEvent`]) and asks its shell to do
//! ([`Effect`]). Kept apart from the machine so the shells (processes, systemd units) and the
//! machine share one small vocabulary.

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
    /// The health check passed (ends the startup phase of an app with a health check).
    Healthy,
    /// The process broke a limit the agent enforces itself (e.g. resident memory): kill it
    /// and report this reason for its exit.
    LimitExceeded(String),
}
