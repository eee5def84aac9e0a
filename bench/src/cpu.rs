//! CPU time of a process from `/proc/<pid>/stat` (user plus system time), to charge fleetd's
//! work to the device state changes it handled during a run.

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
}
