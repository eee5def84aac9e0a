//! The `systemd` app runtime: the agent renders a unit `fleet-<app>.service` from the app's
//! [`AppSpec`] (ExecStart, Environment, WorkingDirectory, Restart= from the restart policy,
//! MemoryMax / CPUQuota / LimitNOFILE from the resources, TimeoutStopSec from the stop grace,
//! the pre-start script as ExecStartPre, output appended to the agent's log files), writes it
//! into the unit directory (`/etc/systemd/system` by default, configurable for tests), runs
//! `systemctl daemon-reload` and drives it with `start`, `stop` and `is-active`. A device whose
//! PID 1 is not systemd, or whose `systemctl` does not answer, is refused with a clear error.
//! Rendering is a pure function; only [`Systemd`] runs commands.

use crate::runtime::files;
use fleet_schema::app_spec::{AppSpec, RestartPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where units are written on a real device.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";

/// Why the systemd runtime cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The device does not run systemd (or systemctl does not work).
    #[error("runtime systemd is not available on this device: {0}")]
    Absent(String),
    /// A value cannot be written into a unit file.
    #[error("cannot write the systemd unit: {field} {problem}")]
    BadValue {
        /// Which setting.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Writing the unit failed.
    #[error("cannot write the systemd unit {path}: {source}")]
    Io {
        /// The unit file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// `systemctl` failed.
    #[error("systemctl {action} failed: {detail}")]
    Systemctl {
        /// The subcommand.
        action: String,
        /// Exit status and stderr.
        detail: String,
    },
}

/// The unit name of an app.
pub fn unit_name(app: &str) -> String {
    format!("fleet-{app}.service")
}

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
    /// Variables the agent adds (FLEET_*), beside the spec's env.
    pub extra_env: &'a [(String, String)],
    /// Where stdout is appended.
    pub stdout_log: &'a Path,
    /// Where stderr is appended.
    pub stderr_log: &'a Path,
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

/// `Restart=` for a restart policy.
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
    let rt = &u.spec.runtime;
    let mut exec = vec![quote(&path_value("ExecStart", u.exec)?)];
    for (i, a) in rt.args.iter().enumerate() {
        check(&format!("runtime.args[{i}]"), a)?;
        exec.push(quote(a));
    }
    let mut s = String::new();
    s.push_str("# Written by fleet-agent; changes are overwritten on the next start.\n[Unit]\n");
    s.push_str(&format!(
        "Description=FleetD app {} {}\n\n[Service]\nType=simple\n",
        u.app, u.version
    ));
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
    if rt.stop_grace_ms > 0 {
        s.push_str(&format!("TimeoutStopSec={}ms\n", rt.stop_grace_ms));
    }
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
    s.push_str("KillMode=control-group\n\n[Install]\nWantedBy=multi-user.target\n");
    Ok(s)
}

/// Why a device with this PID 1 name and systemctl answer cannot use systemd (`None`: it can).
pub fn absence_reason(pid1_comm: Option<&str>, systemctl_works: bool) -> Option<String> {
    match pid1_comm.map(str::trim) {
        Some("systemd") if systemctl_works => None,
        Some("systemd") => Some("systemctl is missing or does not answer".into()),
        Some(other) => Some(format!("PID 1 is {other:?}, not systemd")),
        None => Some("cannot read /proc/1/comm".into()),
    }
}

/// `systemctl` arguments for an action on a unit (`daemon-reload` takes no unit).
pub fn systemctl_args(action: &str, unit: Option<&str>) -> Vec<String> {
    let mut v = vec![action.to_string()];
    v.extend(unit.map(str::to_string));
    v
}

/// Drives units on a device that runs systemd.
#[derive(Debug, Clone)]
pub struct Systemd {
    unit_dir: PathBuf,
    systemctl: PathBuf,
}

impl Systemd {
    /// Checks that PID 1 is systemd and `systemctl` answers; units go to `unit_dir`.
    pub fn detect(unit_dir: &Path) -> Result<Self, SystemdError> {
        let comm = std::fs::read_to_string("/proc/1/comm").ok();
        let works = Command::new("systemctl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        match absence_reason(comm.as_deref(), works) {
            Some(reason) => Err(SystemdError::Absent(reason)),
            None => Ok(Self {
                unit_dir: unit_dir.to_path_buf(),
                systemctl: PathBuf::from("systemctl"),
            }),
        }
    }

    /// A driver with an explicit unit directory and `systemctl` program, without detection
    /// (tests, or a device where detection is done elsewhere).
    pub fn with_tools(unit_dir: &Path, systemctl: &Path) -> Self {
        Self {
            unit_dir: unit_dir.to_path_buf(),
            systemctl: systemctl.to_path_buf(),
        }
    }

    /// The unit file of `app`.
    pub fn unit_path(&self, app: &str) -> PathBuf {
        self.unit_dir.join(unit_name(app))
    }

    /// Writes the unit atomically and reloads systemd.
    pub fn install(&self, app: &str, unit: &str) -> Result<(), SystemdError> {
        let path = self.unit_path(app);
        files::write_atomic(&path, unit.as_bytes(), 0o644).map_err(|e| SystemdError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.run("daemon-reload", None).map(|_| ())
    }

    /// Starts the app's unit.
    pub fn start(&self, app: &str) -> Result<(), SystemdError> {
        self.run("start", Some(&unit_name(app))).map(|_| ())
    }

    /// Stops the app's unit.
    pub fn stop(&self, app: &str) -> Result<(), SystemdError> {
        self.run("stop", Some(&unit_name(app))).map(|_| ())
    }

    /// True when the app's unit is active.
    pub fn is_active(&self, app: &str) -> bool {
        let args = systemctl_args("is-active", Some(&unit_name(app)));
        Command::new(&self.systemctl)
            .args(&args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(&self, action: &str, unit: Option<&str>) -> Result<String, SystemdError> {
        let out = Command::new(&self.systemctl)
            .args(systemctl_args(action, unit))
            .output()
            .map_err(|e| SystemdError::Systemctl {
                action: action.to_string(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SystemdError::Systemctl {
                action: action.to_string(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
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
        let extra = [("FLEET_APP_NAME".to_string(), "web".to_string())];
        let pre = Path::new("/data/apps/web/1.2.0/pre.sh");
        let mut u = input(&spec, &extra);
        u.pre_start = Some(pre);
        let unit = render_unit(&u).expect("renders");
        for line in [
            r#"ExecStart="/data/apps/web/1.2.0/web" "--port" "80 80" "100%%$$HOME""#,
            r#"ExecStartPre="/data/apps/web/1.2.0/pre.sh""#,
            "WorkingDirectory=/data/apps/web/1.2.0",
            r#"Environment="FLEET_APP_NAME=web""#,
            r#"Environment="GREETING=say \"hi\"""#,
            "Restart=on-failure",
            "TimeoutStopSec=2500ms",
            "MemoryMax=268435456",
            "CPUQuota=150%",
            "LimitNOFILE=1024",
            "StandardOutput=append:/data/logs/web.out.log",
            "StandardError=append:/data/logs/web.err.log",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{line} missing from\n{unit}"
            );
        }
        assert_eq!(unit_name("web"), "fleet-web.service");
    }

    #[test]
    fn defaults_leave_limits_out_and_map_restart_policies() {
        let spec = AppSpec::default();
        let unit = render_unit(&input(&spec, &[])).expect("renders");
        assert!(unit.contains("Restart=always\n"), "{unit}");
        assert!(
            !unit.contains("MemoryMax") && !unit.contains("TimeoutStopSec"),
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
        let spec = AppSpec::default();
        let mut u = input(&spec, &[]);
        u.workdir = Path::new("relative/dir");
        let e = render_unit(&u).expect_err("refused").to_string();
        assert!(
            e.contains("WorkingDirectory") && e.contains("not an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn devices_without_systemd_are_refused_clearly() {
        assert_eq!(absence_reason(Some("systemd\n"), true), None);
        let r = absence_reason(Some("bash\n"), true).expect("refused");
        assert!(r.contains("PID 1 is \"bash\""), "{r}");
        let r = absence_reason(Some("systemd"), false).expect("refused");
        assert!(r.contains("systemctl"), "{r}");
        assert!(absence_reason(None, true).is_some());
        // This machine (a container) has no systemd as PID 1: detection refuses.
        if std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() != "systemd") {
            let dir = tempfile::tempdir().expect("tempdir");
            let e = Systemd::detect(dir.path()).expect_err("absent").to_string();
            assert!(e.contains("not available"), "{e}");
        }
    }

    #[test]
    fn systemctl_commands() {
        assert_eq!(systemctl_args("daemon-reload", None), ["daemon-reload"]);
        assert_eq!(
            systemctl_args("is-active", Some("fleet-web.service")),
            ["is-active", "fleet-web.service"]
        );
    }

    #[test]
    fn units_go_to_the_configured_dir_and_systemctl_is_driven() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let calls = d.path().join("calls");
        // A stand-in recording its arguments; `is-active` of fleet-down fails like systemctl.
        let fake = d.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$2\" != fleet-down.service ]\n",
                calls.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let units = d.path().join("units");
        std::fs::create_dir(&units).expect("mkdir");
        let sd = Systemd::with_tools(&units, &fake);
        sd.install("web", "[Service]\n").expect("installs");
        assert_eq!(
            std::fs::read_to_string(units.join("fleet-web.service")).expect("unit"),
            "[Service]\n"
        );
        sd.start("web").expect("starts");
        assert!(sd.is_active("web"));
        assert!(!sd.is_active("down"));
        sd.stop("web").expect("stops");
        assert_eq!(
            std::fs::read_to_string(&calls).expect("calls"),
            "daemon-reload\nstart fleet-web.service\nis-active fleet-web.service\nis-active fleet-down.service\nstop fleet-web.service\n"
        );
        let broken = Systemd::with_tools(&units, &d.path().join("missing"));
        let e = broken.start("web").expect_err("fails").to_string();
        assert!(e.contains("systemctl start failed"), "{e}");
    }
}
