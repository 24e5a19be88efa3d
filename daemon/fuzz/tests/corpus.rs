//! Replays the committed corpus (`corpus/TARGET/*`, the inputs `run.sh`
//! minimized into it, regressions included) through every target's body:
//! what once found a bug keeps failing here if the bug comes back, with
//! no libFuzzer needed.
use std::path::Path;

#[test]
fn committed_corpus_replays_cleanly() {
    replay("corpus");
}

/// Inputs that found a bug, kept apart from the corpus (which `cmin` may
/// thin out): `regressions/TARGET/what-it-found`.
#[test]
fn every_regression_input_passes() {
    replay("regressions");
}

fn replay(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut total = 0;
    for (name, run) in kcpvpn_fuzz::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // a target without a committed corpus yet
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            // Name the input that failed: `cargo fuzz run NAME FILE` replays it alone.
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{name}: {} fails", f.display());
            total += 1;
        }
    }
    println!("replayed {total} inputs from {dir}/");
}

/// FEC groups with the most data shards (255 + 1 and others the fuzzer
/// leaves out for their cost under instrumentation): the corpus of
/// `fec_groups` replayed at these sizes, natively.
#[test]
fn fec_corpus_at_the_largest_data_counts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/fec_groups");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    // A sample: each input builds its codec afresh (~0.2 s at 255 + 1).
    for f in files.iter().step_by(files.len().div_ceil(16).max(1)) {
        let data = std::fs::read(f).unwrap();
        for (ds, ps) in [(255, 1), (200, 56), (128, 128)] {
            let r = std::panic::catch_unwind(|| {
                kcpvpn_fuzz::fec_groups::run_with_counts(ds, ps, &data)
            });
            assert!(r.is_ok(), "fec_groups at {ds}+{ps}: {} fails", f.display());
        }
    }
}
