//! A fake [`Executor`]: a world of persisted records, versions on disk and live pids that the
//! tests set up and inspect, and a log of every effect the daemon asked for. Slow work never
//! completes by itself: the test reports its outcome as the real executor would.

use crate::daemon::executor::{
    DownloadJob, Executor, FoundUnit, InstallJob, LaunchJob, ProbeJob, Restored, UnitJob,
};
use crate::identity::enroll::Asker;
use crate::identity::record::EnrollmentRecord;
use crate::store::{AppRecord, ProcRecord};
use crate::telemetry::procfs::{DeviceSample, GroupSample};
use fleet_schema::{DesiredState, Inventory};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One effect the daemon asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Download {
        app: String,
        version: String,
    },
    DiscardDownload {
        app: String,
        version: String,
    },
    Install {
        app: String,
        version: String,
        keep: Vec<String>,
    },
    Launch {
        app: String,
        version: String,
        pid: u32,
    },
    Signal {
        pid: u32,
        signal: Signal,
    },
    Adopt {
        pid: u32,
    },
    ForgetApp {
        app: String,
    },
    Probe {
        app: String,
        pid: u32,
    },
    CancelDownloads,
    StartUnit {
        app: String,
        version: String,
        token: u64,
    },
    StopUnit {
        app: String,
        version: String,
    },
    RemoveUnit {
        app: String,
        version: String,
    },
    FollowUnit {
        app: String,
        version: String,
        token: u64,
    },
    Reenroll,
}

/// What the fake device holds.
#[derive(Debug, Default)]
pub struct World {
    /// Persisted desired state.
    pub desired: Option<DesiredState>,
    /// Persisted app records.
    pub apps: BTreeMap<String, AppRecord>,
    /// Persisted process records by (app, version).
    pub procs: BTreeMap<(String, String), ProcRecord>,
    /// Versions installed on disk.
    pub on_disk: BTreeSet<(String, String)>,
    /// Processes that run.
    pub alive: BTreeSet<u32>,
    /// Install jobs started and not reported yet, with the versions they keep.
    pub installing: BTreeMap<(String, String), BTreeSet<String>>,
    /// Effects asked for, oldest first.
    pub calls: Vec<Call>,
    /// The pid the next launch gets.
    pub next_pid: u32,
    /// The agent's systemd units, as found at start.
    pub units: Vec<FoundUnit>,
    /// Resource use by process group, as metrics sampling finds it.
    pub samples: BTreeMap<u32, GroupSample>,
}

impl World {
    /// Takes the effects asked for since the last call.
    pub fn take_calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.calls)
    }

    /// What a finished install leaves on disk: the version, plus only the versions it kept.
    pub fn finish_install(&mut self, app: &str, version: &str) {
        let keep = self
            .installing
            .remove(&(app.to_string(), version.to_string()))
            .expect("the daemon asked for this install");
        self.on_disk
            .retain(|(a, v)| a != app || keep.contains(v) || v == version);
        self.on_disk.insert((app.to_string(), version.to_string()));
    }
}

/// The fake executor; clones share one [`World`].
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor(Arc<Mutex<World>>);

impl FakeExecutor {
    /// A fake over `world`.
    pub fn new(world: World) -> Self {
        Self(Arc::new(Mutex::new(world)))
    }

    /// The world, to set up or inspect.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0
            .lock()
            .expect("no test thread panicked holding the world")
    }
}

impl Executor for FakeExecutor {
    fn load(&mut self) -> Restored {
        let w = self.world();
        Restored {
            desired: w.desired.clone(),
            apps: w.apps.clone(),
            procs: w.procs.values().cloned().collect(),
        }
    }

    fn save_desired(&mut self, desired: &DesiredState) -> Result<(), String> {
        self.world().desired = Some(desired.clone());
        Ok(())
    }

    fn save_app(&mut self, app: &str, record: &AppRecord) {
        self.world().apps.insert(app.to_string(), record.clone());
    }

    fn forget_app(&mut self, app: &str) {
        let mut w = self.world();
        w.apps.remove(app);
        w.on_disk.retain(|(a, _)| a != app);
        w.calls.push(Call::ForgetApp { app: app.into() });
    }

    fn save_proc(&mut self, record: &ProcRecord) {
        let key = (record.app.clone(), record.version.clone());
        self.world().procs.insert(key, record.clone());
    }

    fn forget_proc(&mut self, app: &str, version: &str) {
        self.world()
            .procs
            .remove(&(app.to_string(), version.to_string()));
    }

    fn is_installed(&self, app: &str, version: &str) -> bool {
        self.world()
            .on_disk
            .contains(&(app.to_string(), version.to_string()))
    }

    fn download(&mut self, job: DownloadJob) {
        self.world().calls.push(Call::Download {
            app: job.app,
            version: job.version,
        });
    }

    fn discard_download(&mut self, app: &str, version: &str) {
        self.world().calls.push(Call::DiscardDownload {
            app: app.into(),
            version: version.into(),
        });
    }

    fn install(&mut self, job: InstallJob) {
        let mut w = self.world();
        w.installing
            .insert((job.app.clone(), job.version.clone()), job.keep.clone());
        w.calls.push(Call::Install {
            app: job.app,
            version: job.version,
            keep: job.keep.into_iter().collect(),
        });
    }

    fn launch(&mut self, job: LaunchJob<'_>) -> Result<ProcRecord, String> {
        let mut w = self.world();
        w.next_pid += 1;
        let pid = w.next_pid;
        w.alive.insert(pid);
        w.calls.push(Call::Launch {
            app: job.app.into(),
            version: job.version.into(),
            pid,
        });
        Ok(ProcRecord {
            app: job.app.into(),
            version: job.version.into(),
            pid,
            start_time: u64::from(pid) * 10,
            exe: format!("/data/apps/{}/{}/{}", job.app, job.version, job.app),
        })
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        self.world().calls.push(Call::Signal { pid, signal });
    }

    fn adopt(&mut self, record: &ProcRecord) -> bool {
        let mut w = self.world();
        w.calls.push(Call::Adopt { pid: record.pid });
        w.alive.contains(&record.pid)
    }

    fn probe(&mut self, job: ProbeJob) {
        self.world().calls.push(Call::Probe {
            app: job.app,
            pid: job.pid,
        });
    }

    fn cancel_downloads(&mut self) {
        self.world().calls.push(Call::CancelDownloads);
    }

    fn inventory(&mut self, _labels: &BTreeMap<String, String>) -> Inventory {
        Inventory::default()
    }

    fn start_unit(&mut self, job: UnitJob<'_>) -> Result<(), String> {
        self.world().calls.push(Call::StartUnit {
            app: job.app.into(),
            version: job.version.into(),
            token: job.token,
        });
        Ok(())
    }

    fn stop_unit(&mut self, app: &str, version: &str) {
        self.world().calls.push(Call::StopUnit {
            app: app.into(),
            version: version.into(),
        });
    }

    fn remove_unit(&mut self, app: &str, version: &str, _grace: Duration) {
        self.world().calls.push(Call::RemoveUnit {
            app: app.into(),
            version: version.into(),
        });
    }

    fn found_units(&mut self) -> Vec<FoundUnit> {
        self.world().units.clone()
    }

    fn reenroll(&mut self, _asker: Asker, _inventory: Inventory, _at_ms: u64) {
        self.world().calls.push(Call::Reenroll);
    }

    fn sample_groups(&mut self, pgids: &[u32]) -> (BTreeMap<u32, GroupSample>, u64) {
        let w = self.world();
        let samples = pgids
            .iter()
            .filter_map(|p| w.samples.get(p).map(|s| (*p, *s)))
            .collect();
        (samples, 100)
    }

    fn sample_device(&mut self) -> DeviceSample {
        DeviceSample::default()
    }

    fn save_enrollment(&mut self, _record: &EnrollmentRecord) -> Result<(), String> {
        Ok(())
    }

    fn follow_unit(&mut self, found: &FoundUnit, token: u64) {
        self.world().calls.push(Call::FollowUnit {
            app: found.app.clone(),
            version: found.version.clone(),
            token,
        });
    }
}
