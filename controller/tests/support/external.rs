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

/// A Mosquitto broker on an ephemeral port, killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto, or returns None (skip) when it is not installed.
    pub fn start() -> Option<Self> {
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto"])?;
        let dir = tempfile::tempdir().expect("temp dir for mosquitto.conf");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmessage_size_limit 0\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
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
        Some(Self {
            child,
            port,
            _dir: dir,
        })
    }

    /// The broker's URL for `--mqtt-url`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
