//! The next desired state of a device when a deployment sets one application's version.

use fleet_schema::{DesiredApp, DesiredState, UnixMillis};

/// Returns `prev` with `app` set (replacing the same-named app, keeping the others, sorted by
/// name) and the generation one higher; a device without desired state starts at generation 1.
pub fn set_app(
    prev: Option<&DesiredState>,
    device: &str,
    app: DesiredApp,
    now: UnixMillis,
) -> DesiredState {
    let mut apps: Vec<DesiredApp> = prev.map(|p| p.apps.clone()).unwrap_or_default();
    apps.retain(|a| a.name != app.name);
    apps.push(app);
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    DesiredState {
        device_id: device.to_string(),
        generation: prev.map_or(0, |p| p.generation) + 1,
        apps,
        issued_at: now,
    }
}

/// Returns `prev` without the app named `name` and the generation one higher (a rollback of a
/// first install removes the app).
pub fn remove_app(
    prev: Option<&DesiredState>,
    device: &str,
    name: &str,
    now: UnixMillis,
) -> DesiredState {
    let mut apps: Vec<DesiredApp> = prev.map(|p| p.apps.clone()).unwrap_or_default();
    apps.retain(|a| a.name != name);
    DesiredState {
        device_id: device.to_string(),
        generation: prev.map_or(0, |p| p.generation) + 1,
        apps,
        issued_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::{ArtifactRef, ArtifactType};

    fn app(name: &str, version: &str) -> DesiredApp {
        DesiredApp {
            name: name.into(),
            version: version.into(),
            artifact: ArtifactRef {
                name: name.into(),
                version: version.into(),
                kind: ArtifactType::Binary,
                size: 1,
                sha256: "00".into(),
                url: "http://x".into(),
                ..Default::default()
            },
            deployment_id: Some(format!("d-{name}-{version}")),
            spec: Default::default(),
            rollout: None,
            components: Vec::new(),
        }
    }

    #[test]
    fn first_generation_is_one() {
        let d = set_app(None, "dev", app("a", "1.0.0"), 5);
        assert_eq!((d.generation, d.apps.len(), d.issued_at), (1, 1, 5));
        assert_eq!(d.device_id, "dev");
    }

    #[test]
    fn replaces_same_app_and_keeps_others() {
        let d = set_app(None, "dev", app("b", "1.0.0"), 1);
        let d = set_app(Some(&d), "dev", app("a", "1.0.0"), 2);
        let d = set_app(Some(&d), "dev", app("b", "2.0.0"), 3);
        assert_eq!(d.generation, 3);
        let apps: Vec<(&str, &str)> = d
            .apps
            .iter()
            .map(|a| (a.name.as_str(), a.version.as_str()))
            .collect();
        assert_eq!(apps, vec![("a", "1.0.0"), ("b", "2.0.0")]);
    }
}
