//! `fleet-fuzz`: fuzzes FleetD's parsers for a bounded time (see the library's docs).
//! `fleet-fuzz --seconds 10` runs every target for 10 s; `fleet-fuzz archive --seconds 600`
//! one target for longer. Exit status 1 when any input failed; the inputs are in `--crashes`.

use anyhow::{bail, Result};
use clap::Parser;
use fleet_fuzz::runner::{self, Bounds};
use fleet_fuzz::targets;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: fleet_fuzz::alloc::Counting = fleet_fuzz::alloc::Counting;

/// Fuzz FleetD's parsers (CBOR wire types, envelopes, manifests, deployment and CI requests,
/// archives, image references, topics, MQTT URLs).
#[derive(Debug, Parser)]
#[command(name = "fleet-fuzz", version, about)]
struct Args {
    /// Targets to run (default: all; see --list).
    targets: Vec<String>,
    /// Seconds of mutation per target (after replaying its seeds and corpus).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the mutation generator (default: from the clock; printed for reproduction).
    #[arg(long)]
    seed: Option<u64>,
    /// Corpus root: files in `<corpus>/<target>/` are added to the built-in seeds.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))]
    corpus: PathBuf,
    /// Regression inputs, replayed like the corpus: `<regressions>/<target>/`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/regressions"))]
    regressions: PathBuf,
    /// Where failing inputs are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/crashes"))]
    crashes: PathBuf,
    /// Most MiB one input may allocate (a device has little memory to spare: a message of a
    /// few kilobytes must not make a parser reserve more).
    #[arg(long, default_value_t = 16)]
    max_alloc_mib: usize,
    /// Most milliseconds one input may run.
    #[arg(long, default_value_t = 2000)]
    max_ms: u64,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let all = targets::all();
    if args.list {
        for t in &all {
            println!("{}", t.name);
        }
        return Ok(());
    }
    for name in &args.targets {
        if !all.iter().any(|t| t.name == name) {
            let names: Vec<_> = all.iter().map(|t| t.name).collect();
            bail!("unknown target {name:?}; targets: {}", names.join(", "));
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let bounds = Bounds {
        max_alloc: args.max_alloc_mib << 20,
        max_time: Duration::from_millis(args.max_ms),
    };
    println!(
        "fleet-fuzz: seed {seed}, {} s per target (reproduce with --seed {seed})",
        args.seconds
    );
    println!(
        "{:<20} {:>9} {:>9} {:>6} {:>12} {:>12} {:>8}",
        "target", "execs", "execs/s", "seeds", "slowest ms", "peak KiB", "failures"
    );
    let mut failures = 0;
    for target in all
        .iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|n| n == t.name))
    {
        let mut seeds = (target.seeds)();
        seeds.extend(runner::read_corpus(&args.corpus.join(target.name)));
        seeds.extend(runner::read_corpus(&args.regressions.join(target.name)));
        // Panics from here on are expected and caught: each finding is printed once below.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let time = Duration::from_secs(args.seconds);
        let out = runner::fuzz(target, seeds, time, seed, bounds, Some(&args.crashes));
        std::panic::set_hook(default_hook);
        println!(
            "{:<20} {:>9} {:>9.0} {:>6} {:>12.1} {:>12} {:>8}",
            target.name,
            out.execs,
            out.execs as f64 / time.as_secs_f64().max(1e-3),
            out.seeds,
            out.slowest.as_secs_f64() * 1000.0,
            out.peak_alloc >> 10,
            out.findings.len()
        );
        for f in &out.findings {
            let at = f
                .saved
                .as_ref()
                .map_or_else(|| "not saved".to_string(), |p| p.display().to_string());
            println!("  {}: {} ({at})", target.name, f.failure);
        }
        failures += out.findings.len();
    }
    if failures > 0 {
        bail!("{failures} failing inputs");
    }
    Ok(())
}
