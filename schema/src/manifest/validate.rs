//! Validation of a parsed manifest and its mapping to the wire [`AppSpec`]: every problem is
//! collected (not just the first) as a [`FieldError`] naming the dotted field path.

use super::raw::*;
use super::units;
use super::{AppArtifact, Application, FieldError, ManifestError, Placement};
use crate::app_spec::{
    AppSpec, ConfigFile, HealthCheck, ProbeKind, Resources, RestartPolicy, RuntimeKind, RuntimeSpec,
};
use crate::artifact::{validate_name, validate_version};

/// Collects problems while converting.
#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|p| self.push(field, p)).ok()
    }

    fn duration(&mut self, field: &str, v: Option<&String>) -> Option<u64> {
        v.and_then(|s| self.check(field, units::duration_ms(s)))
    }
}

/// Validates `raw` and maps it to an [`Application`].
pub fn validate(raw: RawManifest) -> Result<Application, ManifestError> {
    let mut e = Errors::default();
    if raw.api_version != "fleet.v1" {
        e.push(
            "apiVersion",
            format!(
                "{:?} is not supported (expected \"fleet.v1\")",
                raw.api_version
            ),
        );
    }
    if raw.kind != "Application" {
        e.push(
            "kind",
            format!("{:?} is not supported (expected \"Application\")", raw.kind),
        );
    }
    e.check("metadata.name", validate_name(&raw.metadata.name));
    e.check(
        "metadata.version",
        validate_version(&raw.metadata.version).map(|_| ()),
    );
    let spec = raw.spec;
    if spec.artifacts.is_empty() {
        e.push("spec.artifacts", "at least one artifact is required");
    }
    let mut artifacts = Vec::new();
    for (i, a) in spec.artifacts.iter().enumerate() {
        let f = format!("spec.artifacts[{i}]");
        e.check(&format!("{f}.name"), validate_name(&a.name));
        e.check(
            &format!("{f}.version"),
            validate_version(&a.version).map(|_| ()),
        );
        if a.kind.is_empty() {
            e.push(format!("{f}.type"), "artifact type is empty");
        }
        if spec.artifacts[..i].iter().any(|b| b.name == a.name) {
            e.push(
                format!("{f}.name"),
                format!(
                    "{:?} is listed twice (artifact names name the app's components)",
                    a.name
                ),
            );
        }
        artifacts.push(AppArtifact {
            name: a.name.clone(),
            version: a.version.clone(),
            kind: a.kind.clone(),
            runtime: None,
            healthcheck: None,
        });
    }
    if !spec.artifacts.is_empty()
        && !artifacts
            .iter()
            .any(|a| super::RUNNABLE_TYPES.contains(&a.kind.as_str()))
    {
        e.push(
            "spec.artifacts",
            format!(
                "no artifact of a type agents run ({})",
                super::RUNNABLE_TYPES.join(", ")
            ),
        );
    }
    let mut out = AppSpec::default();
    if let Some(c) = spec.configuration {
        configuration(&mut e, c, &mut out);
    }
    if let Some(r) = spec.runtime {
        out.runtime = runtime(&mut e, "spec.runtime", r);
    }
    if let Some(h) = spec.healthcheck {
        out.healthcheck = healthcheck(&mut e, "spec.healthcheck", h);
    }
    if let Some(r) = spec.resources {
        out.resources = resources(&mut e, r);
    }
    super::components::overrides(&mut e, &spec.artifacts, &out.runtime.kind, &mut artifacts);
    let placement = spec
        .placement
        .map(|p| placement(&mut e, p))
        .unwrap_or_default();
    if !e.0.is_empty() {
        return Err(ManifestError::Invalid(e.0));
    }
    Ok(Application {
        name: raw.metadata.name,
        version: raw.metadata.version,
        labels: raw.metadata.labels,
        artifacts,
        spec: out,
        placement,
    })
}

fn configuration(e: &mut Errors, c: RawConfiguration, out: &mut AppSpec) {
    let plain = c.env.into_iter().map(|(k, v)| ("env", k, v));
    let secret = c.secrets.into_iter().map(|(k, v)| ("secrets", k, v));
    for (section, k, v) in plain.chain(secret) {
        let valid = !k.is_empty()
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            e.push(
                format!("spec.configuration.{section}.{k}"),
                "variable names are letters, digits and '_', not starting with a digit",
            );
        }
        if section == "secrets" {
            if out.env.contains_key(&k) {
                e.push(
                    format!("spec.configuration.secrets.{k}"),
                    "is also in spec.configuration.env; name it in one of them",
                );
            }
            out.secret_env.insert(k.clone());
        }
        out.env.insert(k, v.to_string());
    }
    for (i, f) in c.files.into_iter().enumerate() {
        if f.path.is_empty() || f.path.split('/').any(|p| p == "..") {
            e.push(
                format!("spec.configuration.files[{i}].path"),
                format!("{:?} must be non-empty without '..'", f.path),
            );
        }
        if f.mode.is_some_and(|m| m > 0o7777) {
            e.push(
                format!("spec.configuration.files[{i}].mode"),
                "mode must be at most 0o7777",
            );
        }
        out.files.push(ConfigFile {
            path: f.path,
            content: f.content,
            mode: f.mode.or(f.secret.then_some(0o600)),
            secret: f.secret,
        });
    }
}

pub(super) fn runtime(e: &mut Errors, at: &str, r: RawRuntime) -> RuntimeSpec {
    let kind = match r.kind.as_deref() {
        None | Some("raw") => RuntimeKind::Raw,
        Some("supervisor") => RuntimeKind::Supervisor,
        Some("systemd") => RuntimeKind::Systemd,
        Some("docker") => RuntimeKind::Docker,
        Some("podman") => RuntimeKind::Podman,
        Some(other) => {
            e.push(
                format!("{at}.type"),
                format!("{other:?} is not one of raw, supervisor, systemd, docker, podman"),
            );
            RuntimeKind::Raw
        }
    };
    let restart = match r.restart.as_deref() {
        None | Some("always") => RestartPolicy::Always,
        Some("on-failure") => RestartPolicy::OnFailure,
        Some("never") => RestartPolicy::Never,
        Some(other) => {
            e.push(
                format!("{at}.restart"),
                format!("{other:?} is not one of always, on-failure, never"),
            );
            RestartPolicy::Always
        }
    };
    for (name, v) in [
        ("install_script", &r.install_script),
        ("pre_start_script", &r.pre_start_script),
    ] {
        if let Some(p) = v {
            if let Err(problem) = archive_path(p) {
                e.push(format!("{at}.{name}"), problem);
            }
        }
    }
    RuntimeSpec {
        kind,
        restart,
        startup_timeout_ms: e
            .duration(&format!("{at}.startup_timeout"), r.startup_timeout.as_ref())
            .unwrap_or(0),
        stop_grace_ms: e
            .duration(&format!("{at}.stop_grace"), r.stop_grace.as_ref())
            .unwrap_or(0),
        args: r.args,
        entrypoint: r.entrypoint,
        workdir: r.workdir,
        ports: r.ports,
        install_script: r.install_script,
        pre_start_script: r.pre_start_script,
    }
}

/// Checks a path inside the unpacked archive: relative, non-empty, no `..`.
fn archive_path(p: &str) -> Result<(), String> {
    if p.trim().is_empty() {
        return Err("path is empty".into());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} must be relative to the unpacked archive"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain '..'"));
    }
    Ok(())
}

struct Timing<'a> {
    interval: Option<&'a String>,
    timeout: Option<&'a String>,
    retries: Option<u32>,
    start_period: Option<&'a String>,
}

pub(super) fn healthcheck(e: &mut Errors, at: &str, h: RawHealthCheck) -> Option<HealthCheck> {
    let count = [h.http.is_some(), h.tcp.is_some(), h.exec.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if count != 1 {
        e.push(at, "give exactly one of http, tcp, exec");
        return None;
    }
    let (field, probe, t) = if let Some(p) = &h.http {
        if !p.path.starts_with('/') {
            e.push(
                format!("{at}.http.path"),
                format!("{:?} must start with '/'", p.path),
            );
        }
        if p.port == 0 {
            e.push(format!("{at}.http.port"), "port 0 is not a port");
        }
        let probe = ProbeKind::Http {
            path: p.path.clone(),
            port: p.port,
            expected_status: p.expected_status,
        };
        (
            "http",
            probe,
            Timing {
                interval: p.interval.as_ref(),
                timeout: p.timeout.as_ref(),
                retries: p.retries,
                start_period: p.start_period.as_ref(),
            },
        )
    } else if let Some(p) = &h.tcp {
        if p.port == 0 {
            e.push(format!("{at}.tcp.port"), "port 0 is not a port");
        }
        (
            "tcp",
            ProbeKind::Tcp { port: p.port },
            Timing {
                interval: p.interval.as_ref(),
                timeout: p.timeout.as_ref(),
                retries: p.retries,
                start_period: p.start_period.as_ref(),
            },
        )
    } else {
        let p = h.exec.as_ref()?;
        if p.command.is_empty() {
            e.push(format!("{at}.exec.command"), "command is empty");
        }
        (
            "exec",
            ProbeKind::Exec {
                command: p.command.clone(),
            },
            Timing {
                interval: p.interval.as_ref(),
                timeout: p.timeout.as_ref(),
                retries: p.retries,
                start_period: p.start_period.as_ref(),
            },
        )
    };
    let f = |name: &str| format!("{at}.{field}.{name}");
    let interval_ms = e.duration(&f("interval"), t.interval).unwrap_or(30_000);
    let timeout_ms = e.duration(&f("timeout"), t.timeout).unwrap_or(5_000);
    if interval_ms == 0 {
        e.push(f("interval"), "must be more than 0");
    }
    if timeout_ms == 0 || timeout_ms > interval_ms {
        e.push(f("timeout"), "must be more than 0 and at most the interval");
    }
    Some(HealthCheck {
        probe,
        interval_ms,
        timeout_ms,
        retries: t.retries.unwrap_or(3).max(1),
        start_period_ms: e.duration(&f("start_period"), t.start_period).unwrap_or(0),
    })
}

fn resources(e: &mut Errors, r: RawResources) -> Resources {
    let mut out = Resources::default();
    if let Some(l) = r.limits {
        out.memory_limit = l
            .memory
            .and_then(|m| e.check("spec.resources.limits.memory", units::bytes(&m)));
        out.cpu_limit_millis = l
            .cpu
            .and_then(|c| e.check("spec.resources.limits.cpu", units::millicores(&c)));
    }
    if let Some(q) = r.requests {
        out.memory_request = q
            .memory
            .and_then(|m| e.check("spec.resources.requests.memory", units::bytes(&m)));
        out.cpu_request_millis = q
            .cpu
            .and_then(|c| e.check("spec.resources.requests.cpu", units::millicores(&c)));
    }
    if let (Some(req), Some(lim)) = (out.memory_request, out.memory_limit) {
        if req > lim {
            e.push(
                "spec.resources.requests.memory",
                "request is above the limit",
            );
        }
    }
    if let (Some(req), Some(lim)) = (out.cpu_request_millis, out.cpu_limit_millis) {
        if req > lim {
            e.push("spec.resources.requests.cpu", "request is above the limit");
        }
    }
    out
}

fn placement(e: &mut Errors, p: RawPlacement) -> Placement {
    let mut out = Placement::default();
    if let Some(s) = p.device_selector {
        out.device_type = s.kind;
        out.min_memory = s.min_memory.and_then(|m| {
            e.check(
                "spec.placement.device_selector.min_memory",
                units::bytes(&m),
            )
        });
        out.capabilities = s.capabilities;
        out.arch = s.arch;
    }
    for (i, r) in p.node_affinity.iter().enumerate() {
        e.check(&format!("spec.placement.node_affinity[{i}]"), r.check());
    }
    out.affinity = p.node_affinity;
    out
}
