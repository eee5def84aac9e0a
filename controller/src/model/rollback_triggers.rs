//! The automatic rollback triggers' thresholds: the seed's `DefaultTriggers`, overridden per
//! deployment by `strategy.rollback_triggers`. Normalised to integers here so the pure engine
//! never parses.

use fleet_schema::api::RollbackTriggerSpec;
use fleet_schema::manifest::units::duration_ms;
use serde::{Deserialize, Serialize};

/// How touched devices go back to the previous version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackAction {
    /// Every touched device at once.
    Immediate,
    /// Step batches in reverse order, one per `gradual_interval_ms`.
    Gradual,
}

impl RollbackAction {
    /// Parses the API spelling; the error says what is allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "immediate" => Ok(RollbackAction::Immediate),
            "gradual" => Ok(RollbackAction::Gradual),
            o => Err(format!("{o:?} is not immediate or gradual")),
        }
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackAction::Immediate => "immediate",
            RollbackAction::Gradual => "gradual",
        }
    }
}

/// Thresholds of the automatic rollback triggers (the seed's `DefaultTriggers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    /// Crash loop: this many restarts ...
    pub crash_restarts: u32,
    /// ... within this window.
    pub crash_window_ms: u64,
    /// Error rate above this, per mille of requests ...
    pub error_permille: u64,
    /// ... over this window.
    pub error_window_ms: u64,
    /// Health check: this percentage of the step's devices unhealthy ...
    pub unhealthy_percentage: u32,
    /// ... for this long.
    pub unhealthy_for_ms: u64,
    /// Action override for every trigger (`None`: each trigger's own action).
    pub action: Option<RollbackAction>,
    /// What a crash loop does (seed: immediate).
    #[serde(default = "immediate")]
    pub crash_action: RollbackAction,
    /// What a high error rate does (seed: gradual).
    #[serde(default = "gradual")]
    pub error_action: RollbackAction,
    /// What a health-check failure does (seed: immediate).
    #[serde(default = "immediate")]
    pub health_action: RollbackAction,
}

fn immediate() -> RollbackAction {
    RollbackAction::Immediate
}

fn gradual() -> RollbackAction {
    RollbackAction::Gradual
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            crash_restarts: 3,
            crash_window_ms: 5 * 60_000,
            error_permille: 50,
            error_window_ms: 2 * 60_000,
            unhealthy_percentage: 50,
            unhealthy_for_ms: 60_000,
            action: None,
            crash_action: immediate(),
            error_action: gradual(),
            health_action: immediate(),
        }
    }
}

/// The trigger types, by their API spelling (the seed's Go names are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TriggerType {
    CrashLoop,
    HighErrorRate,
    HealthCheckFailure,
}

impl TriggerType {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "crash-loop" | "CrashLoopBackoff" => Ok(Self::CrashLoop),
            "high-error-rate" | "HighErrorRate" => Ok(Self::HighErrorRate),
            "health-check-failure" | "HealthCheckFailure" => Ok(Self::HealthCheckFailure),
            o => Err(format!(
                "{o:?} is not one of crash-loop, high-error-rate, health-check-failure"
            )),
        }
    }
}

/// A fraction in (0, 1] as an integer out of `scale` (at least 1).
fn fraction(v: f64, scale: f64, field: &str) -> Result<u64, String> {
    if !v.is_finite() || v <= 0.0 || v > 1.0 {
        return Err(format!(
            "{field}: {v} is not a fraction in (0, 1] (0.05 means 5%)"
        ));
    }
    // In range by the check above: at most `scale`, at least 1 after the max.
    Ok(((v * scale).round() as u64).max(1))
}

impl Triggers {
    /// Applies the deployment's `rollback_triggers` over the defaults; the error names the entry
    /// and the field.
    pub fn apply(&mut self, specs: &[RollbackTriggerSpec]) -> Result<(), String> {
        let mut seen = Vec::new();
        for (i, t) in specs.iter().enumerate() {
            let at = |f: &str| format!("strategy.rollback_triggers[{i}].{f}");
            let kind = TriggerType::parse(&t.kind).map_err(|e| format!("{}: {e}", at("type")))?;
            if seen.contains(&kind) {
                return Err(format!("{}: {:?} is listed twice", at("type"), t.kind));
            }
            seen.push(kind);
            let window = t
                .duration
                .as_deref()
                .map(duration_ms)
                .transpose()
                .map_err(|e| format!("{}: {e}", at("duration")))?;
            if window == Some(0) {
                return Err(format!("{}: must be longer than 0s", at("duration")));
            }
            let action = t
                .action
                .as_deref()
                .map(RollbackAction::parse)
                .transpose()
                .map_err(|e| format!("{}: {e}", at("action")))?;
            match kind {
                TriggerType::CrashLoop => {
                    let n = t.threshold;
                    if !(1.0..=1_000_000.0).contains(&n) || n.fract() != 0.0 {
                        return Err(format!(
                            "{}: {n} is not a whole number of restarts (at least 1)",
                            at("threshold")
                        ));
                    }
                    // Whole and within u32 by the check above.
                    self.crash_restarts = n as u32;
                    self.crash_window_ms = window.unwrap_or(self.crash_window_ms);
                    self.crash_action = action.unwrap_or(self.crash_action);
                }
                TriggerType::HighErrorRate => {
                    self.error_permille = fraction(t.threshold, 1000.0, &at("threshold"))?;
                    self.error_window_ms = window.unwrap_or(self.error_window_ms);
                    self.error_action = action.unwrap_or(self.error_action);
                }
                TriggerType::HealthCheckFailure => {
                    let pct = fraction(t.threshold, 100.0, &at("threshold"))?;
                    self.unhealthy_percentage =
                        u32::try_from(pct).expect("a fraction of 100 fits in u32");
                    self.unhealthy_for_ms = window.unwrap_or(self.unhealthy_for_ms);
                    self.health_action = action.unwrap_or(self.health_action);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, threshold: f64, duration: Option<&str>) -> RollbackTriggerSpec {
        RollbackTriggerSpec {
            kind: kind.into(),
            threshold,
            duration: duration.map(str::to_string),
            action: None,
        }
    }

    #[test]
    fn overrides_replace_only_the_listed_triggers() {
        let mut t = Triggers::default();
        t.apply(&[
            spec("high-error-rate", 0.1, Some("20s")),
            RollbackTriggerSpec {
                action: Some("immediate".into()),
                ..spec("HealthCheckFailure", 0.25, Some("5s"))
            },
        ])
        .expect("valid");
        assert_eq!((t.error_permille, t.error_window_ms), (100, 20_000));
        assert_eq!(t.error_action, RollbackAction::Gradual, "seed default kept");
        assert_eq!((t.unhealthy_percentage, t.unhealthy_for_ms), (25, 5_000));
        assert_eq!(t.health_action, RollbackAction::Immediate);
        assert_eq!(
            (t.crash_restarts, t.crash_window_ms),
            (3, 300_000),
            "untouched"
        );
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        let cases = [
            (spec("slow", 1.0, None), "rollback_triggers[0].type"),
            (
                spec("crash-loop", 2.5, None),
                "[0].threshold: 2.5 is not a whole",
            ),
            (
                spec("high-error-rate", 5.0, None),
                "[0].threshold: 5 is not a fraction",
            ),
            (spec("high-error-rate", 0.05, Some("soon")), "[0].duration"),
            (spec("crash-loop", 3.0, Some("0s")), "longer than 0s"),
        ];
        for (s, want) in cases {
            let err = Triggers::default().apply(&[s]).expect_err(want);
            assert!(err.contains(want), "{err} should contain {want}");
        }
        let twice = [
            spec("crash-loop", 3.0, None),
            spec("CrashLoopBackoff", 2.0, None),
        ];
        let err = Triggers::default().apply(&twice).expect_err("duplicate");
        assert!(
            err.contains("rollback_triggers[1].type") && err.contains("twice"),
            "{err}"
        );
        let bad_action = RollbackTriggerSpec {
            action: Some("later".into()),
            ..spec("crash-loop", 3.0, None)
        };
        let err = Triggers::default()
            .apply(&[bad_action])
            .expect_err("action");
        assert!(err.contains("[0].action: \"later\""), "{err}");
    }
}
