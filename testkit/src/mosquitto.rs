//! A real Mosquitto broker for one test, on an ephemeral port of 127.0.0.1, killed on drop.
//! One configuration for every crate's tests (no persistence, no connection, message-size or
//! practical queue limit, a log file); what differs is who may connect ([`MosquittoAuth`]).

use crate::{require_tool, wait_until};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MosquittoAuth {
    /// Anyone, without credentials (tests that play every party themselves).
    Open,
    /// Only those in FleetD's password and ACL files (`fleetd --mosquitto-dir`), empty until
    /// fleetd writes them: nobody may connect before.
    FleetFiles,
}

/// A running Mosquitto.
pub struct Mosquitto {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    auth: MosquittoAuth,
    bin: PathBuf,
}

/// How long Mosquitto may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts Mosquitto with `conf` and waits until it listens on `port`.
fn spawn_on(bin: &Path, conf: &Path, port: u16) -> Child {
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let listening = wait_until(LISTEN_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        listening,
        "mosquitto did not listen on port {port} within {LISTEN_TIMEOUT:?}"
    );
    child
}

impl Mosquitto {
    /// Starts Mosquitto, or returns None after [`crate::skip_or_fail`] when it is not
    /// installed.
    pub fn start(auth: MosquittoAuth) -> Option<Self> {
        let bin = require_tool(
            "mosquitto",
            &["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"],
        )?;
        let dir = tempfile::tempdir().expect("temp dir for mosquitto.conf");
        // Started as root, Mosquitto drops to its own user: it must be able to read its files
        // (as in a real installation) and write its log.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the broker's directory");
        let log = dir.path().join("mosquitto.log");
        std::fs::write(&log, "").expect("create the log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod log");
        let port = crate::free_port();
        let auth_lines = match auth {
            MosquittoAuth::FleetFiles => {
                let password = fleet_schema::trust::keys::new_secret_hex().expect("random");
                std::fs::write(dir.path().join("fleetd.password"), password)
                    .expect("password file");
                let files = dir.path().join("fleet");
                std::fs::create_dir_all(&files).expect("files dir");
                for f in ["fleet.passwd", "fleet.acl"] {
                    std::fs::write(files.join(f), "").expect("empty file");
                }
                format!(
                    "allow_anonymous false\npassword_file {0}/fleet.passwd\nacl_file {0}/fleet.acl\n",
                    files.display()
                )
            }
            MosquittoAuth::Open => "allow_anonymous true\n".to_string(),
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{auth_lines}persistence false\nmax_connections -1\n\
                 message_size_limit 0\nmax_queued_messages 1000000\n\
                 log_dest file {}\nlog_type all\n",
                log.display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = spawn_on(&bin, &conf, port);
        Some(Self {
            child,
            port,
            dir,
            auth,
            bin,
        })
    }

    /// SIGKILLs the broker (its retained messages and sessions are gone: persistence is off).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port with the same configuration and files, and
    /// waits until it listens.
    pub fn start_again(&mut self) {
        self.kill9();
        self.child = spawn_on(
            &self.bin,
            &self.dir.path().join("mosquitto.conf"),
            self.port,
        );
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The process id of the running broker (for a reload by SIGHUP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Under [`MosquittoAuth::FleetFiles`]: the directory of `fleet.passwd` and `fleet.acl`.
    pub fn files_dir(&self) -> Option<PathBuf> {
        (self.auth == MosquittoAuth::FleetFiles).then(|| self.dir.path().join("fleet"))
    }

    /// Under [`MosquittoAuth::FleetFiles`]: the file with the password fleetd connects with.
    pub fn password_file(&self) -> Option<PathBuf> {
        (self.auth == MosquittoAuth::FleetFiles).then(|| self.dir.path().join("fleetd.password"))
    }

    /// The password fleetd connects with (user `_fleetd`), empty for an open broker.
    pub fn controller_password(&self) -> String {
        self.password_file()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The files fleetd wrote (password file, ACL file); empty when absent.
    pub fn files(&self) -> (String, String) {
        let read = |f| {
            self.files_dir()
                .and_then(|d| std::fs::read_to_string(d.join(f)).ok())
                .unwrap_or_default()
        };
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
