//! Upgrade, a failed or interrupted install, an agent restart with its app running, and a
//! rollback to a version still on disk.

use super::fake::Call;
use super::{desired, world, Harness};
use crate::daemon::executor::FoundUnit;
use crate::daemon::FETCH_RETRY_INITIAL;
use crate::runtime::systemd::watch::Run;
use crate::store::ProcRecord;
use crate::supervisor::STARTUP_WINDOW;
use crate::telemetry::procfs::GroupSample;
use fleet_schema::AppPhase;
use nix::sys::signal::Signal;
use std::time::Duration;

fn download(version: &str) -> Call {
    Call::Download {
        app: "web".into(),
        version: version.into(),
    }
}

fn launch(version: &str, pid: u32) -> Call {
    Call::Launch {
        app: "web".into(),
        version: version.into(),
        pid,
    }
}

fn term(pid: u32) -> Call {
    Call::Signal {
        pid,
        signal: Signal::SIGTERM,
    }
}

#[test]
fn upgrade_downloads_installs_starts_the_new_version_then_stops_the_old() {
    let mut h = Harness::start(world(
        desired(1, &[("web", "1.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 500 }]);

    h.desire(desired(2, &[("web", "2.0.0")]));
    assert_eq!(h.calls(), [download("2.0.0")]);
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("2.0.0", AppPhase::Downloading)
    );
    assert_eq!(s.running_version.as_deref(), Some("1.0.0"));

    h.downloaded("web", "2.0.0");
    assert_eq!(
        h.calls(),
        [Call::Install {
            app: "web".into(),
            version: "2.0.0".into(),
            keep: vec!["1.0.0".into()],
        }],
        "installs keeping the running version for a rollback"
    );
    assert_eq!(h.status("web").phase, AppPhase::Installing);

    h.installed("web", "2.0.0");
    assert_eq!(h.calls(), [launch("2.0.0", 1001)]);
    let rec = h.persisted("web");
    assert!(rec.installed.contains("2.0.0") && rec.installed.contains("1.0.0"));
    assert_eq!(
        rec.current.as_deref(),
        Some("1.0.0"),
        "not current before it runs"
    );

    // The old version serves until the new one is past its startup window.
    h.advance(STARTUP_WINDOW / 2);
    assert_eq!(h.calls(), []);
    h.advance(STARTUP_WINDOW);
    assert_eq!(h.calls(), [term(500)]);
    assert_eq!(h.persisted("web").current.as_deref(), Some("2.0.0"));

    h.exited("web", "1.0.0", 500);
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("2.0.0", AppPhase::Running)
    );
    assert_eq!(s.last_error, None);
    let procs = &h.exec.world().procs;
    assert!(procs.contains_key(&("web".into(), "2.0.0".into())));
    assert!(
        !procs.contains_key(&("web".into(), "1.0.0".into())),
        "the old process record is forgotten once it ended"
    );
}

#[test]
fn a_failed_install_is_reported_keeps_the_old_version_and_is_retried_after_the_backoff() {
    let mut h = Harness::start(world(
        desired(1, &[("web", "1.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 500 }]);
    h.desire(desired(2, &[("web", "2.0.0")]));
    assert_eq!(h.calls(), [download("2.0.0")]);
    h.downloaded("web", "2.0.0");
    assert!(matches!(h.calls()[..], [Call::Install { .. }]));

    h.install_failed(
        "web",
        "2.0.0",
        "install failed: cannot write: no space left on device",
    );
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("2.0.0", AppPhase::Failed)
    );
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no space left")),
        "{s:?}"
    );
    assert_eq!(s.running_version.as_deref(), Some("1.0.0"));
    assert_eq!(
        h.calls(),
        [],
        "the old version is left alone, nothing retried yet"
    );
    assert_eq!(h.persisted("web").current.as_deref(), Some("1.0.0"));

    h.advance(FETCH_RETRY_INITIAL - Duration::from_millis(1));
    assert_eq!(h.calls(), [], "not before the backoff");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.calls(),
        [download("2.0.0")],
        "the retry fetches again (the download was consumed by the install)"
    );
}

#[test]
fn an_agent_killed_during_an_install_fetches_again_at_restart_and_keeps_the_old_version() {
    // The new generation was persisted, the install never finished: only 1.0.0 is on disk.
    let h = Harness::start(world(
        desired(2, &[("web", "2.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 500 }, download("2.0.0")]);
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("2.0.0", AppPhase::Downloading)
    );
    assert_eq!(s.running_version.as_deref(), Some("1.0.0"));
}

#[test]
fn a_restarted_agent_adopts_its_running_app_and_reinstalls_nothing() {
    let mut h = Harness::start(world(
        desired(1, &[("web", "1.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 500 }]);
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("1.0.0", AppPhase::Running)
    );
    h.advance(Duration::from_secs(600));
    assert_eq!(h.calls(), [], "no download, install or second start");

    // Without a running process the same state starts it, from disk.
    let h = Harness::start(world(
        desired(1, &[("web", "1.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        None,
    ));
    assert_eq!(h.calls(), [launch("1.0.0", 1001)]);
}

#[test]
fn a_restarted_agent_forgets_the_record_of_a_process_that_is_gone() {
    let mut w = world(
        desired(1, &[("web", "1.0.0")]),
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    );
    // An older version's process ended while the agent was down.
    w.procs.insert(
        ("web".into(), "0.9.0".into()),
        ProcRecord {
            app: "web".into(),
            version: "0.9.0".into(),
            pid: 400,
            start_time: 3,
            exe: "/data/apps/web/0.9.0/web".into(),
        },
    );
    let h = Harness::start(w);
    assert_eq!(
        h.calls(),
        [Call::Adopt { pid: 400 }, Call::Adopt { pid: 500 }],
        "nothing started or signalled"
    );
    let procs: Vec<(String, String)> = h.exec.world().procs.keys().cloned().collect();
    assert_eq!(procs, [("web".to_string(), "1.0.0".to_string())]);
}

#[test]
fn rollback_to_a_version_still_on_disk_starts_it_without_a_download() {
    let mut h = Harness::start(world(
        desired(2, &[("web", "2.0.0")]),
        "web",
        &["1.0.0", "2.0.0"],
        "2.0.0",
        Some(("2.0.0", 600)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 600 }]);

    h.desire(desired(3, &[("web", "1.0.0")]));
    assert_eq!(
        h.calls(),
        [launch("1.0.0", 1001)],
        "no download, no install"
    );
    h.advance(STARTUP_WINDOW + Duration::from_millis(1));
    assert_eq!(h.calls(), [term(600)]);
    h.exited("web", "2.0.0", 600);
    let s = h.status("web");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("1.0.0", AppPhase::Running)
    );
    assert_eq!(h.persisted("web").current.as_deref(), Some("1.0.0"));
}

#[test]
fn a_restarted_agent_follows_its_running_unit_and_removes_units_no_longer_desired() {
    let mut w = world(
        desired(1, &[("svc", "1.0.0")]),
        "svc",
        &["1.0.0"],
        "1.0.0",
        None,
    );
    w.units = vec![
        FoundUnit {
            app: "svc".into(),
            version: "0.9.0".into(),
            run: None,
        },
        FoundUnit {
            app: "svc".into(),
            version: "1.0.0".into(),
            run: Some(Run {
                pid: 700,
                started: 1,
            }),
        },
    ];
    let mut h = Harness::start(w);
    assert_eq!(
        h.calls(),
        [
            Call::RemoveUnit {
                app: "svc".into(),
                version: "0.9.0".into(),
            },
            Call::FollowUnit {
                app: "svc".into(),
                version: "1.0.0".into(),
                token: 1,
            },
        ],
        "the running unit is followed, never started a second time"
    );
    let s = h.status("svc");
    assert_eq!(
        (s.version.as_str(), s.phase.clone()),
        ("1.0.0", AppPhase::Running)
    );
    h.advance(Duration::from_secs(600));
    assert_eq!(h.calls(), []);
}

#[test]
fn an_app_over_its_memory_limit_is_killed_when_metrics_are_sampled() {
    let mut want = desired(1, &[("web", "1.0.0")]);
    want.apps[0].spec.resources.memory_limit = Some(64 << 20);
    let mut h = Harness::start(world(
        want,
        "web",
        &["1.0.0"],
        "1.0.0",
        Some(("1.0.0", 500)),
    ));
    assert_eq!(h.calls(), [Call::Adopt { pid: 500 }]);
    let interval = h.daemon.cfg.telemetry.metrics_interval;

    // Within the limit: sampled, left alone.
    h.exec.world().samples.insert(
        500,
        GroupSample {
            rss_bytes: 32 << 20,
            ..GroupSample::default()
        },
    );
    h.advance(interval);
    assert_eq!(h.calls(), []);

    h.exec.world().samples.insert(
        500,
        GroupSample {
            rss_bytes: 65 << 20,
            ..GroupSample::default()
        },
    );
    h.advance(interval);
    assert_eq!(
        h.calls(),
        [Call::Signal {
            pid: 500,
            signal: Signal::SIGKILL,
        }]
    );
    h.exited("web", "1.0.0", 500);
    let s = h.status("web");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("memory limit exceeded")),
        "{s:?}"
    );
}
