//! Turns desired and observed state into the per-app part of the device status. Pure, so what
//! the controller sees for every combination (upgrade in flight, failed upgrade with the old
//! version still serving, crash loop) is unit-tested.

use crate::reconcile::{AppObserved, JobKind, Observed};
use fleet_schema::{AppPhase, AppStatus, DesiredState};

/// One [`AppStatus`] per desired app, in desired order. Apps no longer desired are left out
/// (they are being stopped and removed).
pub fn app_statuses(desired: Option<&DesiredState>, observed: &Observed) -> Vec<AppStatus> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    let empty = AppObserved::default();
    desired
        .apps
        .iter()
        .map(|want| {
            let obs = observed.get(&want.name).unwrap_or(&empty);
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
            }
        })
        .collect()
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
}
