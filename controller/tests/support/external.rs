//! External servers for tests (Mosquitto today). A test that needs one and does not find it says
//! so loudly and skips; with FLEET_REQUIRE_EXTERNAL=1 (as `.ci/run` sets) it fails instead.

use super::{free_port, wait_until};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Returns the path of an external tool, or None after printing a loud skip notice; panics when
/// FLEET_REQUIRE_EXTERNAL=1.
pub fn require_tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return Some(p);
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let msg = format!("{name} is not installed: this test needs it (apt-get install {name})");
    if std::env::var("FLEET_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("{msg}; FLEET_REQUIRE_EXTERNAL=1 makes this a failure");
    }
    eprintln!("\n!!!!! SKIPPED: {msg} !!!!!\n");
    None
}

/// A broker fleetd is pointed at with `--mqtt-url`, and, for a Mosquitto with FleetD's files,
/// where fleetd keeps them and how it reloads the broker.
#[derive(Debug, Clone)]
pub struct BrokerRef {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The directory of `fleet.passwd` and `fleet.acl`, and the broker's pid (for SIGHUP).
    files: Option<(PathBuf, u32)>,
    /// A file with the password fleetd connects with (so tests can act as the broker's admin).
    password_file: Option<PathBuf>,
}

impl BrokerRef {
    /// A broker without FleetD's files (an embedded broker the test started, say).
    pub fn plain(port: u16) -> BrokerRef {
        BrokerRef {
            port,
            files: None,
            password_file: None,
        }
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// fleetd's flags for this broker.
    pub fn fleetd_args(&self) -> Vec<String> {
        let mut args = vec!["--mqtt-url".to_string(), self.url()];
        if let Some((dir, pid)) = &self.files {
            args.push("--mosquitto-dir".into());
            args.push(dir.to_string_lossy().into_owned());
            args.push("--mosquitto-reload".into());
            args.push(format!("kill -HUP {pid}"));
        }
        if let Some(p) = &self.password_file {
            args.push("--mqtt-password-file".into());
            args.push(p.to_string_lossy().into_owned());
        }
        args
    }
}

/// A Mosquitto broker on an ephemeral port, killed on drop. By default it enforces FleetD's
/// password and ACL files (empty until fleetd writes them: nobody may connect before).
pub struct Mosquitto {
    child: Child,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    secured: bool,
    bin: PathBuf,
}

/// Starts Mosquitto with `conf` and waits until it listens on `port`.
fn spawn_on(bin: &std::path::Path, conf: &std::path::Path, port: u16) -> Child {
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        listening,
        "mosquitto did not listen on port {port} within 10 s"
    );
    child
}

impl Mosquitto {
    /// Starts Mosquitto with FleetD's password and ACL files in force, or returns None (skip)
    /// when it is not installed.
    pub fn start() -> Option<Self> {
        Self::launch(true)
    }

    /// Starts Mosquitto open to anyone (for tests of a broker without authentication).
    pub fn start_open() -> Option<Self> {
        Self::launch(false)
    }

    fn launch(secured: bool) -> Option<Self> {
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto"])?;
        let dir = tempfile::tempdir().expect("temp dir for mosquitto.conf");
        // Started as root, Mosquitto drops to its own user: it must be able to read its files
        // (as in a real installation) and write its log.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the broker's directory");
        let log = dir.path().join("mosquitto.log");
        std::fs::write(&log, "").expect("create the log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod log");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let auth = if secured {
            let password = fleet_schema::trust::keys::new_secret_hex().expect("random");
            std::fs::write(dir.path().join("fleetd.password"), password).expect("password file");
            let files = dir.path().join("fleet");
            std::fs::create_dir_all(&files).expect("files dir");
            for f in ["fleet.passwd", "fleet.acl"] {
                std::fs::write(files.join(f), "").expect("empty file");
            }
            format!(
                "allow_anonymous false\npassword_file {0}/fleet.passwd\nacl_file {0}/fleet.acl\n",
                files.display()
            )
        } else {
            "allow_anonymous true\n".to_string()
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{auth}persistence false\nmax_connections -1\nmessage_size_limit 0\nmax_queued_messages 1000000\nlog_dest file {}/mosquitto.log\nlog_type all\n",
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = spawn_on(&bin, &conf, port);
        Some(Self {
            child,
            port,
            dir,
            secured,
            bin,
        })
    }

    /// SIGKILLs the broker (its retained messages and sessions are gone: persistence is off).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port with the same configuration and FleetD's
    /// files, and waits until it listens. fleetd's reload command names the old pid: the
    /// restarted broker reads the files as they are at its start.
    pub fn start_again(&mut self) {
        self.kill9();
        self.child = spawn_on(
            &self.bin,
            &self.dir.path().join("mosquitto.conf"),
            self.port,
        );
    }

    /// The broker's URL for `--mqtt-url`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The reference fleetd starts with.
    pub fn broker(&self) -> BrokerRef {
        BrokerRef {
            port: self.port,
            files: self
                .secured
                .then(|| (self.dir.path().join("fleet"), self.child.id())),
            password_file: self
                .secured
                .then(|| self.dir.path().join("fleetd.password")),
        }
    }

    /// The password fleetd connects with (user `_fleetd`): the broker's administrator, whom
    /// tests impersonate to play a compromised broker.
    pub fn controller_password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fleetd.password"))
            .expect("fleetd password")
            .trim()
            .to_string()
    }

    /// The files fleetd wrote (password file, ACL file).
    pub fn files(&self) -> (String, String) {
        let read =
            |f| std::fs::read_to_string(self.dir.path().join("fleet").join(f)).unwrap_or_default();
        (read("fleet.passwd"), read("fleet.acl"))
    }

    /// Mosquitto's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
