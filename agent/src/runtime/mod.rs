//! How an app runs on the device beyond "a process": its configuration files, resource limits
//! (rlimits through a launcher, cgroup v2 when writable) and health checks (pure tracker plus
//! the probes).

pub mod files;
pub mod health;
pub mod limits;
pub mod prestart;
pub mod probe;
pub mod systemd;
