//! The reconciler on apps made of several artifacts: every component is fetched and started,
//! a component that cannot run refuses the whole app, a rollback moves every component, and
//! an agent that predates components refuses the app instead of running half of it.

use super::*;
use crate::components::{expand, tests::seed_app, unit_name};
use fleet_schema::app_spec::RuntimeKind;
use fleet_schema::{AppSpec, DesiredApp};

fn state(app: DesiredApp) -> DesiredState {
    DesiredState {
        device_id: "d1".into(),
        generation: 2,
        apps: vec![app],
        issued_at: 0,
    }
}

fn running() -> ProcView {
    ProcView {
        phase: AppPhase::Running,
        live: true,
        running: true,
        stopping: false,
        failed: false,
        restart_count: 0,
        last_error: None,
        health: Default::default(),
        health_message: None,
        running_since: None,
    }
}

const ENGINE: &str = "edge-inference__inference-engine";
const MODEL: &str = "edge-inference__model-server";

#[test]
fn every_component_is_fetched_then_started() {
    let units = expand(&state(seed_app()));
    let now = Instant::now();
    let acts = reconcile(Some(&units), &Observed::new(), now);
    let fetched: Vec<(&str, &str)> = acts
        .iter()
        .map(|a| match a {
            Action::Download { app, artifact, .. } => (app.as_str(), artifact.name.as_str()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        fetched,
        [(ENGINE, "inference-engine"), (MODEL, "model-server")]
    );
    let installed = AppObserved {
        installed: ["2.1.0".to_string()].into(),
        ..Default::default()
    };
    let obs = Observed::from([
        (ENGINE.to_string(), installed.clone()),
        (MODEL.to_string(), installed),
    ]);
    let acts = reconcile(Some(&units), &obs, now);
    assert_eq!(
        acts,
        [ENGINE, MODEL].map(|u| Action::Start {
            app: u.into(),
            version: "2.1.0".into(),
            fallback: false
        })
    );
}

#[test]
fn a_component_that_cannot_run_refuses_the_whole_app() {
    let mut app = seed_app();
    app.components[1].spec = AppSpec {
        runtime: fleet_schema::app_spec::RuntimeSpec {
            kind: RuntimeKind::Systemd,
            ..Default::default()
        },
        ..Default::default()
    };
    let units = expand(&state(app));
    let acts = reconcile(Some(&units), &Observed::new(), Instant::now());
    assert_eq!(acts.len(), 2, "{acts:?}");
    for (act, unit) in acts.iter().zip([ENGINE, MODEL]) {
        let Action::Refuse { app, error, .. } = act else {
            panic!("not refused: {act:?}");
        };
        assert_eq!(app, unit);
        assert!(
            error.starts_with("component model-server: runtime systemd"),
            "{error}"
        );
    }
}

#[test]
fn a_rollback_starts_every_component_at_the_old_version() {
    let mut app = seed_app();
    app.version = "2.0.0".into();
    let units = expand(&state(app));
    let mut obs = AppObserved {
        installed: ["2.0.0".to_string(), "2.1.0".to_string()].into(),
        current: Some("2.1.0".into()),
        ..Default::default()
    };
    obs.procs.insert("2.1.0".into(), running());
    let observed = Observed::from([(ENGINE.to_string(), obs.clone()), (MODEL.to_string(), obs)]);
    let acts = reconcile(Some(&units), &observed, Instant::now());
    assert_eq!(
        acts,
        [ENGINE, MODEL].map(|u| Action::Start {
            app: u.into(),
            version: "2.0.0".into(),
            fallback: true
        })
    );
    assert_eq!(unit_name("edge-inference", "model-server"), MODEL);
}

#[test]
fn an_agent_that_predates_components_refuses_the_app_whole() {
    // What such an agent's reconciler sees: the app itself, its unknown `components` dropped.
    let mut old_view = seed_app();
    old_view.components.clear();
    let acts = reconcile(Some(&state(old_view)), &Observed::new(), Instant::now());
    assert_eq!(
        acts,
        [Action::Refuse {
            app: "edge-inference".into(),
            version: "2.1.0".into(),
            error: "artifact type components is not supported by this agent yet".into()
        }]
    );
}

fn with_procs(procs: &[(&str, ProcView)]) -> AppObserved {
    AppObserved {
        installed: ["2.0.0".to_string(), "2.1.0".to_string()].into(),
        current: Some("2.0.0".into()),
        procs: procs
            .iter()
            .map(|(v, p)| (v.to_string(), p.clone()))
            .collect(),
        ..Default::default()
    }
}

fn phase(phase: AppPhase) -> ProcView {
    ProcView {
        phase: phase.clone(),
        live: !matches!(phase, AppPhase::Failed | AppPhase::Stopped),
        running: phase == AppPhase::Running,
        failed: phase == AppPhase::Failed,
        ..running()
    }
}

/// Both components on 2.0.0 with 2.1.0 started too: the engine's 2.1.0 runs, the model's is
/// `model`.
fn upgrading(model: ProcView) -> Observed {
    Observed::from([
        (
            ENGINE.to_string(),
            with_procs(&[("2.0.0", running()), ("2.1.0", running())]),
        ),
        (
            MODEL.to_string(),
            with_procs(&[("2.0.0", running()), ("2.1.0", model)]),
        ),
    ])
}

#[test]
fn old_versions_stop_only_once_every_component_runs_the_new_one() {
    let units = expand(&state(seed_app()));
    let now = Instant::now();
    let mut observed = upgrading(phase(AppPhase::Starting));
    assert!(
        reconcile(Some(&units), &observed, now).is_empty(),
        "the engine's 2.0.0 waits for the model's 2.1.0"
    );
    observed
        .get_mut(MODEL)
        .expect("model")
        .procs
        .insert("2.1.0".into(), running());
    assert_eq!(
        reconcile(Some(&units), &observed, now),
        [ENGINE, MODEL].map(|u| Action::Stop {
            app: u.into(),
            version: "2.0.0".into()
        })
    );
}

#[test]
fn a_failed_upgrade_of_one_component_keeps_every_component_on_the_old_version() {
    let units = expand(&state(seed_app()));
    let now = Instant::now();
    let mut observed = upgrading(phase(AppPhase::Failed));
    assert_eq!(
        reconcile(Some(&units), &observed, now),
        [Action::Stop {
            app: ENGINE.into(),
            version: "2.1.0".into()
        }],
        "the engine's new version stops, its old one keeps serving"
    );
    observed
        .get_mut(ENGINE)
        .expect("engine")
        .procs
        .remove("2.1.0");
    assert!(
        reconcile(Some(&units), &observed, now).is_empty(),
        "and it is not started again until a new desired state"
    );
    let st = crate::report::app_statuses(Some(&state(seed_app())), &observed);
    assert_eq!(st[0].phase, AppPhase::Failed);
    assert_eq!(st[0].running_version.as_deref(), Some("2.0.0"));
    let phases: Vec<AppPhase> = st[0].components.iter().map(|c| c.phase.clone()).collect();
    assert_eq!(phases, [AppPhase::Stopped, AppPhase::Failed]);
}
