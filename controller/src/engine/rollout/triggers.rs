//! The automatic rollback triggers (pure): crash loop, high error rate, health-check failure,
//! each with the seed's defaults and action, each reporting the numbers that made it fire.

use super::snapshot::{Ctx, Snapshot};
use crate::model::rollback_triggers::RollbackAction;
use crate::model::rollout_state::{Fired, Rollout};
use fleet_schema::{AppPhase, HealthState};

/// Fewest requests over the window before the error rate is judged (one failed request out of
/// two is noise, not a 50% error rate).
pub const MIN_REQUESTS: u64 = 10;

/// A fired trigger of `kind` with its numbers; its action is the deployment's override, else
/// `default`.
pub(super) fn fired(
    r: &Rollout,
    kind: &str,
    default: RollbackAction,
    detail: String,
    observed: u64,
    threshold: u64,
    now: u64,
) -> Fired {
    Fired {
        kind: kind.into(),
        detail,
        observed,
        threshold,
        action: r.params.triggers.action.unwrap_or(default),
        at: now,
    }
}

/// Records restart counts of touched devices (keeping one observation older than the window as
/// its baseline) and updates the health-failure timer. Part of every running tick.
pub fn observe(r: &mut Rollout, ctx: Ctx<'_>, snap: &Snapshot, now: u64) {
    let window = r.params.triggers.crash_window_ms;
    for d in r.touched.iter() {
        let Some(app) = snap
            .devices
            .get(d)
            .and_then(|o| o.app.as_ref())
            .filter(|a| a.version == ctx.version)
        else {
            continue;
        };
        let obs = r.restarts.entry(d.clone()).or_default();
        if obs.last().is_none_or(|(_, c)| *c != app.restart_count) {
            obs.push((now, app.restart_count));
        }
        let cutoff = now.saturating_sub(window);
        let old = obs.iter().filter(|(t, _)| *t < cutoff).count();
        if old > 1 {
            obs.drain(..old - 1);
        }
    }
    let devs = r.step_devices(r.step);
    let unhealthy = devs
        .iter()
        .filter(|d| {
            snap.devices
                .get(*d)
                .and_then(|o| o.app.as_ref())
                .is_some_and(|a| a.version == ctx.version && a.health == HealthState::Unhealthy)
        })
        .count();
    let pct = u64::from(r.params.triggers.unhealthy_percentage);
    if !devs.is_empty() && unhealthy as u64 * 100 >= pct * devs.len() as u64 {
        r.unhealthy_since.get_or_insert(now);
    } else {
        r.unhealthy_since = None;
    }
}

/// The first trigger that fires now, if any.
pub fn evaluate(r: &Rollout, ctx: Ctx<'_>, snap: &Snapshot, now: u64) -> Option<Fired> {
    let t = &r.params.triggers;
    let live = r.touched.iter().filter(|d| !r.reverted.contains(*d));
    let threshold = t.crash_restarts;
    for d in live.clone() {
        let app = snap
            .devices
            .get(d)
            .and_then(|o| o.app.as_ref())
            .filter(|a| a.version == ctx.version);
        if let Some(a) = app.filter(|a| a.phase == AppPhase::CrashLoop) {
            let detail = format!(
                "{d}: agent reports crash-loop after {} restarts",
                a.restart_count
            );
            return Some(fired(
                r,
                "crash-loop",
                t.crash_action,
                detail,
                a.restart_count.into(),
                threshold.into(),
                now,
            ));
        }
        let Some(obs) = r.restarts.get(d) else {
            continue;
        };
        let cutoff = now.saturating_sub(t.crash_window_ms);
        let base = obs
            .iter()
            .rev()
            .find(|(at, _)| *at <= cutoff)
            .or(obs.first())
            .map_or(0, |(_, c)| *c);
        let latest = obs.last().map_or(0, |(_, c)| *c);
        let delta = latest.saturating_sub(base);
        if delta >= threshold {
            let detail = format!(
                "{d}: {delta} restarts within {}s (threshold {threshold})",
                t.crash_window_ms / 1000
            );
            return Some(fired(
                r,
                "crash-loop",
                t.crash_action,
                detail,
                delta.into(),
                threshold.into(),
                now,
            ));
        }
    }
    let (req, err) = live.fold((0u64, 0u64), |(rq, er), d| {
        let c = snap.errors.get(d).copied().unwrap_or_default();
        (rq + c.requests, er + c.errors)
    });
    if req >= MIN_REQUESTS && err * 1000 > t.error_permille * req {
        let permille = err * 1000 / req;
        let detail = format!(
            "{err} errors in {req} requests over {}s = {}.{}% (threshold {}.{}%)",
            t.error_window_ms / 1000,
            permille / 10,
            permille % 10,
            t.error_permille / 10,
            t.error_permille % 10
        );
        return Some(fired(
            r,
            "error-rate",
            t.error_action,
            detail,
            permille,
            t.error_permille,
            now,
        ));
    }
    if let Some(since) = r.unhealthy_since {
        if now.saturating_sub(since) >= t.unhealthy_for_ms {
            let devs = r.step_devices(r.step);
            let n = devs
                .iter()
                .filter(|d| {
                    snap.devices
                        .get(*d)
                        .and_then(|o| o.app.as_ref())
                        .is_some_and(|a| {
                            a.version == ctx.version && a.health == HealthState::Unhealthy
                        })
                })
                .count();
            let pct = (n * 100).checked_div(devs.len()).unwrap_or(0) as u64;
            let detail = format!(
                "{n} of {} step devices unhealthy ({pct}%) for {}s (threshold {}% for {}s)",
                devs.len(),
                now.saturating_sub(since) / 1000,
                t.unhealthy_percentage,
                t.unhealthy_for_ms / 1000
            );
            return Some(fired(
                r,
                "health-check",
                t.health_action,
                detail,
                pct,
                t.unhealthy_percentage.into(),
                now,
            ));
        }
    }
    None
}
