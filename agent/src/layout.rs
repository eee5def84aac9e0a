//! Where things live under the data directory. This layout is a contract with operators and
//! the end-to-end tests: `agent.redb`, `downloads/<app>-<version>.partial`,
//! `apps/<app>/<version>/<app>`, `logs/<app>.out.log` and `logs/<app>.err.log`.

use std::path::{Path, PathBuf};

/// The agent's database.
pub fn database(data: &Path) -> PathBuf {
    data.join("agent.redb")
}

/// Download in progress (or verified and waiting to be installed).
pub fn partial(data: &Path, app: &str, version: &str) -> PathBuf {
    data.join("downloads")
        .join(format!("{app}-{version}.partial"))
}

/// All versions of one app.
pub fn app_dir(data: &Path, app: &str) -> PathBuf {
    data.join("apps").join(app)
}

/// One installed version (also the process's working directory).
pub fn version_dir(data: &Path, app: &str, version: &str) -> PathBuf {
    app_dir(data, app).join(version)
}

/// The executable of one installed version.
pub fn executable(data: &Path, app: &str, version: &str) -> PathBuf {
    version_dir(data, app, version).join(app)
}

/// The app's standard output (appended).
pub fn log_file(data: &Path, app: &str) -> PathBuf {
    data.join("logs").join(format!("{app}.out.log"))
}

/// The app's standard error (appended).
pub fn err_log_file(data: &Path, app: &str) -> PathBuf {
    data.join("logs").join(format!("{app}.err.log"))
}

/// The device's ed25519 private key (PKCS#8, 0600), created at first start, never sent.
pub fn device_key(data: &Path) -> PathBuf {
    data.join("device.key")
}

/// What enrollment gave (pinned controller key, bus key, MQTT credentials), 0600.
pub fn enrollment(data: &Path) -> PathBuf {
    data.join("enrollment.json")
}

/// The epoch of the agent's current broker connection (orders its signed messages).
pub fn bus_epoch(data: &Path) -> PathBuf {
    data.join("bus-epoch")
}

/// The secret the per-app counter keys are derived from, 0600.
pub fn counters_secret(data: &Path) -> PathBuf {
    data.join("counters.secret")
}
