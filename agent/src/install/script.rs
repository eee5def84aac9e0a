//! An archive's install script (`runtime.install_script`): run once after unpacking, in the
//! unpacked directory (renamed to the version directory when it succeeds), with the app's
//! environment, in its own process group and for a bounded time. Its stderr is kept in a file
//! beside the directory so a failure reports the exit status and the last stderr lines.

use crate::install::archive;
use crate::install::InstallError;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long an install script may run when the plan does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How many trailing stderr lines a failure reports.
pub const STDERR_LINES: usize = 10;

/// One install script run.
#[derive(Debug, Clone)]
pub struct ScriptRun<'a> {
    /// The script, relative to `dir`.
    pub script: &'a str,
    /// The unpacked directory; the script's working directory.
    pub dir: &'a Path,
    /// Where the directory will live once installed (given as `FLEET_APP_DIR`).
    pub final_dir: &'a Path,
    /// App name and version (`FLEET_APP_NAME`, `FLEET_APP_VERSION`).
    pub app: &'a str,
    /// App version.
    pub version: &'a str,
    /// The app's environment.
    pub env: &'a BTreeMap<String, String>,
    /// Longest run allowed.
    pub timeout: Duration,
}

/// Resolves `script` inside `dir`: a regular file (made executable), never outside, and
/// returns its physical path (no link in it), so running it cannot leave `dir` either.
pub fn resolve(dir: &Path, script: &str, what: &str) -> Result<PathBuf, InstallError> {
    let rel = archive::safe_relative(script)
        .map_err(|e| InstallError::Script(format!("{what} {script:?}: {e}")))?
        .ok_or_else(|| InstallError::Script(format!("{what} path is empty")))?;
    let (fd, physical) = crate::confine::open_file(dir, &rel, nix::fcntl::OFlag::O_RDONLY)
        .map_err(|e| match e {
            crate::confine::ConfineError::Missing(_) => {
                InstallError::Script(format!("{what} {script:?} is not in the archive"))
            }
            e => InstallError::Script(format!("{what} {script:?}: {e}")),
        })?;
    // Changed on the open descriptor: no path, so no link, is involved.
    let file = File::from(fd);
    let mode = file
        .metadata()
        .map_err(|source| InstallError::Io {
            context: format!("cannot read the mode of {what} {script:?}"),
            source,
        })?
        .permissions()
        .mode();
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777 | 0o500))
        .map_err(|source| InstallError::Io {
            context: format!("cannot make {what} {script:?} executable"),
            source,
        })?;
    Ok(dir.join(physical))
}

/// The last `n` non-empty lines of `text`, joined with " | ".
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Runs the install script; an error names the exit status (or the timeout) and the last
/// stderr lines.
pub fn run(r: &ScriptRun<'_>) -> Result<(), InstallError> {
    let path = resolve(r.dir, r.script, "install script")?;
    let err_path = r
        .dir
        .with_file_name(format!(".{}.install-stderr", r.version));
    let io = |context: String| move |source| InstallError::Io { context, source };
    // Beside the version directory, where an app could have left a link: never followed.
    let stderr = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&err_path)
        .map_err(io(format!("cannot create {}", err_path.display())))?;
    let mut child = Command::new(&path)
        .current_dir(r.dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .envs(r.env.iter())
        .env("FLEET_APP_NAME", r.app)
        .env("FLEET_APP_VERSION", r.version)
        .env("FLEET_APP_DIR", r.final_dir)
        .spawn()
        .map_err(|e| {
            InstallError::Script(format!("cannot run install script {:?}: {e}", r.script))
        })?;
    let deadline = Instant::now() + r.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(InstallError::Script(format!(
                    "cannot wait for install script {:?}: {e}",
                    r.script
                )))
            }
        }
    };
    if status.is_none() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.wait();
    }
    let text = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&err_path);
    let tail = last_lines(&text, STDERR_LINES);
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {tail}")
    };
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(InstallError::Script(format!(
            "install script {:?} failed with {}{tail}",
            r.script,
            crate::runtime::raw::describe_exit(s)
        ))),
        None => Err(InstallError::Script(format!(
            "install script {:?} did not finish within {} s and was killed{tail}",
            r.script,
            r.timeout.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(script: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let unpacked = dir.path().join("stage");
        fs::create_dir(&unpacked).expect("mkdir");
        fs::write(unpacked.join("install.sh"), script).expect("write");
        (dir, unpacked)
    }

    fn run_in(dir: &Path, script: &str, timeout: Duration) -> Result<(), InstallError> {
        let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        run(&ScriptRun {
            script,
            dir,
            final_dir: Path::new("/final/dir"),
            app: "web",
            version: "1.0.0",
            env: &env,
            timeout,
        })
    }

    #[test]
    fn runs_in_the_unpacked_dir_with_the_apps_env() {
        let (_t, dir) = setup(
            "#!/bin/sh\necho \"$GREETING $FLEET_APP_NAME $FLEET_APP_VERSION $FLEET_APP_DIR\" > done.txt\n",
        );
        run_in(&dir, "install.sh", DEFAULT_TIMEOUT).expect("runs");
        assert_eq!(
            fs::read_to_string(dir.join("done.txt")).expect("written"),
            "hi web 1.0.0 /final/dir\n"
        );
        assert!(!dir.with_file_name(".1.0.0.install-stderr").exists());
    }

    #[test]
    fn failure_names_exit_status_and_last_stderr_lines() {
        let (_t, dir) = setup(
            "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \"line $i\" >&2; done\nexit 7\n",
        );
        let e = run_in(&dir, "install.sh", DEFAULT_TIMEOUT)
            .expect_err("fails")
            .to_string();
        assert!(e.contains("exit status 7"), "{e}");
        assert!(e.contains("line 12") && e.contains("line 3"), "{e}");
        assert!(!e.contains("line 2 "), "only the last lines: {e}");
    }

    #[test]
    fn a_hanging_script_is_killed_at_the_deadline() {
        let (_t, dir) = setup("#!/bin/sh\necho waiting >&2\nsleep 600\n");
        let started = Instant::now();
        let e = run_in(&dir, "install.sh", Duration::from_millis(300))
            .expect_err("times out")
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.contains("did not finish") && e.contains("waiting"), "{e}");
    }

    #[test]
    fn missing_or_escaping_scripts_are_refused() {
        let (_t, dir) = setup("#!/bin/sh\n");
        let e = run_in(&dir, "nope.sh", DEFAULT_TIMEOUT).expect_err("missing");
        assert!(e.to_string().contains("not in the archive"), "{e}");
        let e = run_in(&dir, "../install.sh", DEFAULT_TIMEOUT).expect_err("escapes");
        assert!(e.to_string().contains(".."), "{e}");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 3), "");
    }

    /// A real tar.gz with an entry point and scripts, installed through [`crate::install`].
    fn tar_gz(install: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, body) in [
            ("bin/app", "#!/bin/sh\nexec sleep 600\n"),
            ("scripts/install.sh", install),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes())
                .expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    fn install_archive(data: &Path, bytes: &[u8], version: &str) -> Result<PathBuf, InstallError> {
        let dl = crate::layout::partial(data, "web", version);
        fs::create_dir_all(dl.parent().expect("parent")).expect("mkdir");
        fs::write(&dl, bytes).expect("write");
        let mut plan = crate::install::InstallPlan::binary();
        plan.kind = fleet_schema::ArtifactType::Archive;
        plan.entrypoint = Some("bin/app".into());
        plan.install_script = Some("scripts/install.sh".into());
        plan.env.insert("GREETING".into(), "hello".into());
        crate::install::install(data, "web", version, &dl, &Default::default(), &plan)
    }

    #[test]
    fn a_tar_gz_install_script_runs_once_in_the_version_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        let bytes = tar_gz("#!/bin/sh\necho \"$GREETING $FLEET_APP_DIR\" >> installed.txt\n");
        install_archive(t.path(), &bytes, "1.0.0").expect("installs");
        let vdir = crate::layout::version_dir(t.path(), "web", "1.0.0");
        assert_eq!(
            fs::read_to_string(vdir.join("installed.txt")).expect("script ran"),
            format!("hello {}\n", vdir.display())
        );
    }

    #[test]
    fn a_failing_install_script_fails_the_install_and_leaves_no_version() {
        let t = tempfile::tempdir().expect("tempdir");
        let bytes = tar_gz("#!/bin/sh\necho 'missing libfoo' >&2\nexit 4\n");
        let e = install_archive(t.path(), &bytes, "1.0.0")
            .expect_err("fails")
            .to_string();
        assert!(
            e.starts_with("install failed")
                && e.contains("exit status 4")
                && e.contains("missing libfoo"),
            "{e}"
        );
        assert!(!crate::layout::version_dir(t.path(), "web", "1.0.0").exists());
    }

    #[test]
    fn a_missing_pre_start_script_fails_the_install() {
        let t = tempfile::tempdir().expect("tempdir");
        let dl = crate::layout::partial(t.path(), "web", "1.0.0");
        fs::create_dir_all(dl.parent().expect("parent")).expect("mkdir");
        fs::write(&dl, tar_gz("#!/bin/sh\n")).expect("write");
        let mut plan = crate::install::InstallPlan::binary();
        plan.kind = fleet_schema::ArtifactType::Archive;
        plan.entrypoint = Some("bin/app".into());
        plan.pre_start_script = Some("scripts/missing.sh".into());
        let e = crate::install::install(t.path(), "web", "1.0.0", &dl, &Default::default(), &plan)
            .expect_err("fails")
            .to_string();
        assert!(
            e.contains("pre-start script \"scripts/missing.sh\" is not in the archive"),
            "{e}"
        );
    }

    #[test]
    fn a_zip_install_script_runs() {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        w.start_file("bin/app", o).expect("file");
        w.write_all(b"#!/bin/sh\nexec sleep 600\n").expect("write");
        w.start_file("scripts/install.sh", o).expect("file");
        w.write_all(b"#!/bin/sh\ntouch zipped.txt\n")
            .expect("write");
        let bytes = w.finish().expect("zip").into_inner();
        let t = tempfile::tempdir().expect("tempdir");
        install_archive(t.path(), &bytes, "2.0.0").expect("installs");
        assert!(crate::layout::version_dir(t.path(), "web", "2.0.0")
            .join("zipped.txt")
            .is_file());
    }
}
