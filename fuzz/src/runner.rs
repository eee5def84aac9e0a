//! The fuzzing loop for one target: replay the seeds, then mutate them until the time is up,
//! recording every input that panics, allocates beyond the bound or runs too long.

use crate::mutate::{mutate, Rng};
use crate::targets::Target;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bounds an input must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most bytes one input may allocate above the heap in use before it (at its peak).
    pub max_alloc: usize,
    /// Longest one input may run.
    pub max_time: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_alloc: 16 << 20,
            max_time: Duration::from_secs(2),
        }
    }
}

/// Why an input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It panicked, with this message.
    Panic(String),
    /// It allocated this many bytes at its peak.
    Alloc(usize),
    /// It ran this long.
    Slow(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Panic(m) => write!(f, "panicked: {m}"),
            Failure::Alloc(n) => write!(f, "allocated {} MiB for one input", n >> 20),
            Failure::Slow(d) => write!(f, "ran {:.1} s for one input", d.as_secs_f64()),
        }
    }
}

/// One failing input.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What went wrong.
    pub failure: Failure,
    /// The input.
    pub input: Vec<u8>,
    /// Where it was saved, if it was.
    pub saved: Option<PathBuf>,
}

/// What a target's run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Inputs run (seeds included).
    pub execs: u64,
    /// Seeds replayed.
    pub seeds: usize,
    /// Slowest input.
    pub slowest: Duration,
    /// Highest allocation of one input, bytes.
    pub peak_alloc: usize,
    /// Failing inputs (at most a few per kind are kept).
    pub findings: Vec<Finding>,
}

/// Runs one input under the bounds.
pub fn run_one(run: fn(&[u8]), input: &[u8], bounds: Bounds) -> (Duration, usize, Option<Failure>) {
    crate::alloc::reset_peak();
    let base = crate::alloc::current();
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| run(input)));
    let took = started.elapsed();
    let alloc = crate::alloc::peak_above(base);
    let failure = match result {
        Err(payload) => Some(Failure::Panic(panic_message(&*payload))),
        Ok(()) if alloc > bounds.max_alloc => Some(Failure::Alloc(alloc)),
        Ok(()) if took > bounds.max_time => Some(Failure::Slow(took)),
        Ok(()) => None,
    };
    (took, alloc, failure)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Reads every file of `dir` (missing: none).
pub fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Fuzzes `target` for `time` from `seeds`, saving failing inputs under `crashes` (if given).
pub fn fuzz(
    target: &Target,
    seeds: Vec<Vec<u8>>,
    time: Duration,
    rng_seed: u64,
    bounds: Bounds,
    crashes: Option<&Path>,
) -> Outcome {
    let mut out = Outcome {
        seeds: seeds.len(),
        ..Outcome::default()
    };
    let record = |out: &mut Outcome, input: &[u8], took: Duration, alloc: usize, failure| {
        out.execs += 1;
        out.slowest = out.slowest.max(took);
        out.peak_alloc = out.peak_alloc.max(alloc);
        if let Some(failure) = failure {
            if out.findings.len() < 20 {
                let saved = crashes.and_then(|dir| save(dir, target.name, input));
                out.findings.push(Finding {
                    failure,
                    input: input.to_vec(),
                    saved,
                });
            }
        }
    };
    let mut pool = seeds;
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    for input in pool.clone() {
        let (took, alloc, failure) = run_one(target.run, &input, bounds);
        record(&mut out, &input, took, alloc, failure);
    }
    let mut rng = Rng::new(rng_seed);
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        let base = &pool[rng.below(pool.len())];
        let other = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, other);
        let (took, alloc, failure) = run_one(target.run, &input, bounds);
        let failed = failure.is_some();
        record(&mut out, &input, took, alloc, failure);
        // Keep some mutants as new bases, so mutations stack up over the run.
        if !failed && rng.below(64) == 0 {
            if pool.len() < 512 {
                pool.push(input);
            } else {
                let i = rng.below(pool.len());
                pool[i] = input;
            }
        }
    }
    out
}

fn save(dir: &Path, target: &str, input: &[u8]) -> Option<PathBuf> {
    let digest = ring::digest::digest(&ring::digest::SHA256, input);
    let path = dir.join(format!(
        "{target}-{}.bin",
        &hex::encode(digest.as_ref())[..16]
    ));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, input))
        .ok()
        .map(|()| path)
}
