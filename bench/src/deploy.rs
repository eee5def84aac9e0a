//! The deployment phase of a run: fleetd's API is the source of truth for "done", the
//! simulated devices' acknowledgements only add latency figures. The phase ends when the API
//! reports every device succeeded; acknowledgements still missing then get a short grace
//! period and are counted, never waited for (a broker may drop one, e.g. when it replaces a
//! session on a duplicate client id). Also measures what the benchmark's own API polling costs
//! fleetd, so it can be taken out of the per-device CPU figure.

use crate::api::Api;
use crate::bench::Phase;
use crate::cpu::{CpuProbe, CpuSample};
use crate::fleet::{SimEvent, SimEventKind};
use anyhow::{bail, Context, Result};
use fleet_schema::api::{DeploymentState, DeploymentView, DeviceProgress};
use indicatif::ProgressBar;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long device-side events may still arrive after the API reported every device succeeded.
pub const ACK_GRACE: Duration = Duration::from_secs(3);

/// Least time between two polls of the deployment while it runs (the granularity of (c)).
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// A poll waits at least this many times as long as the previous GET took. Each GET of a
/// deployment or of the device list costs fleetd CPU in proportion to the fleet (about 20 ms
/// at 1,000 devices on the reference machine), so a fixed 100 ms period would have the
/// benchmark, not the fleet, load fleetd at 10,000 devices; this keeps polling to about a
/// fifth of one CPU.
const POLL_BACKOFF: u32 = 4;

/// While some simulated device has not yet had its new status acknowledged, the deployment is
/// only polled this often (or every [`SLOW_POLL_BACKOFF`] times the last GET's duration): the
/// API cannot report every device succeeded before the devices reported, and fewer polls keep
/// the benchmark's share of fleetd's CPU small. A device whose acknowledgement is lost still
/// ends the phase, one slow poll later.
const SLOW_POLL: Duration = Duration::from_secs(1);
const SLOW_POLL_BACKOFF: u32 = 10;

/// The pause before the next poll, given how long the last GET took.
pub fn poll_pause(last_get: Duration) -> Duration {
    POLL_EVERY.max(last_get * POLL_BACKOFF)
}

/// What the simulated devices saw, from the deployment request on.
#[derive(Debug, Default)]
pub struct SimSide {
    /// Per device: desired state received.
    pub received: Vec<Duration>,
    /// Per device: the status with the new version acknowledged by the broker.
    pub acked: Vec<Duration>,
    /// Devices without a desired state when the phase ended.
    pub missing_desired: usize,
    /// Devices whose new-version status was not acknowledged when the phase ended.
    pub missing_acks: usize,
}

/// What the API said.
#[derive(Debug, Clone, Copy)]
pub struct ApiSide {
    /// From the request until the API reported every device succeeded, milliseconds.
    pub all_succeeded_ms: f64,
    /// GETs of the deployment made until then.
    pub polls: u64,
    /// CPU times when the API first reported every device succeeded.
    pub cpu_at_done: CpuSample,
}

/// Everything the deployment phase watches.
pub struct Watch<'a> {
    /// fleetd's API.
    pub api: &'a Api,
    /// The deployment.
    pub id: &'a str,
    /// Fleet size.
    pub n: usize,
    /// When the deployment request was sent.
    pub t0: Instant,
    /// Progress display.
    pub bar: &'a ProgressBar,
    /// Counters for timeout messages.
    pub phase: &'a Phase,
    /// CPU accounting.
    pub probe: CpuProbe,
}

/// Runs the deployment phase until the API reports every device succeeded (plus the grace
/// period for device-side events).
pub async fn measure(
    w: &Watch<'_>,
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
) -> Result<(SimSide, ApiSide)> {
    let (done_tx, done_rx) = watch::channel(false);
    let api_side = async {
        let outcome = poll_until_succeeded(w).await;
        let _ = done_tx.send(outcome.is_ok());
        outcome
    };
    tokio::try_join!(collect_sim_side(w, events, done_rx), api_side)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn collect_sim_side(
    w: &Watch<'_>,
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
    mut done: watch::Receiver<bool>,
) -> Result<SimSide> {
    let n = w.n;
    let mut received = vec![None; n];
    let mut acked = vec![None; n];
    let (mut r, mut a) = (0, 0);
    let mut deadline = None;
    let mut watching = true;
    while r < n || a < n {
        tokio::select! {
            ev = events.recv() => {
                let ev = ev.context("device event channel closed")?;
                let slot = match ev.kind {
                    SimEventKind::DesiredReceived => &mut received[ev.device],
                    SimEventKind::NewVersionAcked => &mut acked[ev.device],
                    SimEventKind::Connected => continue,
                };
                if slot.is_some() {
                    continue;
                }
                *slot = Some(ev.at.saturating_duration_since(w.t0));
                if ev.kind == SimEventKind::DesiredReceived {
                    r += 1;
                    w.phase.received.store(r, Ordering::Relaxed);
                } else {
                    a += 1;
                    w.phase.acked.store(a, Ordering::Relaxed);
                    w.bar.inc(1);
                }
            }
            changed = done.changed(), if watching => {
                watching = false;
                if changed.is_ok() && *done.borrow_and_update() {
                    deadline = Some(tokio::time::Instant::now() + ACK_GRACE);
                }
            }
            () = sleep_until(deadline) => break,
        }
    }
    Ok(SimSide {
        missing_desired: n - r,
        missing_acks: n - a,
        received: received.into_iter().flatten().collect(),
        acked: acked.into_iter().flatten().collect(),
    })
}

/// Devices that succeeded, per the API.
fn succeeded(view: &DeploymentView) -> usize {
    view.devices
        .values()
        .filter(|p| matches!(p, DeviceProgress::Succeeded))
        .count()
}

/// Polls the deployment every [`POLL_EVERY`] until all `n` devices succeeded.
async fn poll_until_succeeded(w: &Watch<'_>) -> Result<ApiSide> {
    let path = format!("/api/v1/deployments/{}", w.id);
    let mut polls = 0;
    loop {
        let asked = Instant::now();
        let view: DeploymentView = w.api.get(&path).await?;
        let took = asked.elapsed();
        polls += 1;
        let ok = succeeded(&view);
        w.phase.api_succeeded.store(ok, Ordering::Relaxed);
        w.bar.set_message(format!("· API {ok} succeeded"));
        if ok >= w.n {
            return Ok(ApiSide {
                all_succeeded_ms: w.t0.elapsed().as_secs_f64() * 1000.0,
                polls,
                cpu_at_done: w.probe.sample(),
            });
        }
        if let Some(end) = view
            .state
            .outcome()
            .filter(|s| *s != DeploymentState::Succeeded)
        {
            bail!(
                "deployment {} ended {end}: {:?}",
                w.id,
                view.devices
                    .values()
                    .find(|p| matches!(p, DeviceProgress::Failed { .. }))
            );
        }
        pause_before_next_poll(w, took).await;
    }
}

/// Waits [`poll_pause`] once every device has reported, else up to the slow period.
async fn pause_before_next_poll(w: &Watch<'_>, took: Duration) {
    let fast = poll_pause(took);
    let slow = SLOW_POLL.max(took * SLOW_POLL_BACKOFF);
    let start = Instant::now();
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let waited = start.elapsed();
        let devices_done = w.phase.acked.load(Ordering::Relaxed) >= w.n;
        if waited >= slow || (devices_done && waited >= fast) {
            return;
        }
    }
}

/// fleetd's cost outside the state changes, measured after the rollout finished.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overheads {
    /// fleetd's CPU while the fleet idles (no API calls from the benchmark), percent of one CPU.
    pub idle_percent: Option<f64>,
    /// fleetd's CPU for one `GET /api/v1/deployments/{id}` of this fleet, milliseconds.
    pub ms_per_poll: Option<f64>,
}

/// Idle window and number of calibration polls.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
const CALIBRATION_POLLS: u32 = 20;

/// Measures fleetd's idle CPU rate, then the extra CPU of polling the deployment the way the
/// deployment phase does.
pub async fn overheads(api: &Api, id: &str, probe: CpuProbe) -> Result<Overheads> {
    let path = format!("/api/v1/deployments/{id}");
    let s0 = probe.sample();
    let t0 = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let s1 = probe.sample();
    let idle_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..CALIBRATION_POLLS {
        let asked = Instant::now();
        let _: DeploymentView = api.get(&path).await?;
        tokio::time::sleep(poll_pause(asked.elapsed())).await;
    }
    let s2 = probe.sample();
    let polls_s = t1.elapsed().as_secs_f64();
    let idle_rate = s1.since(&s0).fleetd.map(|cpu| cpu / idle_s);
    let ms_per_poll = s2.since(&s1).fleetd.zip(idle_rate).map(|(cpu, rate)| {
        ((cpu - rate * polls_s) * 1000.0 / f64::from(CALIBRATION_POLLS)).max(0.0)
    });
    Ok(Overheads {
        idle_percent: idle_rate.map(|r| r * 100.0),
        ms_per_poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_with_the_cost_of_a_get() {
        assert_eq!(poll_pause(Duration::from_millis(5)), POLL_EVERY);
        assert_eq!(
            poll_pause(Duration::from_millis(200)),
            Duration::from_millis(800)
        );
    }
}
