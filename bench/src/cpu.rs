//! CPU time of a process from `/proc/<pid>/stat` (user plus system time of all its threads),
//! to charge fleetd's work, and separately an external broker's and the simulator's own, to
//! the device state changes handled during a run.

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux the project
/// targets).
const USER_HZ: f64 = 100.0;

/// utime + stime, in seconds, from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15), i.e. indices 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU seconds process `pid` has used so far; `None` when it is gone or unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The processes a run accounts for. fleetd is the process fleet-sim spawned directly (no
/// shell in between), so its figure covers every fleetd thread, the embedded broker's
/// included; Mosquitto, when used, is its own process and is counted separately; so is this
/// simulator, which is never charged to either.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuProbe {
    /// fleetd's process id.
    pub fleetd: Option<u32>,
    /// Mosquitto's process id (`None` with the embedded broker).
    pub mosquitto: Option<u32>,
}

/// CPU seconds used so far (or, from [`CpuSample::since`], during an interval).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// fleetd (with the embedded broker, if any).
    pub fleetd: Option<f64>,
    /// The external Mosquitto.
    pub mosquitto: Option<f64>,
    /// This simulator.
    pub sim: Option<f64>,
}

impl CpuProbe {
    /// Reads every process's CPU time now.
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            fleetd: self.fleetd.and_then(cpu_seconds),
            mosquitto: self.mosquitto.and_then(cpu_seconds),
            sim: cpu_seconds(std::process::id()),
        }
    }
}

impl CpuSample {
    /// The CPU seconds used between `earlier` and this sample.
    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        let d = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        CpuSample {
            fleetd: d(self.fleetd, earlier.fleetd),
            mosquitto: d(self.mosquitto, earlier.mosquitto),
            sim: d(self.sim, earlier.sim),
        }
    }

    /// Each figure in milliseconds per `n` (per device), for an interval from [`Self::since`].
    pub fn ms_per(&self, n: usize) -> CpuSample {
        let per = |v: Option<f64>| v.map(|s| s * 1000.0 / n.max(1) as f64);
        CpuSample {
            fleetd: per(self.fleetd),
            mosquitto: per(self.mosquitto),
            sim: per(self.sim),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_an_awkward_name() {
        let stat = "42 (fleet d) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("42 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn intervals_and_per_device_figures() {
        let a = CpuSample {
            fleetd: Some(1.0),
            mosquitto: None,
            sim: Some(2.0),
        };
        let b = CpuSample {
            fleetd: Some(3.0),
            mosquitto: Some(1.0),
            sim: Some(2.5),
        };
        let d = b.since(&a).ms_per(1000);
        assert_eq!(d.fleetd, Some(2.0));
        assert_eq!(d.mosquitto, None, "no start figure, no interval");
        assert_eq!(d.sim, Some(0.5));
        let probe = CpuProbe::default();
        let s = probe.sample();
        assert!(s.fleetd.is_none() && s.sim.is_some());
    }
}
