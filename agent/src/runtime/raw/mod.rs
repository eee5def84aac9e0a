//! Process plumbing for the supervisor: launch an app in its own process group with its output
//! appended to a log file (so it survives an agent crash without SIGPIPE), signal whole process
//! groups, and recognise a process after an agent restart by pid plus start time.

use crate::layout;
use crate::runtime::container::{self, run as container_run};
use crate::runtime::{files, resource_limits::Limits};
use fleet_schema::AppSpec;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// Why an app could not be launched.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct SpawnError {
    context: String,
    source: std::io::Error,
}

/// A launched app process.
#[derive(Debug)]
pub struct Launched {
    /// The child handle, to wait for its exit.
    pub child: tokio::process::Child,
    /// Its pid (and process group id).
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The executable it runs.
    pub exe: PathBuf,
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec<'a> {
    /// Data directory (absolute).
    pub data: &'a Path,
    /// This device.
    pub device_id: &'a str,
    /// App name.
    pub app: &'a str,
    /// Version to run.
    pub version: &'a str,
    /// How to run it (env, files, args, entry point, workdir).
    pub app_spec: &'a AppSpec,
    /// Limits to apply before the app's first instruction.
    pub limits: Limits,
    /// The agent binary, used as the limits launcher; without it limits are not applied.
    pub launcher: Option<&'a Path>,
    /// Extra variables from the agent (e.g. FLEET_METRICS_URL).
    pub extra_env: &'a [(String, String)],
}

/// Starts an installed version: own process group, cwd = the spec's workdir or its version
/// directory, stdout appended to `logs/<app>.out.log` and stderr to `logs/<app>.err.log`, the
/// spec's configuration files written first, the pre-start script (if any) run first, the spec's env and FLEET_* variables added to the inherited environment, and the
/// resource limits applied through the launcher.
pub fn launch(spec: LaunchSpec<'_>) -> Result<Launched, SpawnError> {
    let err = |context: String| move |source| SpawnError { context, source };
    let vdir = layout::version_dir(spec.data, spec.app, spec.version);
    let rt = &spec.app_spec.runtime;
    // An image install: entry point and working directory are the container's.
    let image = container::Installed::read(&vdir);
    // Resolved inside the version directory: the exec never follows a link out of it.
    let exe = match image {
        Some(_) => layout::executable(spec.data, spec.app, spec.version),
        None => {
            files::program(&vdir, rt.entrypoint.as_deref(), spec.app).map_err(|e| SpawnError {
                context: "bad entry point".into(),
                source: std::io::Error::other(e.to_string()),
            })?
        }
    };
    let dir = match rt.workdir.as_ref().filter(|_| image.is_none()) {
        Some(w) => files::workdir(&vdir, w).map_err(|e| SpawnError {
            context: "bad working directory".into(),
            source: std::io::Error::other(e.to_string()),
        })?,
        None => vdir.clone(),
    };
    let config_err = |e: files::FileError| SpawnError {
        context: "configuration files".into(),
        source: std::io::Error::other(e.to_string()),
    };
    // A container gets its files bind-mounted; a process gets them where the spec says.
    let mounts = match &image {
        Some(_) => container_run::write_config_files(&vdir, spec.app_spec).map_err(config_err)?,
        None => {
            files::write_all(&vdir, &spec.app_spec.files).map_err(config_err)?;
            Vec::new()
        }
    };
    let log_path = layout::log_file(spec.data, spec.app);
    if let Some(logs) = log_path.parent() {
        std::fs::create_dir_all(logs).map_err(err(format!("cannot create {}", logs.display())))?;
    }
    // Never through a link: the agent rotates (copies and truncates) these files.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&log_path)
        .map_err(err(format!("cannot open {}", log_path.display())))?;
    let err_path = layout::err_log_file(spec.data, spec.app);
    let log2 = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&err_path)
        .map_err(err(format!("cannot open {}", err_path.display())))?;
    // Variables a container sees differently from a process (set after the others).
    let mut container_env: Vec<(String, String)> = Vec::new();
    let mut cmd = match (&image, spec.launcher.filter(|_| !spec.limits.is_empty())) {
        // The engine applies the limits; the launcher's rlimits would hobble its CLI.
        (Some(image), _) => {
            let mut names: Vec<String> = ["FLEET_DEVICE_ID", "FLEET_APP_NAME", "FLEET_APP_VERSION"]
                .into_iter()
                .map(String::from)
                .collect();
            names.extend(spec.app_spec.env.keys().cloned());
            names.extend(spec.extra_env.iter().map(|(k, _)| k.clone()));
            let mut c = tokio::process::Command::new(&exe);
            let mut options = Vec::new();
            if let Some((_, url)) = spec
                .extra_env
                .iter()
                .find(|(k, _)| k == container_run::METRICS_ENV)
            {
                let (url, opts) = container_run::metrics_route(image.engine, url);
                container_env.push((container_run::METRICS_ENV.to_string(), url));
                options = opts;
            }
            c.args(container_run::launcher_args(
                image,
                spec.app,
                spec.version,
                spec.app_spec,
                &names,
                &mounts,
                &options,
            ));
            c
        }
        (None, Some(launcher)) => {
            let mut c = tokio::process::Command::new(launcher);
            c.args(spec.limits.launcher_args(&exe, &rt.args));
            c
        }
        (None, None) => {
            let mut c = tokio::process::Command::new(&exe);
            c.args(&rt.args);
            c
        }
    };
    if let Some(script) = &rt.pre_start_script {
        let script = crate::runtime::prestart::resolve(&vdir, script).map_err(|e| SpawnError {
            context: "bad pre-start script".into(),
            source: std::io::Error::other(e),
        })?;
        cmd = crate::runtime::prestart::wrap_command(cmd, &script);
    }
    let child = cmd
        .current_dir(&dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .env("FLEET_DEVICE_ID", spec.device_id)
        .env("FLEET_APP_NAME", spec.app)
        .env("FLEET_APP_VERSION", spec.version)
        .env("FLEET_APP_DIR", &vdir)
        .envs(spec.app_spec.env.iter())
        .envs(spec.extra_env.iter().map(|(k, v)| (k, v)))
        .envs(container_env)
        .kill_on_drop(false)
        .spawn()
        .map_err(err(format!("cannot start {}", exe.display())))?;
    let pid = child.id().ok_or_else(|| SpawnError {
        context: "process exited before its pid was known".into(),
        source: std::io::Error::other("no pid"),
    })?;
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Launched {
        child,
        pid,
        start_time,
        exe,
    })
}

/// Sends `signal` to the process group led by `pid`; a group that is already gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, ?signal, error = %e, "cannot signal process group"),
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (state, start time).
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses state (field 3) and start time (field 22) of a `/proc/<pid>/stat` line. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process, in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// True when `pid` is a live (not zombie) process that started at `start_time`.
pub fn is_same_process(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some((state, t)) if t == start_time && state != 'Z' && state != 'X')
}

/// True when `pid` runs `exe` (or its executable cannot be inspected).
pub fn runs_executable(pid: u32, exe: &Path) -> bool {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(actual) => {
            let actual = actual.to_string_lossy();
            let actual = actual.trim_end_matches(" (deleted)");
            Path::new(actual) == exe
        }
        Err(_) => true,
    }
}

/// A short description of how a process ended.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (my (odd) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn launched_app_gets_its_environment_and_group_kill_leaves_no_orphan() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        let exe = layout::executable(data, "svc", "1.0.0");
        std::fs::create_dir_all(exe.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho \"$FLEET_DEVICE_ID $FLEET_APP_NAME $FLEET_APP_VERSION $FLEET_APP_DIR $(pwd)\"\nsleep 600 &\necho $! > child.pid\nwait\n",
        )
        .expect("write script");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut launched = launch(LaunchSpec {
            data,
            device_id: "dev-9",
            app: "svc",
            version: "1.0.0",
            app_spec: &AppSpec::default(),
            limits: Limits::default(),
            launcher: None,
            extra_env: &[],
        })
        .expect("launches");
        assert!(is_same_process(launched.pid, launched.start_time));
        let child_pid_file = layout::version_dir(data, "svc", "1.0.0").join("child.pid");
        let mut grandchild = None;
        for _ in 0..100 {
            if let Some(pid) = std::fs::read_to_string(&child_pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                grandchild = Some(pid);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let grandchild = grandchild.expect("script started its child");
        let grandchild_start = start_time(grandchild).expect("child alive");
        signal_group(launched.pid, Signal::SIGTERM);
        let status = launched.child.wait().await.expect("waits");
        assert_eq!(describe_exit(status), "killed by SIGTERM");
        for _ in 0..100 {
            if !is_same_process(grandchild, grandchild_start) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !is_same_process(grandchild, grandchild_start),
            "no orphan survives"
        );
        let log = std::fs::read_to_string(layout::log_file(data, "svc")).expect("log");
        let dir = layout::version_dir(data, "svc", "1.0.0");
        assert_eq!(
            log.trim(),
            format!("dev-9 svc 1.0.0 {} {}", dir.display(), dir.display())
        );
    }

    #[test]
    fn own_process_is_recognised() {
        let me = std::process::id();
        let t = start_time(me).expect("own stat readable");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert!(runs_executable(me, &exe));
        assert!(!runs_executable(me, Path::new("/nonexistent")));
    }
}
