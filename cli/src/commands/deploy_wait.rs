//! `fleetctl deploy --wait`: follows a deployment to its end for pipelines. Each outcome has
//! its own exit code ([`Outcome::code`], listed in the README's "From CI"), progress is a bar
//! for humans or JSON lines with `--output json`, and `--timeout` bounds the wait.

use super::print_json_line;
use crate::api::ApiClient;
use crate::Global;
use anyhow::Result;
use fleet_schema::api::{DeploymentCreated, DeploymentState, DeploymentView};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How often the deployment is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How a followed deployment ended, as a pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every target device runs the version healthily.
    Succeeded,
    /// Devices failed and the deployment stopped (or failed without a rollback).
    Failed,
    /// A rollback trigger or an operator sent the devices back to the previous version.
    RolledBack,
    /// An operator aborted it.
    Aborted,
    /// `--timeout` passed while it was still running (it goes on in fleetd).
    TimedOut,
    /// A newer deployment of the same application replaced it on every device.
    Superseded,
}

impl Outcome {
    /// Maps a deployment's final `state` (from the API) to an outcome; `None` while it still
    /// changes on its own or waits for an operator (`paused`). The rule is the schema's
    /// [`DeploymentState::outcome`], shared with fleetd's CI replies.
    pub fn of_state(state: &DeploymentState) -> Option<Outcome> {
        Some(match state.outcome()? {
            DeploymentState::Succeeded => Outcome::Succeeded,
            DeploymentState::RolledBack => Outcome::RolledBack,
            DeploymentState::Aborted => Outcome::Aborted,
            DeploymentState::Superseded => Outcome::Superseded,
            _ => Outcome::Failed,
        })
    }

    /// The process exit code: 0 succeeded, 3 failed, 4 rolled back, 5 aborted, 6 timed out,
    /// 7 superseded (1 is any other error, 2 a usage error).
    pub fn code(self) -> i32 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed => 3,
            Outcome::RolledBack => 4,
            Outcome::Aborted => 5,
            Outcome::TimedOut => 6,
            Outcome::Superseded => 7,
        }
    }

    /// The outcome's name, as printed and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Aborted => "aborted",
            Outcome::TimedOut => "timed-out",
            Outcome::Superseded => "superseded",
        }
    }
}

/// The error `deploy --wait` ends with when the outcome is not success: `main` exits with its
/// code instead of the generic 1.
#[derive(Debug)]
pub struct Unsuccessful {
    /// The deployment.
    pub id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// More words for the human (e.g. how long we waited).
    pub detail: String,
}

impl std::fmt::Display for Unsuccessful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (id, outcome, detail) = (&self.id, self.outcome.as_str(), &self.detail);
        write!(f, "deployment {id} ended {outcome}{detail}")
    }
}

impl std::error::Error for Unsuccessful {}

/// Counts of devices per outcome.
pub type Tally = fleet_schema::ci::DeviceCounts;

/// Counts the devices of `view` per outcome.
pub fn tally(view: &DeploymentView) -> Tally {
    Tally::of(view)
}

/// One JSON line of `deploy --wait --output json`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Line<'a> {
    /// The deployment was created.
    Created {
        deployment: &'a str,
        devices: &'a [String],
    },
    /// Its state or counts changed.
    Progress {
        deployment: &'a str,
        state: &'a DeploymentState,
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<usize>,
        #[serde(flatten)]
        tally: &'a Tally,
        total: usize,
    },
    /// The end: the outcome, its exit code and the final view.
    Result {
        deployment: &'a str,
        outcome: Outcome,
        exit_code: i32,
        view: &'a DeploymentView,
    },
}

/// Prints the `created` line (JSON output only).
pub fn print_created(created: &DeploymentCreated) -> Result<()> {
    print_json_line(&Line::Created {
        deployment: &created.id,
        devices: &created.devices,
    })
}

/// Polls the deployment until it ends or `timeout` passes; returns the last view and outcome.
pub fn follow(
    g: &Global,
    api: &ApiClient,
    created: &DeploymentCreated,
    timeout: Duration,
) -> Result<(DeploymentView, Outcome)> {
    let json = g.output == crate::Output::Json;
    let bar = if super::show_progress(g.output) {
        let bar = ProgressBar::new(created.devices.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("[{bar:40}] {pos}/{len} succeeded {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let path = format!("/api/v1/deployments/{}", created.id);
    let deadline = Instant::now() + timeout;
    let mut last: Option<(DeploymentState, Tally, Option<usize>)> = None;
    loop {
        let view: DeploymentView = api.get(&path)?;
        let counts = tally(&view);
        let step = view.rollout.as_ref().map(|r| r.current_step);
        bar.set_length(view.devices.len() as u64);
        bar.set_position(counts.succeeded as u64);
        bar.set_message(format!(
            "· {} failed · {} in progress · {}",
            counts.failed, counts.in_progress, view.state
        ));
        let now = (view.state.clone(), counts.clone(), step);
        if json && last.as_ref() != Some(&now) {
            print_json_line(&Line::Progress {
                deployment: &view.id,
                state: &view.state,
                step,
                tally: &counts,
                total: view.devices.len(),
            })?;
        }
        last = Some(now);
        let outcome = match Outcome::of_state(&view.state) {
            Some(o) => Some(o),
            None if Instant::now() >= deadline => Some(Outcome::TimedOut),
            None => None,
        };
        if let Some(outcome) = outcome {
            bar.finish_and_clear();
            if json {
                print_json_line(&Line::Result {
                    deployment: &view.id,
                    outcome,
                    exit_code: outcome.code(),
                    view: &view,
                })?;
            }
            return Ok((view, outcome));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_code() {
        let all = [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::RolledBack,
            Outcome::Aborted,
            Outcome::TimedOut,
            Outcome::Superseded,
        ];
        let mut codes: Vec<i32> = all.iter().map(|o| o.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, vec![0, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn states_map_to_outcomes() {
        let of = |s: &str| Outcome::of_state(&DeploymentState::from(s));
        for active in ["in-progress", "rolling-back", "paused"] {
            assert_eq!(of(active), None, "{active}");
        }
        assert_eq!(of("succeeded"), Some(Outcome::Succeeded));
        assert_eq!(of("failed"), Some(Outcome::Failed));
        assert_eq!(of("rolled-back"), Some(Outcome::RolledBack));
        assert_eq!(of("aborted"), Some(Outcome::Aborted));
        assert_eq!(of("superseded"), Some(Outcome::Superseded));
        assert_eq!(of("something-new"), Some(Outcome::Failed));
    }

    #[test]
    fn progress_lines_are_flat_json() {
        let t = Tally {
            succeeded: 1,
            failed: 0,
            in_progress: 2,
            superseded: 0,
        };
        let line = Line::Progress {
            deployment: "d-1",
            state: &DeploymentState::InProgress,
            step: Some(0),
            tally: &t,
            total: 3,
        };
        let v = serde_json::to_value(&line).expect("encodes");
        assert_eq!(v["event"], "progress");
        assert_eq!(v["succeeded"], 1);
        assert_eq!(v["in_progress"], 2);
        assert_eq!(v["total"], 3);
    }
}
