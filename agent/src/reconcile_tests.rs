//! Reconciler tests: plain data in, actions out, time simulated.

use super::*;
use fleet_schema::{ArtifactType, DesiredApp};
use std::time::Duration;

fn artifact(name: &str, version: &str, kind: ArtifactType) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        version: version.into(),
        kind,
        size: 3,
        sha256: "ab".into(),
        url: format!("http://ctl/{name}/{version}"),
        ..Default::default()
    }
}

fn desired(apps: &[(&str, &str)]) -> DesiredState {
    DesiredState {
        device_id: "d1".into(),
        generation: 1,
        apps: apps
            .iter()
            .map(|(n, v)| DesiredApp {
                name: (*n).into(),
                version: (*v).into(),
                artifact: artifact(n, v, ArtifactType::Binary),
                deployment_id: Some("dep".into()),
                spec: Default::default(),
                rollout: None,
                components: Vec::new(),
            })
            .collect(),
        issued_at: 0,
    }
}

fn proc_view(phase: AppPhase) -> ProcView {
    ProcView {
        live: !matches!(phase, AppPhase::Stopped | AppPhase::Failed),
        running: phase == AppPhase::Running,
        stopping: phase == AppPhase::Stopped,
        failed: phase == AppPhase::Failed,
        phase,
        restart_count: 0,
        last_error: None,
        health: Default::default(),
        health_message: None,
        running_since: None,
    }
}

fn one(app: AppObserved) -> Observed {
    Observed::from([("web".to_string(), app)])
}

#[test]
fn nothing_before_a_desired_state() {
    assert!(reconcile(None, &Observed::new(), Instant::now()).is_empty());
}

#[test]
fn fresh_app_is_downloaded_installed_then_started() {
    let d = desired(&[("web", "1.0.0")]);
    let now = Instant::now();
    let acts = reconcile(Some(&d), &Observed::new(), now);
    assert!(matches!(&acts[..], [Action::Download { app, .. }] if app == "web"));

    let mut obs = AppObserved {
        job: Some(Job {
            version: "1.0.0".into(),
            kind: JobKind::Download,
        }),
        ..Default::default()
    };
    assert!(reconcile(Some(&d), &one(obs.clone()), now).is_empty());

    obs.job = None;
    obs.downloaded = Some("1.0.0".into());
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Install {
            app: "web".into(),
            version: "1.0.0".into(),
            keep: BTreeSet::new()
        }]
    );

    obs.downloaded = None;
    obs.installed.insert("1.0.0".into());
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Start {
            app: "web".into(),
            version: "1.0.0".into(),
            fallback: false
        }]
    );

    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Starting));
    assert!(reconcile(Some(&d), &one(obs), now).is_empty());
}

#[test]
fn an_app_version_reusing_an_older_artifact_is_downloaded_once_then_installed() {
    // web@3.0.0 ships the artifact of web@2.0.0 (a configuration-only release): the download is
    // for the app version, so once it is there the next step is the install, not another
    // download (the agent used to fetch it again and again).
    let mut d = desired(&[("web", "3.0.0")]);
    d.apps[0].artifact = artifact("web", "2.0.0", ArtifactType::Binary);
    let now = Instant::now();
    let acts = reconcile(Some(&d), &Observed::new(), now);
    match &acts[..] {
        [Action::Download {
            version, artifact, ..
        }] => {
            assert_eq!(version, "3.0.0");
            assert_eq!(artifact.version, "2.0.0");
        }
        other => panic!("{other:?}"),
    }
    let obs = AppObserved {
        downloaded: Some("3.0.0".into()),
        ..Default::default()
    };
    let acts = reconcile(Some(&d), &one(obs), now);
    assert!(
        matches!(&acts[..], [Action::Install { version, .. }] if version == "3.0.0"),
        "{acts:?}"
    );
}

#[test]
fn upgrade_keeps_old_version_until_new_one_runs() {
    let d = desired(&[("web", "2.0.0")]);
    let now = Instant::now();
    let mut obs = AppObserved {
        installed: ["1.0.0".to_string()].into(),
        current: Some("1.0.0".into()),
        ..Default::default()
    };
    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Running));
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert!(matches!(&acts[..], [Action::Download { .. }]), "{acts:?}");

    obs.downloaded = Some("2.0.0".into());
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Install {
            app: "web".into(),
            version: "2.0.0".into(),
            keep: ["1.0.0".to_string()].into()
        }]
    );

    obs.downloaded = None;
    obs.installed.insert("2.0.0".into());
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Start {
            app: "web".into(),
            version: "2.0.0".into(),
            fallback: true
        }]
    );

    obs.procs
        .insert("2.0.0".into(), proc_view(AppPhase::Starting));
    assert!(reconcile(Some(&d), &one(obs.clone()), now).is_empty());

    obs.procs
        .insert("2.0.0".into(), proc_view(AppPhase::Running));
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Stop {
            app: "web".into(),
            version: "1.0.0".into()
        }]
    );

    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Stopped));
    assert!(reconcile(Some(&d), &one(obs), now).is_empty());
}

#[test]
fn failed_upgrade_start_leaves_old_version_alone() {
    let d = desired(&[("web", "2.0.0")]);
    let mut obs = AppObserved {
        installed: ["1.0.0".to_string(), "2.0.0".to_string()].into(),
        ..Default::default()
    };
    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Running));
    obs.procs
        .insert("2.0.0".into(), proc_view(AppPhase::Failed));
    assert!(reconcile(Some(&d), &one(obs), Instant::now()).is_empty());
}

#[test]
fn failed_download_is_retried_only_when_due() {
    let d = desired(&[("web", "1.0.0")]);
    let now = Instant::now();
    let obs = AppObserved {
        failure: Some(Failure {
            version: "1.0.0".into(),
            error: "sha256 mismatch".into(),
            retry_at: Some(now + Duration::from_secs(5)),
            transient: false,
        }),
        ..Default::default()
    };
    assert!(reconcile(Some(&d), &one(obs.clone()), now).is_empty());
    assert_eq!(
        next_retry(&one(obs.clone())),
        Some(now + Duration::from_secs(5))
    );
    let later = reconcile(Some(&d), &one(obs), now + Duration::from_secs(5));
    assert!(matches!(&later[..], [Action::Download { .. }]));
}

#[test]
fn failure_of_an_older_target_does_not_block_a_new_version() {
    let d = desired(&[("web", "3.0.0")]);
    let now = Instant::now();
    let obs = AppObserved {
        failure: Some(Failure {
            version: "2.0.0".into(),
            error: "boom".into(),
            retry_at: None,
            transient: false,
        }),
        ..Default::default()
    };
    let acts = reconcile(Some(&d), &one(obs), now);
    assert!(matches!(&acts[..], [Action::Download { .. }]));
}

#[test]
fn unsupported_type_is_refused_once() {
    let mut d = desired(&[("web", "1.0.0")]);
    d.apps[0].artifact.kind = ArtifactType::Other("snap".into());
    let acts = reconcile(Some(&d), &Observed::new(), Instant::now());
    assert_eq!(
        acts,
        vec![Action::Refuse {
            app: "web".into(),
            version: "1.0.0".into(),
            error: "artifact type snap is not supported by this agent yet".into()
        }]
    );
    let obs = AppObserved {
        failure: Some(Failure {
            version: "1.0.0".into(),
            error: "x".into(),
            retry_at: None,
            transient: false,
        }),
        ..Default::default()
    };
    assert!(reconcile(Some(&d), &one(obs), Instant::now()).is_empty());
}

#[test]
fn undesired_app_is_stopped_then_removed() {
    let d = desired(&[]);
    let now = Instant::now();
    let mut obs = AppObserved::default();
    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Running));
    let acts = reconcile(Some(&d), &one(obs.clone()), now);
    assert_eq!(
        acts,
        vec![Action::Stop {
            app: "web".into(),
            version: "1.0.0".into()
        }]
    );
    let mut stopping = proc_view(AppPhase::Stopped);
    stopping.live = true;
    obs.procs.insert("1.0.0".into(), stopping);
    assert!(reconcile(Some(&d), &one(obs.clone()), now).is_empty());
    obs.procs.clear();
    assert_eq!(
        reconcile(Some(&d), &one(obs), now),
        vec![Action::Remove { app: "web".into() }]
    );
}

#[test]
fn rollback_to_a_kept_version_needs_no_download() {
    let d = desired(&[("web", "1.0.0")]);
    let mut obs = AppObserved {
        installed: ["1.0.0".to_string(), "2.0.0".to_string()].into(),
        current: Some("2.0.0".into()),
        ..Default::default()
    };
    obs.procs
        .insert("2.0.0".into(), proc_view(AppPhase::Running));
    let acts = reconcile(Some(&d), &one(obs), Instant::now());
    assert_eq!(
        acts,
        vec![Action::Start {
            app: "web".into(),
            version: "1.0.0".into(),
            fallback: true
        }]
    );
}

#[test]
fn runtimes_other_than_raw_are_refused_not_run_as_bare_processes() {
    let now = Instant::now();
    let mut d = desired(&[("web", "1.0.0")]);
    d.apps[0].spec.runtime.kind = fleet_schema::app_spec::RuntimeKind::Docker;
    let actions = reconcile(Some(&d), &Observed::new(), now);
    match actions.as_slice() {
        [Action::Refuse { error, .. }] => assert!(error.contains("runtime docker"), "{error}"),
        other => panic!("expected one refusal, got {other:?}"),
    }
    d.apps[0].spec.runtime.kind = fleet_schema::app_spec::RuntimeKind::Supervisor;
    let actions = reconcile(Some(&d), &Observed::new(), now);
    assert!(
        matches!(actions.as_slice(), [Action::Download { .. }]),
        "supervisor is the raw runtime: {actions:?}"
    );
}

#[test]
fn containers_publishing_ports_stop_the_old_version_before_starting_the_new() {
    let now = Instant::now();
    let mut d = desired(&[("web", "2.0.0")]);
    d.apps[0].artifact.kind = ArtifactType::OciImage;
    d.apps[0].spec.runtime.ports = vec![8080];
    let mut obs = AppObserved {
        installed: ["1.0.0".to_string(), "2.0.0".to_string()].into(),
        current: Some("1.0.0".into()),
        ..Default::default()
    };
    obs.procs
        .insert("1.0.0".into(), proc_view(AppPhase::Running));
    assert_eq!(
        reconcile(Some(&d), &one(obs.clone()), now),
        vec![Action::Stop {
            app: "web".into(),
            version: "1.0.0".into()
        }]
    );
    let mut stopping = proc_view(AppPhase::Stopped);
    stopping.live = true;
    stopping.stopping = true;
    obs.procs.insert("1.0.0".into(), stopping);
    assert!(reconcile(Some(&d), &one(obs.clone()), now).is_empty());
    obs.procs.clear();
    assert_eq!(
        reconcile(Some(&d), &one(obs), now),
        vec![Action::Start {
            app: "web".into(),
            version: "2.0.0".into(),
            fallback: false
        }]
    );
}

#[test]
fn blue_green_keeps_the_old_instance_until_validated_and_the_switch_delay_passed() {
    let t0 = Instant::now();
    let hint = fleet_schema::BlueGreenHint {
        validation_ms: 2_000,
        switch_delay_ms: 3_000,
    };
    let with = |ports: Vec<u16>| {
        let mut d = desired(&[("web", "2.0.0")]);
        d.apps[0].rollout = Some(hint);
        d.apps[0].spec.runtime.ports = ports;
        d
    };
    let mut new = proc_view(AppPhase::Running);
    new.running_since = Some(t0);
    let obs = one(AppObserved {
        installed: ["1.0.0".to_string(), "2.0.0".to_string()].into(),
        current: Some("1.0.0".into()),
        procs: [
            ("1.0.0".to_string(), proc_view(AppPhase::Running)),
            ("2.0.0".to_string(), new),
        ]
        .into(),
        ..Default::default()
    });
    let stop_v1 = vec![Action::Stop {
        app: "web".into(),
        version: "1.0.0".into(),
    }];
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // Serving a port: kept through validation and the switch delay.
    let served = with(vec![8080]);
    assert!(reconcile(Some(&served), &obs, at(4_999)).is_empty());
    assert_eq!(reconcile(Some(&served), &obs, at(5_000)), stop_v1);
    // No port: stopped once the new instance validated.
    let portless = with(vec![]);
    assert!(reconcile(Some(&portless), &obs, at(1_999)).is_empty());
    assert_eq!(reconcile(Some(&portless), &obs, at(2_000)), stop_v1);
    // Not blue-green: stopped as soon as the new one runs.
    assert_eq!(
        reconcile(Some(&desired(&[("web", "2.0.0")])), &obs, t0),
        stop_v1
    );
}
