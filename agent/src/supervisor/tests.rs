//! Supervisor tests on a simulated clock: time is an `Instant` the test advances by hand.

use super::*;
use fleet_schema::app_spec::RestartPolicy;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn exited(pid: u32) -> SupEvent {
    SupEvent::Exited {
        pid,
        how: "exit status 1".into(),
    }
}

#[test]
fn becomes_running_after_the_startup_window() {
    let t0 = Instant::now();
    let (mut s, fx) = Supervisor::start(false);
    assert_eq!(fx, vec![Effect::Spawn]);
    assert!(s.on_event(SupEvent::Spawned(10), t0).is_empty());
    assert_eq!(s.phase(), AppPhase::Starting);
    assert_eq!(s.deadline(), Some(t0 + STARTUP_WINDOW));
    s.on_tick(t0 + Duration::from_millis(500));
    assert_eq!(s.phase(), AppPhase::Starting);
    s.on_tick(t0 + STARTUP_WINDOW);
    assert_eq!(s.phase(), AppPhase::Running);
    assert!(s.is_running());
}

#[test]
fn restarts_with_doubling_backoff_and_reports_crash_loop() {
    let mut now = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    let mut delays = Vec::new();
    for (pid, round) in (100..).zip(0..5u32) {
        s.on_event(SupEvent::Spawned(pid), now);
        now += secs(2);
        s.on_tick(now);
        assert!(s.is_running(), "round {round}");
        let fx = s.on_event(exited(pid), now);
        assert_eq!(
            fx,
            vec![Effect::Kill(pid)],
            "leftovers of the group are swept"
        );
        let until = s.deadline().expect("restart scheduled");
        delays.push((until - now).as_secs());
        assert_eq!(s.restart_count(), round + 1);
        let expect_loop = round + 1 >= 3;
        assert_eq!(
            s.phase() == AppPhase::CrashLoop,
            expect_loop,
            "round {round}: {:?}",
            s.phase()
        );
        assert!(s.on_tick(until - Duration::from_millis(1)).is_empty());
        now = until;
        assert_eq!(s.on_tick(now), vec![Effect::Spawn]);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16]);
    assert_eq!(s.last_error(), Some("exited: exit status 1"));
}

#[test]
fn backoff_caps_at_a_minute_and_resets_after_stable_running() {
    let mut now = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    for pid in 0..10 {
        s.on_event(SupEvent::Spawned(pid), now);
        s.on_event(exited(pid), now);
        now = s.deadline().expect("scheduled");
        s.on_tick(now);
    }
    s.on_event(SupEvent::Spawned(50), now);
    s.on_event(exited(50), now);
    assert_eq!(s.deadline(), Some(now + RESTART_MAX));
    now += RESTART_MAX;
    s.on_tick(now);
    s.on_event(SupEvent::Spawned(51), now);
    now += STARTUP_WINDOW;
    s.on_tick(now);
    assert_eq!(s.phase(), AppPhase::CrashLoop);
    now += STABLE_AFTER;
    s.on_tick(now);
    assert_eq!(
        s.phase(),
        AppPhase::Running,
        "stable running clears crash-loop"
    );
    s.on_event(exited(51), now);
    assert_eq!(s.deadline(), Some(now + RESTART_INITIAL), "backoff reset");
    assert_eq!(s.phase(), AppPhase::Starting);
}

#[test]
fn crash_loop_needs_three_restarts_within_five_minutes() {
    let mut now = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    for pid in 0..4 {
        s.on_event(SupEvent::Spawned(pid), now);
        now += STARTUP_WINDOW + STABLE_AFTER;
        s.on_tick(now);
        now += secs(100);
        s.on_event(exited(pid), now);
        now = s.deadline().expect("scheduled");
        s.on_tick(now);
        assert_ne!(s.phase(), AppPhase::CrashLoop, "restarts are spread out");
    }
    assert_eq!(s.restart_count(), 4);
}

#[test]
fn stop_sends_term_then_kill_after_the_grace_period() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    s.on_event(SupEvent::Spawned(7), t0);
    s.on_tick(t0 + secs(2));
    let fx = s.on_event(SupEvent::Stop, t0 + secs(3));
    assert_eq!(fx, vec![Effect::Terminate(7)]);
    assert!(s.is_stopping());
    assert_eq!(s.deadline(), Some(t0 + secs(3) + STOP_GRACE));
    assert!(s.on_tick(t0 + secs(4)).is_empty());
    assert_eq!(s.on_tick(t0 + secs(8)), vec![Effect::Kill(7)]);
    assert_eq!(s.deadline(), None);
    s.on_event(exited(7), t0 + secs(9));
    assert!(s.is_stopped());
    assert!(!s.is_live());
}

#[test]
fn graceful_exit_ends_stopping_without_waiting() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    s.on_event(SupEvent::Spawned(7), t0);
    s.on_event(SupEvent::Stop, t0);
    assert_eq!(s.on_event(exited(7), t0), vec![Effect::Kill(7)]);
    assert!(s.is_stopped());
}

#[test]
fn stop_while_waiting_or_spawning() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    s.on_event(SupEvent::Spawned(1), t0);
    s.on_event(exited(1), t0);
    assert!(s.on_event(SupEvent::Stop, t0).is_empty());
    assert!(s.is_stopped());

    let (mut s, _) = Supervisor::start(false);
    s.on_event(SupEvent::Stop, t0);
    assert_eq!(
        s.on_event(SupEvent::Spawned(2), t0),
        vec![Effect::Terminate(2)]
    );
}

#[test]
fn failed_upgrade_with_fallback_is_final() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(true);
    s.on_event(SupEvent::Spawned(3), t0);
    s.on_event(exited(3), t0 + Duration::from_millis(200));
    assert!(s.is_failed());
    assert_eq!(s.phase(), AppPhase::Failed);
    assert_eq!(s.deadline(), None);
    assert_eq!(s.last_error(), Some("exited during startup: exit status 1"));

    let (mut s, _) = Supervisor::start(true);
    s.on_event(SupEvent::SpawnFailed("exec format error".into()), t0);
    assert!(s.is_failed());
    assert_eq!(s.last_error(), Some("cannot start: exec format error"));
}

#[test]
fn an_upgrade_that_ran_is_restarted_like_any_app() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(true);
    s.on_event(SupEvent::Spawned(3), t0);
    s.on_tick(t0 + STARTUP_WINDOW);
    assert!(s.is_running());
    let t1 = t0 + Duration::from_secs(5);
    s.on_event(exited(3), t1);
    assert_eq!(s.on_tick(t1 + RESTART_INITIAL), vec![Effect::Spawn]);
    s.on_event(
        SupEvent::SpawnFailed("unit failed".into()),
        t1 + RESTART_INITIAL,
    );
    assert!(s.is_live() && !s.is_failed(), "restarted, not given up");
    assert_eq!(s.restart_count(), 2);
}

#[test]
fn early_exit_without_fallback_is_retried() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start(false);
    s.on_event(SupEvent::SpawnFailed("no such file".into()), t0);
    assert!(s.is_live());
    assert_eq!(s.deadline(), Some(t0 + RESTART_INITIAL));
}

#[test]
fn adopted_process_is_running_and_restarted_when_it_dies() {
    let t0 = Instant::now();
    let mut s = Supervisor::adopt(42, t0, Policy::default());
    assert!(s.is_running());
    assert_eq!(s.pid(), Some(42));
    s.on_event(exited(41), t0);
    assert!(s.is_running(), "exit of another pid is ignored");
    s.on_event(exited(42), t0 + secs(1));
    assert_eq!(s.restart_count(), 1);
    assert_eq!(s.on_tick(t0 + secs(2)), vec![Effect::Spawn]);
}

fn policy(restart: RestartPolicy) -> Policy {
    Policy {
        restart,
        ..Policy::default()
    }
}

fn exit_how(pid: u32, how: &str) -> SupEvent {
    SupEvent::Exited {
        pid,
        how: how.into(),
    }
}

#[test]
fn restart_policies_decide_which_exits_restart() {
    let t0 = Instant::now();
    let run = |p: RestartPolicy, how: &str| {
        let (mut s, _) = Supervisor::start_with(false, policy(p));
        s.on_event(SupEvent::Spawned(5), t0);
        s.on_tick(t0 + secs(2));
        assert!(s.is_running());
        s.on_event(exit_how(5, how), t0 + secs(3));
        s
    };
    let s = run(RestartPolicy::Always, CLEAN_EXIT);
    assert!(s.is_live(), "always restarts a clean exit");
    let s = run(RestartPolicy::OnFailure, CLEAN_EXIT);
    assert!(
        !s.is_live() && s.is_failed(),
        "on-failure keeps a clean exit"
    );
    assert_eq!(s.phase(), AppPhase::Stopped);
    assert_eq!(s.deadline(), None);
    let s = run(RestartPolicy::OnFailure, "exit status 3");
    assert!(s.is_live(), "on-failure restarts a failure");
    assert_eq!(s.deadline(), Some(t0 + secs(3) + RESTART_INITIAL));
    let s = run(RestartPolicy::Never, "killed by SIGSEGV");
    assert!(!s.is_live());
    assert_eq!(s.phase(), AppPhase::Failed);
    assert_eq!(s.last_error(), Some("exited: killed by SIGSEGV"));
    assert_eq!(s.restart_count(), 0);
}

#[test]
fn with_a_health_check_running_waits_for_the_first_healthy_probe() {
    let t0 = Instant::now();
    let p = Policy {
        wait_healthy: true,
        startup_timeout: secs(10),
        ..Policy::default()
    };
    let (mut s, _) = Supervisor::start_with(false, p);
    s.on_event(SupEvent::Spawned(9), t0);
    assert!(s.on_tick(t0 + secs(5)).is_empty());
    assert_eq!(s.phase(), AppPhase::Starting, "alive is not enough");
    s.on_event(SupEvent::Healthy, t0 + secs(6));
    assert!(s.is_running());
    assert_eq!(s.phase(), AppPhase::Running);
}

#[test]
fn startup_timeout_kills_and_restarts_an_app_that_never_gets_healthy() {
    let t0 = Instant::now();
    let p = Policy {
        wait_healthy: true,
        startup_timeout: secs(10),
        stop_grace: secs(1),
        ..Policy::default()
    };
    let (mut s, _) = Supervisor::start_with(false, p);
    s.on_event(SupEvent::Spawned(9), t0);
    assert_eq!(s.deadline(), Some(t0 + secs(10)));
    assert_eq!(s.on_tick(t0 + secs(10)), vec![Effect::Kill(9)]);
    assert_eq!(s.deadline(), None, "waits for the exit");
    s.on_event(SupEvent::Healthy, t0 + secs(10));
    assert!(!s.is_running(), "a late healthy probe does not rescue it");
    s.on_event(exit_how(9, "killed by SIGKILL"), t0 + secs(10));
    assert_eq!(s.restart_count(), 1);
    assert_eq!(
        s.last_error(),
        Some("not healthy within the startup timeout of 10000 ms")
    );
    assert_eq!(s.deadline(), Some(t0 + secs(10) + RESTART_INITIAL));
}

#[test]
fn stop_grace_comes_from_the_policy() {
    let t0 = Instant::now();
    let p = Policy {
        stop_grace: Duration::from_millis(300),
        ..Policy::default()
    };
    let (mut s, _) = Supervisor::start_with(false, p);
    s.on_event(SupEvent::Spawned(4), t0);
    assert_eq!(s.on_event(SupEvent::Stop, t0), vec![Effect::Terminate(4)]);
    assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(300)));
}

#[test]
fn a_limit_breach_kills_the_process_and_is_the_reported_reason() {
    let t0 = Instant::now();
    let (mut s, _) = Supervisor::start_with(false, policy(RestartPolicy::OnFailure));
    s.on_event(SupEvent::Spawned(8), t0);
    s.on_tick(t0 + secs(2));
    let fx = s.on_event(
        SupEvent::LimitExceeded("memory limit exceeded".into()),
        t0 + secs(3),
    );
    assert_eq!(fx, vec![Effect::Kill(8)]);
    s.on_event(exit_how(8, CLEAN_EXIT), t0 + secs(3));
    assert_eq!(s.last_error(), Some("memory limit exceeded"));
    assert!(
        s.is_live(),
        "a kill for a limit is a failure, so on-failure restarts"
    );
}

/// The seed's `edge-inference` (a binary and an image): each component gets a supervisor with
/// its own policy, and one failing does not touch the other's.
#[test]
fn components_of_one_app_are_supervised_each_with_its_own_policy() {
    let app = fleet_schema::manifest::parse_yaml(include_str!(
        "../../../schema/src/manifest/seed_app.yaml"
    ))
    .expect("the seed's manifest");
    let parts = app.components();
    let engine_policy = Policy::from_spec(&parts[0].spec);
    let model_policy = Policy::from_spec(&parts[1].spec);
    assert!(
        engine_policy.wait_healthy,
        "the engine has the app's health check"
    );
    assert!(!model_policy.wait_healthy, "the image has none of its own");
    for p in [&engine_policy, &model_policy] {
        assert_eq!(p.startup_timeout, secs(30));
        assert_eq!(p.restart, RestartPolicy::Always);
    }

    // An upgrade: the image's new version dies at once and fails (the old one keeps serving),
    // the engine's new version runs on, each in its own supervisor.
    let t0 = Instant::now();
    // (Without waiting for a health verdict here: that is the health tracker's part.)
    let engine_policy = Policy {
        wait_healthy: false,
        ..engine_policy
    };
    let (mut engine, _) = Supervisor::start_with(true, engine_policy);
    let (mut model, _) = Supervisor::start_with(true, model_policy);
    engine.on_event(SupEvent::Spawned(1), t0);
    model.on_event(SupEvent::Spawned(2), t0);
    model.on_event(exited(2), t0 + Duration::from_millis(100));
    assert!(model.is_failed(), "{:?}", model.phase());
    engine.on_tick(t0 + STARTUP_WINDOW);
    assert!(engine.is_running());
    assert_eq!(engine.restart_count(), 0);
}
