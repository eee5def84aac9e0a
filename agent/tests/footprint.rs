//! The agent's idle footprint with one supervised app: resident memory and CPU time, measured
//! on a real agent process against a real broker (Mosquitto). Ignored by default (it idles for a
//! while); `bench/arm-smoke.sh` runs it natively and for the ARM builds under qemu-user
//! (FLEET_AGENT_BIN, FLEET_AGENT_RUNNER) and prints the figures for bench/README.md.

mod support;

use fleet_schema::{AppPhase, AppSpec, DeviceStatus};
use std::time::Duration;
use support::{broker, AgentProc, Observer, TestApp};

/// (resident KiB, utime + stime ticks) of a process.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // After ')': state is not numeric, so utime/stime are fields 14/15 → indices 10/11 here.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    (rss, ticks)
}

#[test]
#[ignore = "idles for a minute; run by bench/arm-smoke.sh"]
fn idle_footprint_with_one_supervised_app() {
    let idle_secs: u64 = std::env::var("FLEET_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "footprint";
    let obs = Observer::start(port, &[format!("fleet/{dev}/status")]);
    let agent = AgentProc::start(
        dev,
        port,
        &[TestApp {
            name: "idler",
            script: "echo started\nexec sleep 100000".into(),
            spec: AppSpec::default(),
        }],
        &[],
    );
    obs.wait_for(
        &format!("fleet/{dev}/status"),
        Duration::from_secs(60),
        "app running",
        |s: &DeviceStatus| {
            s.apps
                .iter()
                .any(|a| a.name == "idler" && a.phase == AppPhase::Running)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    let (_, t0) = usage(agent.pid());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (rss, t1) = usage(agent.pid());
    let hz = 100.0;
    let cpu_s_per_hour = (t1 - t0) as f64 / hz * 3600.0 / idle_secs as f64;
    println!(
        "FOOTPRINT idle_rss_kib={rss} cpu_seconds_per_hour={cpu_s_per_hour:.1} idle_window_s={idle_secs}"
    );
    assert!(rss > 0, "agent alive");
    // Natively (no emulator in the process), the target from bench/README.md must hold; a
    // debug build is larger, so the bound applies to the release binary the script passes.
    if std::env::var("FLEET_AGENT_RUNNER")
        .unwrap_or_default()
        .is_empty()
        && std::env::var("FLEET_AGENT_BIN").is_ok()
    {
        assert!(
            rss <= 8 * 1024,
            "idle RSS {rss} KiB is over the 8 MiB target"
        );
    }
}
