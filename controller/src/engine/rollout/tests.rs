//! The engine on a simulated clock and a simulated fleet: no sleeping, no I/O.

use super::snapshot::{AppObs, DeviceObs, ErrorCounts};
use super::*;
use crate::model::strategy::{parse, step_sizes, OfflinePolicy};
use crate::model::{Phase, Rollout};
use fleet_schema::api::StrategySpec;
use fleet_schema::{AppPhase, HealthState};
use proptest::prelude::*;
use std::collections::BTreeMap;

const CTX: Ctx<'static> = Ctx {
    version: "2.0.0",
    has_healthcheck: false,
    deployment_id: "d-1",
};

/// A fleet whose devices react to the engine's actions.
struct Sim {
    /// Per device: (version, phase, restarts).
    devices: BTreeMap<String, (String, AppPhase, u32)>,
    /// Devices on which the new version fails to start.
    bad: Vec<String>,
    /// Max devices ever "updating" in place (touched, not yet running the new version): these
    /// are unavailable.
    max_updating: usize,
    /// Devices told to update make-before-break (they stay available while updating).
    surge: std::collections::BTreeSet<String>,
    /// Max devices ever updating, in place or make-before-break.
    max_in_flight: usize,
}

impl Sim {
    fn new(n: usize) -> Self {
        let devices = (0..n)
            .map(|i| {
                (
                    format!("d{i:05}"),
                    ("1.0.0".to_string(), AppPhase::Running, 0),
                )
            })
            .collect();
        Self {
            devices,
            bad: vec![],
            max_updating: 0,
            surge: Default::default(),
            max_in_flight: 0,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            devices: self
                .devices
                .iter()
                .map(|(d, (v, p, rc))| {
                    let app = AppObs {
                        version: v.clone(),
                        phase: p.clone(),
                        restart_count: *rc,
                        health: HealthState::Unknown,
                        error: None,
                        deployment_id: Some(CTX.deployment_id.to_string()),
                    };
                    (
                        d.clone(),
                        DeviceObs {
                            online: true,
                            last_seen: 0,
                            app: Some(app),
                        },
                    )
                })
                .collect(),
            errors: BTreeMap::new(),
        }
    }

    /// Applies actions: a touched device starts the new version (phase starting; it becomes
    /// running on the next `settle`), a reverted one runs the old version again.
    fn apply(&mut self, a: &Actions) {
        for d in &a.touch {
            self.devices
                .insert(d.clone(), ("2.0.0".into(), AppPhase::Starting, 0));
        }
        for d in &a.revert {
            self.devices
                .insert(d.clone(), ("1.0.0".into(), AppPhase::Running, 0));
            self.surge.remove(d);
        }
        self.surge.extend(a.surge.iter().cloned());
        let updating: Vec<&String> = self
            .devices
            .iter()
            .filter(|(_, (v, p, _))| v == "2.0.0" && *p != AppPhase::Running)
            .map(|(d, _)| d)
            .collect();
        let in_place = updating
            .iter()
            .filter(|d| !self.surge.contains(**d))
            .count();
        self.max_updating = self.max_updating.max(in_place);
        self.max_in_flight = self.max_in_flight.max(updating.len());
    }

    fn settle(&mut self) {
        for (d, (v, p, rc)) in self.devices.iter_mut() {
            if v == "2.0.0" && *p == AppPhase::Starting {
                if self.bad.contains(d) {
                    *rc += 1;
                    if *rc >= 3 {
                        *p = AppPhase::CrashLoop;
                    }
                } else {
                    *p = AppPhase::Running;
                }
            }
        }
    }

    /// Runs the rollout to a final phase, one tick per simulated second.
    fn run(&mut self, r: &mut Rollout) -> u64 {
        let mut now = 1_000_000;
        for _ in 0..100_000 {
            let a = tick(r, CTX, &self.snapshot(), now);
            self.apply(&a);
            if r.phase.is_final() {
                break;
            }
            now += 1_000;
            self.settle();
        }
        now
    }
}

fn rollout(spec: StrategySpec, n: usize) -> Rollout {
    let params = parse(Some(&spec)).expect("valid strategy");
    let targets = (0..n).map(|i| format!("d{i:05}")).collect();
    Rollout::new(params, targets, 1_000_000)
}

fn canary(initial: u32, inc: u32) -> StrategySpec {
    StrategySpec {
        kind: "canary".into(),
        initial_percentage: Some(initial),
        increment_percentage: Some(inc),
        increment_interval: Some("30s".into()),
        min_healthy_time: Some("5s".into()),
        ..StrategySpec::default()
    }
}

#[test]
fn canary_step_sizes_follow_the_percentages() {
    let p = parse(Some(&canary(10, 30))).expect("valid");
    assert_eq!(step_sizes(&p, 10_000), vec![1_000, 4_000, 7_000, 10_000]);
    assert_eq!(step_sizes(&p, 3), vec![1, 2, 3]);
    assert_eq!(step_sizes(&p, 1), vec![1]);
}

#[test]
fn a_canary_over_ten_thousand_simulated_devices_uses_the_right_step_sizes() {
    let mut r = rollout(canary(10, 30), 10_000);
    let mut sim = Sim::new(10_000);
    let mut touched_per_step = Vec::new();
    let mut now = 1_000_000;
    while !r.phase.is_final() && now < 1_000_000 + 3_600_000 {
        let a = tick(&mut r, CTX, &sim.snapshot(), now);
        if !a.touch.is_empty() {
            touched_per_step.push(a.touch.len());
        }
        sim.apply(&a);
        sim.settle();
        now += 5_000;
    }
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!(touched_per_step, vec![1_000, 3_000, 3_000, 3_000]);
    assert!(sim.devices.values().all(|(v, _, _)| v == "2.0.0"));
}

#[test]
fn a_good_canary_completes_every_step_at_its_pace() {
    let mut r = rollout(canary(10, 30), 20);
    let mut sim = Sim::new(20);
    let end = sim.run(&mut r);
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.fired);
    assert_eq!(r.step, 3);
    assert!(sim
        .devices
        .values()
        .all(|(v, p, _)| v == "2.0.0" && *p == AppPhase::Running));
    // Four steps, each at least the increment interval after the previous.
    assert!(
        end - 1_000_000 >= 3 * 30_000,
        "finished too fast: {}",
        end - 1_000_000
    );
}

#[test]
fn a_crashing_canary_rolls_back_after_the_first_step_and_spares_the_rest() {
    let mut r = rollout(canary(10, 30), 20);
    let mut sim = Sim::new(20);
    sim.bad = sim.devices.keys().cloned().collect();
    sim.run(&mut r);
    assert_eq!(r.phase, Phase::RolledBack);
    let fired = r.fired.as_ref().expect("a trigger fired");
    assert_eq!(fired.kind, "crash-loop", "{fired:?}");
    assert!(fired.observed >= 3 && fired.threshold == 3, "{fired:?}");
    assert_eq!(r.touched.len(), 2, "only the first step was touched");
    assert!(sim.devices.values().all(|(v, _, _)| v == "1.0.0"));
}

#[test]
fn progress_deadline_bounds_a_step() {
    let mut spec = canary(50, 50);
    spec.progress_deadline = Some("20s".into());
    let mut r = rollout(spec, 2);
    let snap = Sim::new(2).snapshot(); // devices never report the new version
    let mut now = 1_000_000;
    let mut reverted = vec![];
    while !r.phase.is_final() {
        reverted.extend(tick(&mut r, CTX, &snap, now).revert);
        now += 1_000;
    }
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(
        r.fired.as_ref().map(|f| f.kind.as_str()),
        Some("progress-deadline")
    );
    assert_eq!(reverted, vec!["d00000".to_string()]);
    assert!(now <= 1_000_000 + 23_000);
}

#[test]
fn offline_devices_fail_or_are_skipped_and_never_stall() {
    for (policy, expect) in [
        (OfflinePolicy::Skip, Phase::Succeeded),
        (OfflinePolicy::Fail, Phase::RolledBack),
    ] {
        let mut r = rollout(
            StrategySpec {
                kind: "all-at-once".into(),
                ..Default::default()
            },
            4,
        );
        r.params.offline_policy = policy;
        r.params.auto_rollback = true;
        r.params.offline_timeout_ms = 10_000;
        r.params.success_percentage = 75;
        let mut now = 1_000_000;
        let mut a = tick(&mut r, CTX, &Sim::new(4).snapshot(), now);
        let mut sim = Sim::new(4);
        sim.apply(&a);
        sim.settle();
        for _ in 0..1000 {
            if r.phase.is_final() {
                break;
            }
            now += 1_000;
            let mut snap = sim.snapshot();
            for d in ["d00000", "d00001"] {
                let o = snap.devices.get_mut(d).expect("present");
                o.online = false;
                o.app = None;
            }
            a = tick(&mut r, CTX, &snap, now);
            sim.apply(&a);
        }
        assert_eq!(r.phase, expect, "{policy:?}: {:?}", r.fired);
    }
}

#[test]
fn error_rate_rolls_back_gradually_in_reverse_batches() {
    let mut r = rollout(canary(50, 50), 4);
    let mut sim = Sim::new(4);
    let mut now = 1_000_000;
    let mut reverts = vec![];
    for _ in 0..200 {
        let mut snap = sim.snapshot();
        if r.step == 1 {
            for d in r.touched.iter() {
                snap.errors.insert(
                    d.clone(),
                    ErrorCounts {
                        requests: 100,
                        errors: 10,
                    },
                );
            }
        }
        let a = tick(&mut r, CTX, &snap, now);
        if !a.revert.is_empty() {
            reverts.push(a.revert.clone());
        }
        sim.apply(&a);
        sim.settle();
        if r.phase.is_final() {
            break;
        }
        now += 1_000;
    }
    assert_eq!(r.phase, Phase::RolledBack);
    let f = r.fired.as_ref().expect("fired");
    assert_eq!(
        (f.kind.as_str(), f.observed, f.threshold),
        ("error-rate", 100, 50),
        "{f:?}"
    );
    assert_eq!(
        reverts,
        vec![
            vec!["d00002".to_string(), "d00003".into()],
            vec!["d00000".into(), "d00001".into()]
        ],
        "last step first"
    );
}

#[test]
fn health_check_failure_of_half_the_step_for_a_minute_rolls_back() {
    let mut r = rollout(canary(50, 50), 4);
    let mut sim = Sim::new(4);
    let mut now = 1_000_000;
    let mut fired_at = None;
    for _ in 0..200 {
        let mut snap = sim.snapshot();
        if let Some(o) = snap.devices.get_mut("d00000") {
            if let Some(a) = o.app.as_mut().filter(|a| a.version == "2.0.0") {
                a.health = HealthState::Unhealthy;
            }
        }
        sim.apply(&tick(&mut r, CTX, &snap, now));
        sim.settle();
        if r.phase.is_final() {
            fired_at = Some(now);
            break;
        }
        now += 1_000;
    }
    let f = r.fired.as_ref().expect("fired");
    assert_eq!(f.kind, "health-check", "{f:?}");
    assert!(fired_at.expect("final") - 1_000_000 >= 60_000);
}

#[test]
fn max_surge_widens_rolling_batches_with_make_before_break_devices() {
    let spec = StrategySpec {
        kind: "rolling".into(),
        max_unavailable: Some(2),
        max_surge: Some(1),
        health_check_grace_period: Some("0s".into()),
        ..Default::default()
    };
    let mut r = rollout(spec, 7);
    assert_eq!(
        r.steps,
        vec![3, 6, 7],
        "batches of max_unavailable + max_surge"
    );
    let first = tick(&mut r, CTX, &Sim::new(7).snapshot(), 0);
    assert_eq!(first.touch, vec!["d00000", "d00001", "d00002"]);
    assert_eq!(
        first.surge,
        vec!["d00002"],
        "the third of each batch surges"
    );
    let slots: Vec<bool> = (0..7).map(|i| r.is_surge_slot(i)).collect();
    assert_eq!(slots, [false, false, true, false, false, true, false]);
    let no_surge = rollout(
        StrategySpec {
            kind: "rolling".into(),
            max_unavailable: Some(2),
            ..Default::default()
        },
        4,
    );
    assert!((0..4).all(|i| !no_surge.is_surge_slot(i)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn canary_batches_only_grow_and_end_at_the_whole_target(
        n in 1usize..5000, initial in 1u32..=100, inc in 1u32..=100,
    ) {
        let p = parse(Some(&canary(initial, inc))).expect("valid");
        let s = step_sizes(&p, n);
        prop_assert_eq!(s.last().copied(), Some(n));
        prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
        let first = (n as u64 * u64::from(initial)).div_ceil(100).max(1) as usize;
        prop_assert_eq!(s[0], first.min(n));
    }

    #[test]
    fn rolling_never_updates_more_than_max_unavailable(
        n in 1usize..60, max_unavailable in 1u32..8, surge in 0u32..4, batch in proptest::option::of(1u32..12),
    ) {
        let spec = StrategySpec {
            kind: "rolling".into(),
            max_unavailable: Some(max_unavailable),
            max_surge: Some(surge),
            batch_size: batch,
            health_check_grace_period: Some("2s".into()),
            ..Default::default()
        };
        let mut r = rollout(spec, n);
        let mut sim = Sim::new(n);
        sim.run(&mut r);
        prop_assert_eq!(r.phase, Phase::Succeeded);
        prop_assert!(sim.max_updating <= max_unavailable as usize, "{} > {}", sim.max_updating, max_unavailable);
        prop_assert!(sim.max_in_flight <= (max_unavailable + surge) as usize);
        if batch.is_none() {
            let want = ((max_unavailable + surge) as usize).min(n);
            prop_assert_eq!(sim.max_in_flight, want, "surge widens the batch");
        }
        prop_assert!(sim.devices.values().all(|(v, _, _)| v == "2.0.0"));
    }

    #[test]
    fn every_device_ends_on_one_version_and_rollback_restores_every_touched_device(
        n in 1usize..80, initial in 1u32..60, inc in 1u32..60, bad_mask in proptest::collection::vec(any::<bool>(), 80),
    ) {
        let mut r = rollout(canary(initial, inc), n);
        let mut sim = Sim::new(n);
        sim.bad = sim.devices.keys().zip(&bad_mask).filter(|(_, b)| **b).map(|(d, _)| d.clone()).collect();
        sim.run(&mut r);
        prop_assert!(r.phase == Phase::Succeeded || r.phase == Phase::RolledBack);
        let versions: Vec<&str> = sim.devices.values().map(|(v, _, _)| v.as_str()).collect();
        if r.phase == Phase::RolledBack {
            prop_assert!(versions.iter().all(|v| *v == "1.0.0"), "{versions:?}");
            prop_assert!(r.touched.iter().all(|d| r.reverted.contains(d)));
            let untouched_bad = sim.bad.iter().all(|d| !r.touched.contains(d) || r.reverted.contains(d));
            prop_assert!(untouched_bad);
        } else {
            prop_assert!(versions.iter().all(|v| *v == "2.0.0"), "{versions:?}");
        }
    }
}
