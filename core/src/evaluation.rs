//! What the lifecycle needs of trial evaluations: the seed of each trial's bootstrap interval
//! (the coordinator checks, scores and stores evaluations; `bertsweep-evaluation` computes).

/// The interval's seed for trial `number` of a study seeded `study_seed`: the same numbers for
/// the same study, different resamples for different trials.
pub fn interval_seed(study_seed: u64, number: u32) -> u64 {
    study_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(number)
}
