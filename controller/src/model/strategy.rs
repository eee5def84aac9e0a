//! A deployment's strategy, normalised from the API's [`StrategySpec`] into integers
//! (milliseconds, percentages) with the seed's defaults, so the pure engine never parses.

use super::rollback_triggers::{RollbackAction, Triggers};
use fleet_schema::api::StrategySpec;
use fleet_schema::manifest::units::duration_ms;
use serde::{Deserialize, Serialize};

/// Which strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Every device in one step.
    AllAtOnce,
    /// Growing percentage steps.
    Canary,
    /// Fixed-size batches bounded by max unavailable.
    Rolling,
    /// Every device at once, validated for a period before the old version goes.
    BlueGreen,
}

impl Kind {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AllAtOnce => "all-at-once",
            Kind::Canary => "canary",
            Kind::Rolling => "rolling",
            Kind::BlueGreen => "blue-green",
        }
    }
}

/// What a device offline past the timeout counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OfflinePolicy {
    /// It counts as failed.
    Fail,
    /// It leaves the step's denominator.
    Skip,
}

/// A normalised strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Strategy.
    pub kind: Kind,
    /// Canary first step, percent.
    pub initial_percentage: u32,
    /// Canary increment, percent.
    pub increment_percentage: u32,
    /// Least time between step starts.
    pub increment_interval_ms: u64,
    /// Rolling batch size (already bounded by max unavailable plus max surge).
    pub batch_size: u32,
    /// Rolling max unavailable.
    pub max_unavailable: u32,
    /// Rolling max surge: devices per batch, beyond max unavailable, that update make-before-
    /// break (the new version starts next to the old one, which stops once the new one has been
    /// healthy for the grace period), so they never count as unavailable.
    pub max_surge: u32,
    /// How long a device must be running and healthy to count.
    pub min_healthy_ms: u64,
    /// Blue-green: time the old version is kept after the switch.
    pub switch_delay_ms: u64,
    /// Percentage of a step's devices that must be healthy.
    pub success_percentage: u32,
    /// Most time per step.
    pub progress_deadline_ms: u64,
    /// Offline timeout.
    pub offline_timeout_ms: u64,
    /// What a device offline past the timeout is.
    pub offline_policy: OfflinePolicy,
    /// Roll back automatically.
    pub auto_rollback: bool,
    /// Pace of a gradual rollback.
    pub gradual_interval_ms: u64,
    /// Rollback triggers.
    pub triggers: Triggers,
}

impl Params {
    /// All-at-once with defaults (a request without a strategy).
    pub fn all_at_once() -> Self {
        Self {
            kind: Kind::AllAtOnce,
            initial_percentage: 100,
            increment_percentage: 100,
            increment_interval_ms: 0,
            batch_size: 0,
            max_unavailable: 0,
            max_surge: 0,
            min_healthy_ms: 0,
            switch_delay_ms: 0,
            success_percentage: 100,
            progress_deadline_ms: 10 * 60_000,
            offline_timeout_ms: 5 * 60_000,
            offline_policy: OfflinePolicy::Fail,
            auto_rollback: false,
            gradual_interval_ms: 10_000,
            triggers: Triggers::default(),
        }
    }
}

/// Normalises a strategy; the error names the parameter and the problem.
pub fn parse(spec: Option<&StrategySpec>) -> Result<Params, String> {
    let mut p = Params::all_at_once();
    let Some(s) = spec else { return Ok(p) };
    p.kind = match s.kind.as_str() {
        "all-at-once" => Kind::AllAtOnce,
        "canary" => Kind::Canary,
        "rolling" => Kind::Rolling,
        "blue-green" => Kind::BlueGreen,
        other => {
            return Err(format!(
                "strategy.type {other:?} is not one of all-at-once, canary, rolling, blue-green"
            ))
        }
    };
    let only = |name: &str, set: bool, kinds: &[Kind]| -> Result<(), String> {
        if set && !kinds.contains(&p.kind) {
            return Err(format!(
                "strategy.{name} does not apply to strategy {:?}",
                p.kind.as_str()
            ));
        }
        Ok(())
    };
    only(
        "initial_percentage",
        s.initial_percentage.is_some(),
        &[Kind::Canary],
    )?;
    only(
        "increment_percentage",
        s.increment_percentage.is_some(),
        &[Kind::Canary],
    )?;
    only(
        "increment_interval",
        s.increment_interval.is_some(),
        &[Kind::Canary],
    )?;
    for (name, set) in [
        ("batch_size", s.batch_size.is_some()),
        ("max_unavailable", s.max_unavailable.is_some()),
        ("max_surge", s.max_surge.is_some()),
        (
            "health_check_grace_period",
            s.health_check_grace_period.is_some(),
        ),
    ] {
        only(name, set, &[Kind::Rolling])?;
    }
    only(
        "validation_period",
        s.validation_period.is_some(),
        &[Kind::BlueGreen],
    )?;
    only("switch_delay", s.switch_delay.is_some(), &[Kind::BlueGreen])?;
    let dur = |name: &str, v: &Option<String>, default: u64| -> Result<u64, String> {
        v.as_deref()
            .map_or(Ok(default), duration_ms)
            .map_err(|e| format!("strategy.{name}: {e}"))
    };
    let pct = |name: &str, v: Option<u32>, default: u32, min: u32| -> Result<u32, String> {
        let v = v.unwrap_or(default);
        if v < min || v > 100 {
            return Err(format!(
                "strategy.{name}: {v} is not a percentage in {min}..=100"
            ));
        }
        Ok(v)
    };
    match p.kind {
        Kind::Canary => {
            p.initial_percentage = pct("initial_percentage", s.initial_percentage, 10, 1)?;
            p.increment_percentage = pct("increment_percentage", s.increment_percentage, 30, 1)?;
            p.increment_interval_ms = dur("increment_interval", &s.increment_interval, 60_000)?;
            p.min_healthy_ms = dur("min_healthy_time", &s.min_healthy_time, 10_000)?;
        }
        Kind::Rolling => {
            p.max_unavailable = s.max_unavailable.unwrap_or(1);
            if p.max_unavailable == 0 {
                return Err("strategy.max_unavailable: must be at least 1".into());
            }
            p.max_surge = s.max_surge.unwrap_or(0);
            // A batch is at most max_unavailable devices updating in place plus max_surge
            // devices that start the new version next to the old one (and so stay available).
            let in_flight = p.max_unavailable.saturating_add(p.max_surge);
            p.batch_size = s.batch_size.unwrap_or(in_flight).min(in_flight);
            if p.batch_size == 0 {
                return Err("strategy.batch_size: must be at least 1".into());
            }
            p.min_healthy_ms = dur(
                "health_check_grace_period",
                &s.health_check_grace_period,
                10_000,
            )?;
            if s.min_healthy_time.is_some() {
                p.min_healthy_ms = dur("min_healthy_time", &s.min_healthy_time, 10_000)?;
            }
        }
        Kind::BlueGreen => {
            p.min_healthy_ms = dur("validation_period", &s.validation_period, 30_000)?;
            p.switch_delay_ms = dur("switch_delay", &s.switch_delay, 30_000)?;
        }
        Kind::AllAtOnce => {
            p.min_healthy_ms = dur("min_healthy_time", &s.min_healthy_time, 0)?;
        }
    }
    p.success_percentage = pct("success_percentage", s.success_percentage, 100, 1)?;
    p.progress_deadline_ms = dur("progress_deadline", &s.progress_deadline, 10 * 60_000)?;
    p.offline_timeout_ms = dur("offline_timeout", &s.offline_timeout, 5 * 60_000)?;
    p.offline_policy = match s.offline_policy.as_deref() {
        None | Some("fail") => OfflinePolicy::Fail,
        Some("skip") => OfflinePolicy::Skip,
        Some(o) => return Err(format!("strategy.offline_policy {o:?} is not fail or skip")),
    };
    // All-at-once has no earlier step to protect: it rolls back only when asked to, so a
    // failed device stays visible as failed (as before staged rollouts existed).
    p.auto_rollback = s.auto_rollback.unwrap_or(p.kind != Kind::AllAtOnce);
    p.triggers.action = match s.rollback.as_deref() {
        None => None,
        Some(a) => Some(RollbackAction::parse(a).map_err(|e| format!("strategy.rollback: {e}"))?),
    };
    p.triggers.apply(&s.rollback_triggers)?;
    Ok(p)
}

/// Cumulative device counts at the end of each step for `n` targets. Never empty for `n > 0`,
/// strictly growing, ending at `n`.
pub fn step_sizes(p: &Params, n: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let mut out = Vec::new();
    let mut push = |c: usize| {
        let c = c.clamp(1, n);
        if out.last().is_none_or(|l| c > *l) {
            out.push(c);
        }
    };
    match p.kind {
        Kind::AllAtOnce | Kind::BlueGreen => push(n),
        Kind::Canary => {
            let mut pct = u64::from(p.initial_percentage);
            loop {
                let c = (n as u64 * pct.min(100)).div_ceil(100);
                push(usize::try_from(c).unwrap_or(n));
                if pct >= 100 {
                    break;
                }
                pct += u64::from(p.increment_percentage.max(1));
            }
        }
        Kind::Rolling => {
            let b = usize::try_from(p.batch_size.max(1)).unwrap_or(1);
            let mut c = 0;
            while c < n {
                c += b;
                push(c);
            }
        }
    }
    push(n);
    out
}
