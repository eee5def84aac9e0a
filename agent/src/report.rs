//! Turns desired and observed state into the per-app part of the device status. Pure, so what
//! the controller sees for every combination (upgrade in flight, failed upgrade with the old
//! version still serving, crash loop) is unit-tested.

use crate::components;
use crate::reconcile::{AppObserved, JobKind, Observed};
use fleet_schema::components::{fold_health, fold_phase};
use fleet_schema::{
    AppPhase, AppStatus, ComponentStatus, DesiredApp, DesiredComponent, DesiredState, HealthState,
};

/// One [`AppStatus`] per desired app, in desired order. Apps no longer desired are left out
/// (they are being stopped and removed). `desired` is the accepted desired state (not the
/// units'): an app made of components is reported once, folded from its units, with a
/// [`ComponentStatus`] per component.
pub fn app_statuses(desired: Option<&DesiredState>, observed: &Observed) -> Vec<AppStatus> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    let empty = AppObserved::default();
    let unit = |want: &DesiredApp| unit_status(want, observed.get(&want.name).unwrap_or(&empty));
    let groups = components::groups(&components::expand(desired), observed);
    desired
        .apps
        .iter()
        .map(|want| {
            if want.components.is_empty() {
                return unit(want);
            }
            let parts: Vec<(&DesiredComponent, AppStatus)> = want
                .components
                .iter()
                .map(|c| {
                    let u = components::unit_app(want, c);
                    let mut st = unit(&u);
                    let held_back = components::group_of(&groups, &u.name)
                        .is_some_and(|g| g.upgrade_failed)
                        && st.running_version.is_some()
                        && !matches!(st.phase, AppPhase::Failed | AppPhase::CrashLoop)
                        && !observed
                            .get(&u.name)
                            .and_then(|o| o.procs.get(&u.version))
                            .is_some_and(|p| p.live);
                    if held_back {
                        // Kept on its old version because another component's upgrade failed.
                        st.phase = AppPhase::Stopped;
                    }
                    (c, st)
                })
                .collect();
            fold(want, &parts)
        })
        .collect()
}

/// The status of an app made of components, from its units' statuses: phase and health folded
/// (`fleet_schema::components`), restarts summed, the first failing component's error named.
fn fold(want: &DesiredApp, parts: &[(&DesiredComponent, AppStatus)]) -> AppStatus {
    let named = |c: &DesiredComponent, text: &String| {
        if text.starts_with("component ") {
            text.clone()
        } else {
            format!("component {}: {text}", c.name)
        }
    };
    let failing = |p: &AppPhase| matches!(p, AppPhase::Failed | AppPhase::CrashLoop);
    let last_error = parts
        .iter()
        .filter(|(_, s)| failing(&s.phase))
        .chain(parts.iter())
        .find_map(|(c, s)| s.last_error.as_ref().map(|e| named(c, e)));
    let health_message = parts
        .iter()
        .filter(|(_, s)| s.health != HealthState::Healthy)
        .find_map(|(c, s)| s.health_message.as_ref().map(|m| named(c, m)));
    AppStatus {
        name: want.name.clone(),
        version: want.version.clone(),
        phase: fold_phase(parts.iter().map(|(_, s)| &s.phase)),
        restart_count: parts.iter().map(|(_, s)| s.restart_count).sum(),
        last_error,
        running_version: parts.iter().find_map(|(_, s)| s.running_version.clone()),
        deployment_id: want.deployment_id.clone(),
        health: fold_health(parts.iter().map(|(_, s)| &s.health)),
        health_message,
        components: parts
            .iter()
            .map(|(c, s)| ComponentStatus {
                name: c.name.clone(),
                artifact_version: c.artifact.version.clone(),
                phase: s.phase.clone(),
                restart_count: s.restart_count,
                last_error: s.last_error.clone(),
                health: s.health.clone(),
                health_message: s.health_message.clone(),
            })
            .collect(),
    }
}

/// The status of one unit: a single-artifact app, or one component of an app.
fn unit_status(want: &DesiredApp, obs: &AppObserved) -> AppStatus {
    let version = &want.version;
    let running_version = obs
        .procs
        .iter()
        .filter(|(v, p)| *v != version && p.running && !p.stopping)
        .map(|(v, _)| v.clone())
        .next_back();
    let failure = obs.failure.as_ref().filter(|f| &f.version == version);
    let job = obs.job.as_ref().filter(|j| &j.version == version);
    let mut restart_count = 0;
    let mut last_error = failure.map(|f| f.error.clone());
    let (health, health_message) = obs
        .procs
        .get(version)
        .filter(|p| p.live)
        .map(|p| (p.health.clone(), p.health_message.clone()))
        .unwrap_or_default();
    let phase = match (obs.procs.get(version), job, failure) {
        (Some(p), _, _) if p.live || p.failed => {
            restart_count = p.restart_count;
            if p.last_error.is_some() {
                last_error = p.last_error.clone();
            }
            p.phase.clone()
        }
        (_, Some(j), _) => match j.kind {
            JobKind::Download => AppPhase::Downloading,
            JobKind::Install => AppPhase::Installing,
        },
        // Retrying after the network's or the server's failure: still on its way.
        (_, None, Some(f)) if f.transient => AppPhase::Downloading,
        (_, None, Some(_)) => AppPhase::Failed,
        _ if obs.installed.contains(version) => AppPhase::Starting,
        _ if obs.downloaded.as_ref() == Some(version) => AppPhase::Installing,
        _ => AppPhase::Pending,
    };
    AppStatus {
        name: want.name.clone(),
        version: version.clone(),
        phase,
        restart_count,
        last_error,
        running_version,
        deployment_id: want.deployment_id.clone(),
        health,
        health_message,
        components: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Failure, Job, ProcView};
    use fleet_schema::{ArtifactRef, ArtifactType, DesiredApp};

    fn desired(version: &str) -> DesiredState {
        DesiredState {
            device_id: "d".into(),
            generation: 2,
            apps: vec![DesiredApp {
                name: "web".into(),
                version: version.into(),
                artifact: ArtifactRef {
                    name: "web".into(),
                    version: version.into(),
                    kind: ArtifactType::Binary,
                    size: 1,
                    sha256: "00".into(),
                    url: "http://x".into(),
                    ..Default::default()
                },
                deployment_id: Some("dep-7".into()),
                spec: Default::default(),
                rollout: None,
                components: Vec::new(),
            }],
            issued_at: 0,
        }
    }

    fn running() -> ProcView {
        ProcView {
            running_since: None,
            phase: AppPhase::Running,
            live: true,
            running: true,
            stopping: false,
            failed: false,
            restart_count: 2,
            last_error: None,
            health: fleet_schema::HealthState::Healthy,
            health_message: None,
        }
    }

    #[test]
    fn a_transient_fetch_failure_reports_still_downloading_with_the_error() {
        let obs = AppObserved {
            failure: Some(Failure {
                version: "2.0.0".into(),
                error: "request to http://fleetd/x failed: Connection refused".into(),
                retry_at: None,
                transient: true,
            }),
            ..Default::default()
        };
        let observed = Observed::from([("web".to_string(), obs)]);
        let st = app_statuses(Some(&desired("2.0.0")), &observed);
        assert_eq!(st[0].phase, AppPhase::Downloading);
        assert!(st[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Connection refused")));
    }

    #[test]
    fn failed_upgrade_reports_new_version_failed_and_old_running() {
        let mut obs = AppObserved {
            failure: Some(Failure {
                version: "2.0.0".into(),
                error: "sha256 mismatch: expected aa, got bb".into(),
                retry_at: None,
                transient: false,
            }),
            ..Default::default()
        };
        obs.procs.insert("1.0.0".into(), running());
        let observed = Observed::from([("web".to_string(), obs)]);
        let st = app_statuses(Some(&desired("2.0.0")), &observed);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].phase, AppPhase::Failed);
        assert_eq!(st[0].version, "2.0.0");
        assert_eq!(st[0].running_version.as_deref(), Some("1.0.0"));
        assert_eq!(
            st[0].last_error.as_deref(),
            Some("sha256 mismatch: expected aa, got bb")
        );
        assert_eq!(st[0].deployment_id.as_deref(), Some("dep-7"));
    }

    #[test]
    fn phases_follow_the_pipeline() {
        let mut obs = AppObserved {
            job: Some(Job {
                version: "1.0.0".into(),
                kind: JobKind::Download,
            }),
            ..Default::default()
        };
        let d = desired("1.0.0");
        let phase = |o: &AppObserved| {
            app_statuses(Some(&d), &Observed::from([("web".to_string(), o.clone())]))[0]
                .phase
                .clone()
        };
        assert_eq!(phase(&obs), AppPhase::Downloading);
        obs.job = Some(Job {
            version: "1.0.0".into(),
            kind: JobKind::Install,
        });
        assert_eq!(phase(&obs), AppPhase::Installing);
        obs.job = None;
        obs.installed.insert("1.0.0".into());
        assert_eq!(phase(&obs), AppPhase::Starting);
        obs.procs.insert("1.0.0".into(), running());
        assert_eq!(phase(&obs), AppPhase::Running);
        let st = app_statuses(Some(&d), &Observed::from([("web".to_string(), obs)]));
        assert_eq!(st[0].restart_count, 2);
        assert_eq!(st[0].health, fleet_schema::HealthState::Healthy);
        assert_eq!(st[0].running_version, None);
    }

    #[test]
    fn an_app_of_components_is_reported_once_with_each_component() {
        let app = crate::components::tests::seed_app();
        let d = DesiredState {
            device_id: "d".into(),
            generation: 3,
            apps: vec![app],
            issued_at: 0,
        };
        let mut engine = AppObserved::default();
        engine.procs.insert("2.1.0".into(), running());
        let mut model = AppObserved::default();
        model.procs.insert(
            "2.1.0".into(),
            ProcView {
                phase: AppPhase::CrashLoop,
                running: false,
                restart_count: 3,
                last_error: Some("exited with status 1".into()),
                health: fleet_schema::HealthState::Unknown,
                ..running()
            },
        );
        let observed = Observed::from([
            ("edge-inference__inference-engine".to_string(), engine),
            ("edge-inference__model-server".to_string(), model.clone()),
        ]);
        let st = app_statuses(Some(&d), &observed);
        assert_eq!(st.len(), 1, "one status for the app: {st:?}");
        let s = &st[0];
        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("edge-inference", "2.1.0")
        );
        assert_eq!(s.phase, AppPhase::CrashLoop);
        assert_eq!(s.restart_count, 5);
        assert_eq!(
            s.last_error.as_deref(),
            Some("component model-server: exited with status 1")
        );
        assert_eq!(s.health, fleet_schema::HealthState::Healthy);
        let parts: Vec<(&str, &str, AppPhase)> = s
            .components
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.artifact_version.as_str(),
                    c.phase.clone(),
                )
            })
            .collect();
        assert_eq!(
            parts,
            [
                ("inference-engine", "1.5.0", AppPhase::Running),
                ("model-server", "1.5.0", AppPhase::CrashLoop)
            ]
        );
        // Once the image runs too, the app runs; without a health check of its own the image
        // does not veto the engine's verdict.
        let mut fixed = observed.clone();
        model.procs.insert("2.1.0".into(), running());
        model.procs.get_mut("2.1.0").expect("proc").health = Default::default();
        fixed.insert("edge-inference__model-server".to_string(), model);
        let st = app_statuses(Some(&d), &fixed);
        assert_eq!(st[0].phase, AppPhase::Running);
        assert_eq!(st[0].health, fleet_schema::HealthState::Healthy);
        assert_eq!(st[0].last_error, None);
    }

    #[test]
    fn a_single_artifact_app_reports_no_components() {
        let st = app_statuses(Some(&desired("1.0.0")), &Observed::new());
        assert!(st[0].components.is_empty());
    }
}
