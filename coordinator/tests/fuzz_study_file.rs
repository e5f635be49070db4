//! Time-bounded fuzzing of the study-file parser (see `common/fuzzing.rs` for the budget,
//! seed and corpus): it never panics; an accepted study is runnable (its first trial can be
//! leased) and obeys the name and budget rules; a refusal is one bounded line.

mod common;

use common::fuzzing::*;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::Instant;

#[test]
fn study_file_parser_never_panics_and_accepts_only_runnable_studies() {
    let (mut rng, seed) = rng();
    let corpus = corpus();
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    // Quiet the default hook: panics are caught and reported with their input instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    while Instant::now() < deadline && failure.is_none() {
        let base = corpus.choose(&mut rng).unwrap();
        let mut text = mutate(&mut rng, base);
        if rng.gen_bool(0.2) {
            text = mutate(&mut rng, &text);
        }
        if let Err(why) = check_study_file(&text) {
            failure = Some((why, text));
        }
        cases += 1;
    }
    std::panic::set_hook(hook);
    if let Some((why, text)) = failure {
        panic!("study-file fuzz (BERTSWEEP_FUZZ_SEED={seed}) after {cases} cases: {why}\n--- input ---\n{text}");
    }
    eprintln!("study-file fuzz: {cases} cases, seed {seed}, no panics");
}
