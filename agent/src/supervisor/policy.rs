//! The per-app rules a [`super::Supervisor`] applies, derived once from the app's spec so the
//! state machine never reads wire types.

use super::{STARTUP_TIMEOUT, STOP_GRACE};
use fleet_schema::app_spec::{AppSpec, RestartPolicy};
use std::time::Duration;

/// The per-app rules the supervisor applies, taken from the app's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Which exits are restarted.
    pub restart: RestartPolicy,
    /// How long a start may take to become running (healthy, with `wait_healthy`).
    pub startup_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Running means "first probe passed" rather than "alive past the startup window".
    pub wait_healthy: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::Always,
            startup_timeout: STARTUP_TIMEOUT,
            stop_grace: STOP_GRACE,
            wait_healthy: false,
        }
    }
}

impl Policy {
    /// The policy an app's spec asks for; zero durations mean the agent's defaults.
    pub fn from_spec(spec: &AppSpec) -> Self {
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        Self {
            restart: spec.runtime.restart.clone(),
            startup_timeout: ms(spec.runtime.startup_timeout_ms, STARTUP_TIMEOUT),
            stop_grace: ms(spec.runtime.stop_grace_ms, STOP_GRACE),
            wait_healthy: spec.healthcheck.is_some(),
        }
    }

    pub(super) fn restarts(&self, clean: bool) -> bool {
        match self.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Always | RestartPolicy::Other(_) => true,
        }
    }
}
