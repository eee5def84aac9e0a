//! Rendering a unit file from an app's spec: a pure function, so every setting is unit-tested
//! without systemd. Values a unit file cannot carry (line breaks, NUL, relative paths) are
//! refused with the setting's name instead of being written half-escaped.

use super::SystemdError;
use fleet_schema::app_spec::{AppSpec, RestartPolicy};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything a unit needs beside the spec.
#[derive(Debug, Clone)]
pub struct UnitInput<'a> {
    /// App name.
    pub app: &'a str,
    /// Version (in the description).
    pub version: &'a str,
    /// The executable.
    pub exec: &'a Path,
    /// Working directory.
    pub workdir: &'a Path,
    /// Absolute pre-start script, if any.
    pub pre_start: Option<&'a Path>,
    /// Variables the agent adds (FLEET_*), beside the spec's env (the spec wins).
    pub extra_env: &'a [(String, String)],
    /// Where stdout is appended.
    pub stdout_log: &'a Path,
    /// Where stderr is appended.
    pub stderr_log: &'a Path,
    /// The target that pulls the enabled unit in at boot.
    pub wanted_by: &'a str,
    /// How to run it.
    pub spec: &'a AppSpec,
}

/// Refuses characters a unit file cannot carry (line breaks, NUL).
fn check(field: &str, v: &str) -> Result<(), SystemdError> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(SystemdError::BadValue {
            field: field.to_string(),
            problem: format!("{v:?} contains a line break or NUL"),
        });
    }
    Ok(())
}

/// Quotes one word for a unit's command line or `Environment=`: double quotes, with `\`, `"`,
/// `%` (specifiers) and `$` (variable expansion) escaped.
pub fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path setting's value (`%` escaped; spaces are fine unquoted there).
fn path_value(field: &str, p: &Path) -> Result<String, SystemdError> {
    let s = p.to_string_lossy();
    check(field, &s)?;
    if !p.is_absolute() {
        return Err(SystemdError::BadValue {
            field: field.to_string(),
            problem: format!("{s:?} is not an absolute path"),
        });
    }
    Ok(s.replace('%', "%%"))
}

/// `Restart=` for a restart policy (the same exits the agent's own supervisor restarts).
pub fn restart_value(p: &RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "no",
        _ => "always",
    }
}

/// Renders the unit file.
pub fn render_unit(u: &UnitInput<'_>) -> Result<String, SystemdError> {
    check("app name", u.app)?;
    check("version", u.version)?;
    check("WantedBy", u.wanted_by)?;
    let rt = &u.spec.runtime;
    let mut exec = vec![quote(&path_value("ExecStart", u.exec)?)];
    for (i, a) in rt.args.iter().enumerate() {
        check(&format!("runtime.args[{i}]"), a)?;
        exec.push(quote(a));
    }
    let mut s = String::new();
    s.push_str("# Written by fleet-agent; changes are overwritten on the next start.\n[Unit]\n");
    s.push_str(&format!("Description=FleetD app {} {}\n", u.app, u.version));
    // Restarts are governed by Restart= and the agent's crash-loop report, not by a start
    // limit that would park the unit as failed.
    s.push_str("StartLimitIntervalSec=0\n\n[Service]\nType=exec\n");
    s.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    if let Some(pre) = u.pre_start {
        s.push_str(&format!(
            "ExecStartPre={}\n",
            quote(&path_value("ExecStartPre", pre)?)
        ));
    }
    s.push_str(&format!(
        "WorkingDirectory={}\n",
        path_value("WorkingDirectory", u.workdir)?
    ));
    let mut env: BTreeMap<&str, &str> = u
        .extra_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend(u.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in env {
        check(&format!("env.{k}"), k)?;
        check(&format!("env.{k}"), v)?;
        if k.is_empty() || k.contains(['=', ' ']) {
            return Err(SystemdError::BadValue {
                field: format!("env.{k}"),
                problem: "is not a valid variable name".into(),
            });
        }
        s.push_str(&format!("Environment={}\n", quote(&format!("{k}={v}"))));
    }
    s.push_str(&format!(
        "Restart={}\nRestartSec=1\n",
        restart_value(&rt.restart)
    ));
    // The same grace as the agent's own stop (systemd's default would be 90 s).
    let grace = match rt.stop_grace_ms {
        0 => u64::try_from(crate::supervisor::STOP_GRACE.as_millis()).unwrap_or(u64::MAX),
        ms => ms,
    };
    s.push_str(&format!("TimeoutStopSec={grace}ms\n"));
    if rt.startup_timeout_ms > 0 {
        s.push_str(&format!("TimeoutStartSec={}ms\n", rt.startup_timeout_ms));
    }
    let r = &u.spec.resources;
    if let Some(m) = r.memory_limit {
        s.push_str(&format!("MemoryMax={m}\n"));
    }
    if let Some(c) = r.cpu_limit_millis {
        // 1000 millicores = one CPU = 100%.
        s.push_str(&format!("CPUQuota={}%\n", (u64::from(c) / 10).max(1)));
    }
    if let Some(n) = r.open_files {
        s.push_str(&format!("LimitNOFILE={n}\n"));
    }
    s.push_str(&format!(
        "StandardOutput=append:{}\nStandardError=append:{}\n",
        path_value("StandardOutput", u.stdout_log)?,
        path_value("StandardError", u.stderr_log)?
    ));
    s.push_str(&format!(
        "KillMode=control-group\n\n[Install]\nWantedBy={}\n",
        u.wanted_by
    ));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(spec: &'a AppSpec, extra: &'a [(String, String)]) -> UnitInput<'a> {
        UnitInput {
            app: "web",
            version: "1.2.0",
            exec: Path::new("/data/apps/web/1.2.0/web"),
            workdir: Path::new("/data/apps/web/1.2.0"),
            pre_start: None,
            extra_env: extra,
            stdout_log: Path::new("/data/logs/web.out.log"),
            stderr_log: Path::new("/data/logs/web.err.log"),
            wanted_by: "multi-user.target",
            spec,
        }
    }

    #[test]
    fn the_unit_carries_the_whole_spec() {
        let mut spec = AppSpec::default();
        spec.runtime.args = vec!["--port".into(), "80 80".into(), "100%$HOME".into()];
        spec.runtime.restart = RestartPolicy::OnFailure;
        spec.runtime.stop_grace_ms = 2500;
        spec.resources.memory_limit = Some(256 << 20);
        spec.resources.cpu_limit_millis = Some(1500);
        spec.resources.open_files = Some(1024);
        spec.env.insert("GREETING".into(), "say \"hi\"".into());
        spec.env.insert("FLEET_APP_NAME".into(), "spec-wins".into());
        let extra = [
            ("FLEET_APP_NAME".to_string(), "web".to_string()),
            ("FLEET_DEVICE_ID".to_string(), "d1".to_string()),
        ];
        let pre = Path::new("/data/apps/web/1.2.0/pre.sh");
        let mut u = input(&spec, &extra);
        u.pre_start = Some(pre);
        let unit = render_unit(&u).expect("renders");
        for line in [
            "Type=exec",
            "StartLimitIntervalSec=0",
            r#"ExecStart="/data/apps/web/1.2.0/web" "--port" "80 80" "100%%$$HOME""#,
            r#"ExecStartPre="/data/apps/web/1.2.0/pre.sh""#,
            "WorkingDirectory=/data/apps/web/1.2.0",
            r#"Environment="FLEET_APP_NAME=spec-wins""#,
            r#"Environment="FLEET_DEVICE_ID=d1""#,
            r#"Environment="GREETING=say \"hi\"""#,
            "Restart=on-failure",
            "TimeoutStopSec=2500ms",
            "MemoryMax=268435456",
            "CPUQuota=150%",
            "LimitNOFILE=1024",
            "StandardOutput=append:/data/logs/web.out.log",
            "StandardError=append:/data/logs/web.err.log",
            "WantedBy=multi-user.target",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{line} missing from\n{unit}"
            );
        }
    }

    #[test]
    fn defaults_leave_limits_out_and_map_restart_policies() {
        let spec = AppSpec::default();
        let unit = render_unit(&input(&spec, &[])).expect("renders");
        assert!(unit.contains("Restart=always\n"), "{unit}");
        assert!(
            !unit.contains("MemoryMax") && unit.contains("TimeoutStopSec=5000ms\n"),
            "{unit}"
        );
        assert_eq!(restart_value(&RestartPolicy::Never), "no");
    }

    #[test]
    fn values_a_unit_cannot_carry_are_refused_naming_them() {
        let mut spec = AppSpec::default();
        spec.env
            .insert("BAD".into(), "a\nExecStartPost=/bin/evil".into());
        let e = render_unit(&input(&spec, &[]))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("env.BAD") && e.contains("line break"), "{e}");
        let mut spec = AppSpec::default();
        spec.env.insert("A B".into(), "x".into());
        let e = render_unit(&input(&spec, &[]))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("not a valid variable name"), "{e}");
        let spec = AppSpec::default();
        let mut u = input(&spec, &[]);
        u.workdir = Path::new("relative/dir");
        let e = render_unit(&u).expect_err("refused").to_string();
        assert!(
            e.contains("WorkingDirectory") && e.contains("not an absolute path"),
            "{e}"
        );
    }
}
