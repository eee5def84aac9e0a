//! Supervisor tests on a simulated clock: time is an `Instant` the test advances by hand.

use super::*;

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
    let mut s = Supervisor::adopt(42, t0);
    assert!(s.is_running());
    assert_eq!(s.pid(), Some(42));
    s.on_event(exited(41), t0);
    assert!(s.is_running(), "exit of another pid is ignored");
    s.on_event(exited(42), t0 + secs(1));
    assert_eq!(s.restart_count(), 1);
    assert_eq!(s.on_tick(t0 + secs(2)), vec![Effect::Spawn]);
}
