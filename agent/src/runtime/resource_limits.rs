//! Resource limits for raw apps without `unsafe`: the agent re-executes itself as a tiny
//! launcher (`fleet-agent __fleet-launch ...`) in the new process group, which sets its own
//! rlimits (RLIMIT_AS, RLIMIT_NOFILE) with `setrlimit`, joins the app's cgroup v2 when one was
//! prepared, and then `exec`s the app. Limits are therefore in force before the app's first
//! instruction, and the pid (process group, start time) is the app's from the start.

use fleet_schema::app_spec::Resources;
use nix::sys::resource::{setrlimit, Resource};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// First argument that turns `fleet-agent` into the launcher.
pub const LAUNCH_ARG: &str = "__fleet-launch";

/// Where the agent puts the cgroups of its apps, below the cgroup v2 root.
pub const CGROUP_PARENT: &str = "fleet-apps";

/// The limits applied to one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_AS, bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// cgroup v2 directory the launcher joins (memory.max and cpu.max already written).
    pub cgroup: Option<PathBuf>,
}

impl Limits {
    /// True when nothing needs the launcher.
    pub fn is_empty(&self) -> bool {
        self.address_space.is_none() && self.open_files.is_none() && self.cgroup.is_none()
    }

    /// The rlimits of an app's resources (the cgroup is prepared separately).
    pub fn from_resources(r: &Resources) -> Self {
        Self {
            address_space: r.memory_limit,
            open_files: r.open_files,
            cgroup: None,
        }
    }

    /// The launcher's arguments for running `exe args..` under these limits.
    pub fn launcher_args(&self, exe: &Path, args: &[String]) -> Vec<OsString> {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        let mut out: Vec<OsString> = vec![
            LAUNCH_ARG.into(),
            opt(self.address_space).into(),
            opt(self.open_files).into(),
            self.cgroup
                .as_ref()
                .map_or_else(|| OsString::from("-"), |p| p.as_os_str().to_os_string()),
            exe.as_os_str().to_os_string(),
        ];
        out.extend(args.iter().map(OsString::from));
        out
    }
}

/// Why the launcher could not start the app (printed to the app's log by the caller).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The argument list is not what [`Limits::launcher_args`] produces.
    #[error("launcher: bad arguments")]
    Usage,
    /// setrlimit failed.
    #[error("launcher: cannot set {0}: {1}")]
    Rlimit(&'static str, nix::errno::Errno),
    /// Joining the cgroup failed.
    #[error("launcher: cannot join cgroup {0}: {1}")]
    Cgroup(String, std::io::Error),
    /// exec failed.
    #[error("launcher: cannot execute {0}: {1}")]
    Exec(String, std::io::Error),
}

/// A limit in the platform's `rlim_t` (32 bits on armv7): values beyond it mean unlimited.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn rlim(n: u64) -> nix::libc::rlim_t {
    nix::libc::rlim_t::try_from(n).unwrap_or(nix::libc::RLIM_INFINITY)
}

/// The launcher: applies the limits to itself and execs the app. Returns only on error.
pub fn launcher_main(args: &[OsString]) -> LaunchError {
    let [as_bytes, nofile, cgroup, exe, rest @ ..] = args else {
        return LaunchError::Usage;
    };
    let num = |s: &OsString| s.to_str().and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = num(as_bytes) {
        if let Err(e) = setrlimit(Resource::RLIMIT_AS, rlim(n), rlim(n)) {
            return LaunchError::Rlimit("RLIMIT_AS", e);
        }
    }
    if let Some(n) = num(nofile) {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, rlim(n), rlim(n)) {
            return LaunchError::Rlimit("RLIMIT_NOFILE", e);
        }
    }
    if cgroup != "-" {
        let procs = Path::new(cgroup).join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, b"0") {
            return LaunchError::Cgroup(procs.display().to_string(), e);
        }
    }
    let err = std::process::Command::new(exe).args(rest).exec();
    LaunchError::Exec(exe.to_string_lossy().into_owned(), err)
}

/// Prepares `<cgroup2 root>/fleet-apps/<app>` with memory.max and cpu.max when the agent may
/// write them (cgroup v2 mounted at `root`, controllers delegable); `None` otherwise, and the
/// app runs with its rlimits only.
pub fn prepare_cgroup(root: &Path, app: &str, r: &Resources) -> Option<PathBuf> {
    if r.memory_limit.is_none() && r.cpu_limit_millis.is_none() {
        return None;
    }
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    let wanted: Vec<&str> = ["memory", "cpu"]
        .into_iter()
        .filter(|c| controllers.split_whitespace().any(|have| have == *c))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    let parent = root.join(CGROUP_PARENT);
    let dir = parent.join(app);
    let attempt = || -> std::io::Result<()> {
        std::fs::write(root.join("cgroup.subtree_control"), enable.trim())?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(parent.join("cgroup.subtree_control"), enable.trim())?;
        if let Some(m) = r.memory_limit {
            std::fs::write(dir.join("memory.max"), m.to_string())?;
        }
        if let Some(c) = r.cpu_limit_millis {
            std::fs::write(dir.join("cpu.max"), cpu_max(c))?;
        }
        Ok(())
    };
    match attempt() {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::debug!(app, error = %e, "cgroup v2 limits not writable; using rlimits only");
            None
        }
    }
}

/// The `cpu.max` line for a limit in millicores (100 ms period).
pub fn cpu_max(millis: u32) -> String {
    let period = 100_000u64;
    let quota = (u64::from(millis) * period / 1000).max(1000);
    format!("{quota} {period}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_arguments_round_trip_the_limits() {
        let l = Limits {
            address_space: Some(64 << 20),
            open_files: None,
            cgroup: None,
        };
        let args = l.launcher_args(Path::new("/a/b"), &["x".into(), "y z".into()]);
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(text, [LAUNCH_ARG, "67108864", "-", "-", "/a/b", "x", "y z"]);
        assert!(Limits::default().is_empty());
        assert!(matches!(launcher_main(&args[1..3]), LaunchError::Usage));
    }

    #[test]
    fn cpu_max_is_quota_per_period() {
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
        assert_eq!(cpu_max(1), "1000 100000", "floor keeps the app schedulable");
    }

    #[test]
    fn no_cgroup_without_a_writable_v2_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Resources {
            memory_limit: Some(1 << 20),
            ..Default::default()
        };
        assert_eq!(
            prepare_cgroup(dir.path(), "a", &r),
            None,
            "no controllers file"
        );
        std::fs::write(dir.path().join("cgroup.controllers"), "memory cpu io").expect("write");
        let got = prepare_cgroup(dir.path(), "a", &r).expect("writable fake hierarchy");
        assert_eq!(
            std::fs::read_to_string(got.join("memory.max")).expect("memory.max"),
            "1048576"
        );
        assert_eq!(prepare_cgroup(dir.path(), "a", &Resources::default()), None);
    }
}
