//! Every target replays its seeds, corpus and regression inputs cleanly, and the harness
//! itself finds what it is meant to find (a planted panic, an allocation beyond the bound).

use fleet_fuzz::runner::{self, Bounds, Failure};
use fleet_fuzz::targets::{self, Target};
use std::path::Path;
use std::time::Duration;

#[global_allocator]
static ALLOC: fleet_fuzz::alloc::Counting = fleet_fuzz::alloc::Counting;

fn dir(kind: &str, target: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

#[test]
fn every_target_replays_its_seeds_corpus_and_regressions_cleanly() {
    for target in targets::all() {
        let mut inputs = (target.seeds)();
        assert!(!inputs.is_empty(), "{} has built-in seeds", target.name);
        inputs.extend(runner::read_corpus(&dir("corpus", target.name)));
        inputs.extend(runner::read_corpus(&dir("regressions", target.name)));
        let out = runner::fuzz(&target, inputs, Duration::ZERO, 1, Bounds::default(), None);
        let failures: Vec<String> = out.findings.iter().map(|f| f.failure.to_string()).collect();
        assert!(failures.is_empty(), "{}: {failures:?}", target.name);
    }
}

#[test]
fn the_harness_finds_a_planted_panic_and_a_runaway_allocation() {
    let planted = Target {
        name: "planted",
        run: |b| {
            if b.windows(2).any(|w| w == [0xde, 0xad]) {
                panic!("planted bug");
            }
            if b.first() == Some(&0xff) && b.len() > 3 {
                let v = vec![1u8; 64 << 20];
                assert_eq!(v.len(), 64 << 20);
            }
        },
        seeds: || vec![vec![0xde, 0x00, 0xad, 0x01]],
    };
    let bounds = Bounds {
        max_alloc: 16 << 20,
        max_time: Duration::from_secs(5),
    };
    let out = runner::fuzz(
        &planted,
        (planted.seeds)(),
        Duration::from_secs(3),
        7,
        bounds,
        None,
    );
    assert!(out.execs > 100, "mutated inputs ran: {}", out.execs);
    assert!(
        out.findings
            .iter()
            .any(|f| f.failure == Failure::Panic("planted bug".into())),
        "the panic was found: {:?}",
        out.findings.iter().map(|f| &f.failure).collect::<Vec<_>>()
    );
    assert!(
        out.findings
            .iter()
            .any(|f| matches!(f.failure, Failure::Alloc(n) if n >= 64 << 20)),
        "the allocation was measured"
    );
}
