//! The daemon's one seam to the world: every effect of its event handling (fetching and
//! installing artifacts, launching and signalling processes or systemd units, persisting
//! state, probing the file system and the process table, running health probes, sampling
//! resource use, re-enrolling) goes through [`Executor`]. The daemon decides, the executor
//! acts; slow work (downloads, installs, waiting for a process, probes) is started by the
//! executor and reported back to the daemon as an [`super::Event`], so the interface is
//! synchronous and needs no async trait. [`super::device::DeviceExecutor`] acts
//! on this device; the daemon's unit tests use a fake that records what was asked.

use crate::identity::enroll::Asker;
use crate::identity::record::EnrollmentRecord;
use crate::install::InstallPlan;
use crate::runtime::resource_limits::Limits;
use crate::runtime::systemd::watch::Run;
use crate::store::{AppRecord, ProcRecord};
use crate::telemetry::procfs::{DeviceSample, GroupSample};
use fleet_schema::app_spec::ProbeKind;
use fleet_schema::{AppSpec, ArtifactRef, DesiredState, Inventory};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the agent persisted before it last stopped, as read at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// The accepted desired state.
    pub desired: Option<DesiredState>,
    /// Installed and current versions by app.
    pub apps: BTreeMap<String, AppRecord>,
    /// Processes the agent launched and had not seen end.
    pub procs: Vec<ProcRecord>,
}

/// Fetch an artifact for one app version: verify it may be installed here, then download it.
/// The outcome comes back as [`super::Event::Downloaded`].
#[derive(Debug, Clone)]
pub struct DownloadJob {
    /// App name.
    pub app: String,
    /// The app version the download is for.
    pub version: String,
    /// What to fetch.
    pub artifact: ArtifactRef,
    /// This device as the platform and requirement checks see it.
    pub inventory: Inventory,
    /// The device credential for asking fleetd for a fresh URL (a secret: never logged).
    pub credential: String,
}

/// Install a downloaded version. The outcome comes back as [`super::Event::Installed`].
#[derive(Debug, Clone)]
pub struct InstallJob {
    /// App name.
    pub app: String,
    /// Version to install.
    pub version: String,
    /// Other versions whose directories must survive.
    pub keep: BTreeSet<String>,
    /// How this app's artifact is installed.
    pub plan: InstallPlan,
}

/// Launch one installed version as a process of the agent's own. Its end comes back as
/// [`super::Event::Exited`].
#[derive(Debug, Clone)]
pub struct LaunchJob<'a> {
    /// App name.
    pub app: &'a str,
    /// Version to run.
    pub version: &'a str,
    /// How to run it.
    pub app_spec: &'a AppSpec,
    /// Limits from the spec (the executor prepares the cgroup, if any).
    pub limits: Limits,
    /// Variables the agent adds (metrics URL, ports, component identity).
    pub extra_env: &'a [(String, String)],
}

/// Run one health probe against a process. The verdict comes back as
/// [`super::Event::Probed`].
#[derive(Debug, Clone)]
pub struct ProbeJob {
    /// App name.
    pub app: String,
    /// Version probed (an exec probe runs in its directory).
    pub version: String,
    /// The process probed, so a late verdict about an earlier process is ignored.
    pub pid: u32,
    /// What to probe.
    pub probe: ProbeKind,
    /// Longest the probe may take.
    pub timeout: Duration,
}

/// Run one version as a systemd unit. What happens to it comes back as [`super::Event::Unit`]
/// carrying `token`.
#[derive(Debug, Clone)]
pub struct UnitJob<'a> {
    /// App name.
    pub app: &'a str,
    /// Version to run.
    pub version: &'a str,
    /// How to run it.
    pub spec: &'a AppSpec,
    /// Variables the agent adds (metrics URL, ports, component identity).
    pub extra_env: &'a [(String, String)],
    /// Which start of the unit this is, so reports of an earlier start are told apart.
    pub token: u64,
}

/// A unit of this agent found installed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUnit {
    /// App name.
    pub app: String,
    /// Version.
    pub version: String,
    /// Its main process, when it runs.
    pub run: Option<Run>,
}

/// The effects the daemon's event handling needs. Methods that start slow work return at once
/// and report through the daemon's event channel; failures of bookkeeping writes are logged by
/// the executor (the daemon carries on with its in-memory state), the others are returned.
pub trait Executor: Send {
    /// Reads what was persisted before the agent last stopped (unreadable parts are logged
    /// and left empty).
    fn load(&mut self) -> Restored;
    /// Persists an accepted desired state; the daemon does not apply one it could not store.
    fn save_desired(&mut self, desired: &DesiredState) -> Result<(), String>;
    /// Persists an app's installed and current versions.
    fn save_app(&mut self, app: &str, record: &AppRecord);
    /// Deletes an app no longer desired: its files and its record.
    fn forget_app(&mut self, app: &str);
    /// Records a launched process, so a restarted agent adopts it instead of starting another.
    fn save_proc(&mut self, record: &ProcRecord);
    /// Forgets the process record of an app version.
    fn forget_proc(&mut self, app: &str, version: &str);
    /// Whether a version is installed on disk (its executable is present).
    fn is_installed(&self, app: &str, version: &str) -> bool;
    /// Starts verifying and downloading an artifact.
    fn download(&mut self, job: DownloadJob);
    /// Deletes a verified download that is no longer wanted.
    fn discard_download(&mut self, app: &str, version: &str);
    /// Starts installing a downloaded version.
    fn install(&mut self, job: InstallJob);
    /// Launches a version and starts waiting for its end; returns its identity.
    fn launch(&mut self, job: LaunchJob<'_>) -> Result<ProcRecord, String>;
    /// Signals a process group.
    fn signal(&mut self, pid: u32, signal: Signal);
    /// Whether a recorded process still runs; if so, starts watching for its end (it is not
    /// the agent's child, so it cannot be waited for).
    fn adopt(&mut self, record: &ProcRecord) -> bool;
    /// Starts a health probe.
    fn probe(&mut self, job: ProbeJob);
    /// Cancels downloads in flight (at shutdown); they report nothing.
    fn cancel_downloads(&mut self);
    /// Collects the device's inventory now (the `systemd` capability only when the manager
    /// answers).
    fn inventory(&mut self, labels: &BTreeMap<String, String>) -> Inventory;
    /// Starts a version as a systemd unit (files written, unit installed, started and
    /// followed in the background).
    fn start_unit(&mut self, job: UnitJob<'_>) -> Result<(), String>;
    /// Asks systemd to stop a version's unit; its follower reports the end.
    fn stop_unit(&mut self, app: &str, version: &str);
    /// Stops, disables and deletes a version's unit, allowing it `grace` to stop.
    fn remove_unit(&mut self, app: &str, version: &str, grace: Duration);
    /// The agent's units installed now (none when systemd is not usable).
    fn found_units(&mut self) -> Vec<FoundUnit>;
    /// Follows a unit found running, reporting with `token`.
    fn follow_unit(&mut self, found: &FoundUnit, token: u64);
    /// Asks fleetd to enroll this device's key again (at wall-clock `at_ms`); the answer
    /// comes back as [`super::Event::Reenrolled`].
    fn reenroll(&mut self, asker: Asker, inventory: Inventory, at_ms: u64);
    /// Persists a new enrollment record; the daemon keeps using the old one if this fails.
    fn save_enrollment(&mut self, record: &EnrollmentRecord) -> Result<(), String>;
    /// Samples the resource use of the given process groups (groups that are gone are left
    /// out) and the clock ticks per second their CPU times count in.
    fn sample_groups(&mut self, pgids: &[u32]) -> (BTreeMap<u32, GroupSample>, u64);
    /// Samples the device as a whole (CPU, memory, the data directory's disk, network).
    fn sample_device(&mut self) -> DeviceSample;
}
