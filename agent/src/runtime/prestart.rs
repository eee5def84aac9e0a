//! An archive's pre-start script (`runtime.pre_start_script`): run before every start, in the
//! app's process group with the app's environment, working directory and log files. The
//! launch command is wrapped in a tiny `/bin/sh` that runs the script and, only when it exits
//! 0, `exec`s the real command (same pid, so supervision is unchanged). A failing script ends
//! the start with the script's exit status and a line on the app's stderr naming it.

use crate::confine;
use crate::runtime::files;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The wrapper: `$1` is the script, the rest is the command to exec.
const WRAPPER: &str = r#"script="$1"; shift
"$script"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "fleet-agent: pre-start script $script failed with exit status $rc" >&2
  exit "$rc"
fi
exec "$@""#;

/// Resolves the script inside the version directory: a regular file, never outside it, reached
/// by links that stay inside; returns its physical path, so running it follows no link out.
pub fn resolve(vdir: &Path, script: &str) -> Result<PathBuf, String> {
    let path =
        files::resolve(vdir, script).map_err(|e| format!("pre-start script {script:?}: {e}"))?;
    let Ok(rel) = path.strip_prefix(vdir) else {
        return Err(format!(
            "pre-start script {script:?} must be inside the version directory"
        ));
    };
    match confine::open_file(vdir, rel, nix::fcntl::OFlag::O_RDONLY) {
        Ok((_, physical)) => Ok(vdir.join(physical)),
        Err(confine::ConfineError::Missing(_)) => Err(format!(
            "pre-start script {script:?} is not in the installed version"
        )),
        Err(e) => Err(format!("pre-start script {script:?}: {e}")),
    }
}

/// The program and arguments that run `script` and then `program args...`.
pub fn wrap(script: &Path, program: &Path, args: &[OsString]) -> (PathBuf, Vec<OsString>) {
    let mut out: Vec<OsString> = vec![
        "-c".into(),
        WRAPPER.into(),
        "fleet-pre-start".into(),
        script.into(),
        program.into(),
    ];
    out.extend(args.iter().cloned());
    (PathBuf::from("/bin/sh"), out)
}

/// Replaces `cmd`'s program and arguments with the wrapped ones (nothing else is set yet when
/// the launcher calls this).
pub fn wrap_command(cmd: tokio::process::Command, script: &Path) -> tokio::process::Command {
    let std = cmd.as_std();
    let args: Vec<OsString> = std.get_args().map(OsString::from).collect();
    let (program, args) = wrap(script, Path::new(std.get_program()), &args);
    let mut c = tokio::process::Command::new(program);
    c.args(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn run(script: &Path, program: &Path, args: &[&str]) -> std::process::Output {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (p, a) = wrap(script, program, &args);
        std::process::Command::new(p)
            .args(a)
            .output()
            .expect("runs")
    }

    #[test]
    fn the_script_runs_before_the_program_with_its_arguments() {
        let d = tempfile::tempdir().expect("tempdir");
        let pre = script(d.path(), "pre.sh", "#!/bin/sh\necho pre\n");
        let app = script(d.path(), "app", "#!/bin/sh\necho \"app $1 $2\"\n");
        let out = run(&pre, &app, &["a b", "c"]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "pre\napp a b c\n");
    }

    #[test]
    fn a_failing_script_stops_the_start_with_its_status() {
        let d = tempfile::tempdir().expect("tempdir");
        let pre = script(d.path(), "pre.sh", "#!/bin/sh\nexit 3\n");
        let app = script(d.path(), "app", "#!/bin/sh\necho started\n");
        let out = run(&pre, &app, &[]);
        assert_eq!(out.status.code(), Some(3));
        assert!(out.stdout.is_empty(), "the app did not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("pre-start script") && err.contains("exit status 3"),
            "{err}"
        );
    }

    #[test]
    fn missing_or_escaping_scripts_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        let e = resolve(d.path(), "nope.sh").expect_err("missing");
        assert!(e.contains("not in the installed version"), "{e}");
        let e = resolve(d.path(), "sub").expect_err("a directory");
        assert!(e.contains("not a regular file"), "{e}");
        assert!(resolve(d.path(), "../x.sh").is_err());
    }

    #[tokio::test]
    async fn launch_runs_the_script_first_and_splits_stdout_from_stderr() {
        use crate::layout;
        let d = tempfile::tempdir().expect("tempdir");
        let data = d.path();
        let vdir = layout::version_dir(data, "svc", "1.0.0");
        std::fs::create_dir_all(vdir.join("bin")).expect("mkdir");
        script(
            &vdir,
            "svc",
            "#!/bin/sh\necho \"out $(cat prepared)\"\necho oops >&2\n",
        );
        script(
            &vdir.join("bin"),
            "pre.sh",
            "#!/bin/sh\necho ready > prepared\necho pre-note >&2\n",
        );
        let mut spec = fleet_schema::AppSpec::default();
        spec.runtime.pre_start_script = Some("bin/pre.sh".into());
        let mut launched = crate::runtime::raw::launch(crate::runtime::raw::LaunchSpec {
            data,
            device_id: "dev-1",
            app: "svc",
            version: "1.0.0",
            app_spec: &spec,
            limits: crate::runtime::resource_limits::Limits::default(),
            launcher: None,
            extra_env: &[],
        })
        .expect("launches");
        let status = launched.child.wait().await.expect("waits");
        assert!(status.success());
        let read = |p| std::fs::read_to_string(p).expect("log");
        assert_eq!(read(layout::log_file(data, "svc")), "out ready\n");
        assert_eq!(read(layout::err_log_file(data, "svc")), "pre-note\noops\n");

        spec.runtime.pre_start_script = Some("bin/missing.sh".into());
        let e = crate::runtime::raw::launch(crate::runtime::raw::LaunchSpec {
            data,
            device_id: "dev-1",
            app: "svc",
            version: "1.0.0",
            app_spec: &spec,
            limits: crate::runtime::resource_limits::Limits::default(),
            launcher: None,
            extra_env: &[],
        })
        .expect_err("refused");
        assert!(e.to_string().contains("bin/missing.sh"), "{e}");
    }
}
