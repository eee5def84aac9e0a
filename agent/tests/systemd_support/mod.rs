//! A private systemd user manager for the systemd runtime test: `systemd --user` in its own
//! mount namespace (the `/run/systemd/system` it insists on stays there), with its runtime
//! directory and HOME in a temp dir; told to exit, then killed, on drop.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::skip_or_fail as skip;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A private `systemd --user`, told to exit (then killed) on drop, even when the test fails.
pub struct UserManager {
    child: Child,
    dir: tempfile::TempDir,
}

impl UserManager {
    /// Starts the manager, or returns None after a loud notice when systemd or unshare is
    /// missing (a failure instead with FLEET_REQUIRE_EXTERNAL=1).
    pub fn start() -> Option<Self> {
        let Some(bin) = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            skip("systemd is not installed: the systemd runtime test needs a user manager (apt-get install systemd)");
            return None;
        };
        if !on_path("unshare") || !on_path("systemctl") {
            skip("unshare or systemctl is missing: the systemd runtime test needs util-linux and systemd");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("runtime dir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/systemd/user")).expect("config dir");
        // The agent (started later by this test) inherits these: its `systemctl --user` talks
        // to this manager and its units go to this HOME. One test per binary: no other thread
        // reads the environment.
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        std::env::set_var("HOME", &home);
        std::env::set_var("XDG_CONFIG_HOME", home.join(".config"));
        let log = std::fs::File::create(dir.path().join("manager.log")).expect("log");
        let script = "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd \
                      && mkdir /run/systemd/system && exec \"$0\" --user";
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c", script, bin])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("spawn unshare");
        let mut m = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if m.systemctl(&["show", "-p", "Version"])
                .contains("Version=2")
            {
                return Some(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                let log = std::fs::read_to_string(m.dir.path().join("manager.log"));
                skip(&format!(
                    "cannot run a systemd user manager ({status}): {}",
                    log.unwrap_or_default().trim()
                ));
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the systemd user manager did not answer within 15 s");
    }

    /// `systemctl --user ARGS`' stdout.
    pub fn systemctl(&self, args: &[&str]) -> String {
        Command::new("systemctl")
            .arg("--user")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// A few properties of a unit.
    pub fn show(&self, unit: &str) -> BTreeMap<String, String> {
        self.systemctl(&[
            "show",
            "-p",
            "LoadState,ActiveState,MainPID,NRestarts",
            unit,
        ])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Where the agent writes its units (the default user unit directory).
    pub fn unit_dir(&self) -> PathBuf {
        self.dir.path().join("home/.config/systemd/user")
    }

    /// The manager's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        let _ = self.systemctl(&["exit"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file of `/proc/<pid>/` (empty when unreadable).
pub fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

/// True for a live, not zombie, process.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !proc_field(pid, "stat")
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

/// Polls `f` until it holds; panics naming `what` (and listing the manager's units) on timeout.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !fleet_testkit::wait_until(timeout, f) {
        let units = Command::new("systemctl")
            .args(["--user", "list-units", "--all", "--no-pager"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        panic!(
            "timed out waiting until {what}; units: {}",
            units.unwrap_or_default()
        );
    }
}
