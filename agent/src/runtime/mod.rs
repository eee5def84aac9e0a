//! Where and how an app is started and stopped. One folder per way an app runs: [`raw`] (a
//! process of the agent's own, in its own process group), [`container`] (Docker or Podman in
//! the foreground under the supervisor) and [`systemd`] (a unit systemd owns). Shared by all
//! three: the app's configuration [`files`], its [`resource_limits`] (rlimits through a
//! launcher, cgroup v2 when writable), the [`prestart`] script, and health checks (the pure
//! [`health`] tracker plus the [`probe`]s).

pub mod container;
pub mod files;
pub mod health;
pub mod prestart;
pub mod probe;
pub mod raw;
pub mod resource_limits;
pub mod systemd;
