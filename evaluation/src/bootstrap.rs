//! Bootstrap confidence intervals of one trial's objective and paired bootstrap comparisons of
//! two configurations, over the same dev examples (and, with repeats, over seeds).
//!
//! Every resample is drawn from a seeded SplitMix64 stream, so the same seed gives the same
//! numbers on every machine and in every version of this crate. Intervals are percentile
//! intervals (numpy's linear interpolation) over [`RESAMPLES`] resamples; resamples where the
//! metric is undefined (ROC-AUC of a resample with one class) are left out.

use crate::predictions::Predictions;
use crate::EvaluationError;

/// Resamples per interval.
pub const RESAMPLES: usize = 1000;

/// Coverage of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower end (the 2.5th percentile of the resampled values).
    pub low: f64,
    /// Upper end (the 97.5th percentile).
    pub high: f64,
}

impl Interval {
    /// Whether the two intervals share a point.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

/// The plain-language outcome of a paired comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The interval of the difference excludes zero in the best's favour.
    Better,
    /// The interval of the difference contains zero: the lead may be noise.
    TiedWithinNoise,
}

impl Verdict {
    /// How `best` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::TiedWithinNoise => "tied within noise",
        }
    }
}

/// The best configuration against the runner-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Mean objective of the best minus that of the runner-up, on all examples.
    pub difference: f64,
    /// The 95 % paired bootstrap interval of that difference.
    pub interval: Interval,
    /// Whether the difference is clear of zero in the best's favour.
    pub verdict: Verdict,
    /// Whether the repeats were paired by seed (both configurations ran the same seeds).
    pub paired_seeds: bool,
}

/// One configuration's evaluations: (seed, predictions) per completed repeat.
pub type Runs<'a> = [(u64, &'a Predictions)];

/// The 95 % bootstrap interval of `metric` on `predictions`, from [`RESAMPLES`] resamples
/// drawn with `seed`. `None` when the metric is undefined on more than half the resamples.
pub fn confidence_interval(
    predictions: &Predictions,
    metric: &str,
    seed: u64,
) -> Result<Option<Interval>, EvaluationError> {
    predictions.score(metric)?;
    let mut rng = SplitMix64::new(seed);
    let n = predictions.len();
    let mut indices = vec![0usize; n];
    let mut values = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        indices.iter_mut().for_each(|i| *i = rng.below(n));
        values.push(predictions.score_on(metric, &indices)?);
    }
    Ok(percentile_interval(values))
}

/// Paired bootstrap of `best` against `runner_up` on `metric`: every resample draws the same
/// dev examples for both, and draws repeats by seed, the same seeds for both when both ran the
/// same seeds (else each its own). The verdict is [`Verdict::Better`] when the interval of the
/// difference lies wholly on the best's side of zero (above it when `maximize`).
pub fn paired_comparison(
    best: &Runs<'_>,
    runner_up: &Runs<'_>,
    metric: &str,
    maximize: bool,
    seed: u64,
) -> Result<Comparison, EvaluationError> {
    let (Some(first), false) = (best.first(), runner_up.is_empty()) else {
        return Err(EvaluationError::NothingToCompare);
    };
    let reference = first.1;
    if best.iter().chain(runner_up).any(|(_, p)| !p.same_examples(reference)) {
        return Err(EvaluationError::DifferentExamples);
    }
    let mut best: Vec<(u64, &Predictions)> = best.to_vec();
    let mut runner_up: Vec<(u64, &Predictions)> = runner_up.to_vec();
    best.sort_by_key(|r| r.0);
    runner_up.sort_by_key(|r| r.0);
    let paired_seeds = best.iter().map(|r| r.0).eq(runner_up.iter().map(|r| r.0));
    let n = reference.len();
    let all: Vec<usize> = (0..n).collect();
    let mean = |runs: &[(u64, &Predictions)], picks: &[usize], indices: &[usize]| -> Result<f64, EvaluationError> {
        let mut sum = 0.0;
        for &k in picks {
            sum += runs[k].1.score_on(metric, indices)?;
        }
        Ok(sum / picks.len() as f64)
    };
    let every = |runs: &[(u64, &Predictions)]| (0..runs.len()).collect::<Vec<_>>();
    let difference = mean(&best, &every(&best), &all)? - mean(&runner_up, &every(&runner_up), &all)?;
    let mut rng = SplitMix64::new(seed);
    let mut indices = vec![0usize; n];
    let (mut picks_best, mut picks_runner) = (vec![0usize; best.len()], vec![0usize; runner_up.len()]);
    let mut values = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        indices.iter_mut().for_each(|i| *i = rng.below(n));
        picks_best.iter_mut().for_each(|k| *k = rng.below(best.len()));
        if paired_seeds {
            picks_runner.copy_from_slice(&picks_best);
        } else {
            picks_runner.iter_mut().for_each(|k| *k = rng.below(runner_up.len()));
        }
        values.push(mean(&best, &picks_best, &indices)? - mean(&runner_up, &picks_runner, &indices)?);
    }
    let interval = percentile_interval(values).unwrap_or(Interval { low: f64::NAN, high: f64::NAN });
    let clear = if maximize { interval.low > 0.0 } else { interval.high < 0.0 };
    let verdict = if clear { Verdict::Better } else { Verdict::TiedWithinNoise };
    Ok(Comparison { difference, interval, verdict, paired_seeds })
}

/// The [`CONFIDENCE`] percentile interval of the finite `values` (numpy's default linear
/// interpolation); `None` when fewer than half of them are finite.
fn percentile_interval(values: Vec<f64>) -> Option<Interval> {
    let total = values.len();
    let mut finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || finite.len() * 2 < total {
        return None;
    }
    finite.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let position = q * (finite.len() - 1) as f64;
        let (below, fraction) = (position.floor() as usize, position.fract());
        let above = (below + 1).min(finite.len() - 1);
        finite[below] + fraction * (finite[above] - finite[below])
    };
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval { low: at(tail), high: at(1.0 - tail) })
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and fixed forever, so that intervals
/// never change with a dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x6a09_e667_f3bc_c908)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for any data set).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` binary examples, the first `correct` of them predicted right with confidence 0.8.
    fn set(n: usize, correct: usize) -> Predictions {
        let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let probabilities = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &y)| {
                let right = i < correct;
                let p1 = if (y == 1) == right { 0.8 } else { 0.2 };
                [1.0 - p1, p1]
            })
            .collect();
        Predictions::new(2, labels, probabilities, vec![]).unwrap()
    }

    #[test]
    fn the_interval_is_reproducible_and_about_the_normal_approximation() {
        let p = set(1000, 850);
        let a = confidence_interval(&p, "eval_accuracy", 7).unwrap().unwrap();
        assert_eq!(a, confidence_interval(&p, "eval_accuracy", 7).unwrap().unwrap(), "same seed, same numbers");
        assert_ne!(a, confidence_interval(&p, "eval_accuracy", 8).unwrap().unwrap());
        assert!(a.low < 0.85 && 0.85 < a.high);
        // Normal approximation: ± 1.96 √(p(1-p)/n) = ± 0.0221.
        let half = (a.high - a.low) / 2.0;
        assert!((half - 0.0221).abs() < 0.004, "half-width {half}");
        // Four times the data, half the width.
        let wide = confidence_interval(&set(250, 212), "eval_accuracy", 7).unwrap().unwrap();
        assert!((wide.high - wide.low) > 1.6 * (a.high - a.low));
    }

    #[test]
    fn an_undefined_metric_gives_no_interval() {
        // One example: every resample has one class, so ROC-AUC is never defined.
        let p = Predictions::new(2, vec![1], vec![0.3, 0.7], vec![]).unwrap();
        assert_eq!(confidence_interval(&p, "eval_roc_auc", 1).unwrap(), None);
        assert!(confidence_interval(&p, "eval_nonsense", 1).is_err());
    }

    #[test]
    fn a_clear_lead_is_better_and_a_small_one_is_a_tie() {
        let (strong, weak, close) = (set(872, 800), set(872, 700), set(872, 798));
        let c = paired_comparison(&[(0, &strong)], &[(0, &weak)], "eval_accuracy", true, 3).unwrap();
        assert!((c.difference - 100.0 / 872.0).abs() < 1e-12);
        assert_eq!(c.verdict, Verdict::Better);
        assert!(c.interval.low > 0.0 && c.paired_seeds);
        let t = paired_comparison(&[(0, &strong)], &[(0, &close)], "eval_accuracy", true, 3).unwrap();
        assert_eq!(t.verdict, Verdict::TiedWithinNoise);
        assert!(t.interval.low <= 0.0 && t.interval.high > 0.0);
        // Lower is better: the weak set's loss is higher, so strong is better when minimising.
        let l = paired_comparison(&[(0, &strong)], &[(0, &weak)], "eval_loss", false, 3).unwrap();
        assert!(l.difference < 0.0);
        assert_eq!(l.verdict, Verdict::Better);
    }

    #[test]
    fn pairing_examples_narrows_the_interval() {
        // Identical except for 20 examples: unpaired intervals would overlap widely, the
        // paired difference is clear.
        let (a, b) = (set(872, 820), set(872, 800));
        let c = paired_comparison(&[(0, &a)], &[(0, &b)], "eval_accuracy", true, 11).unwrap();
        assert_eq!(c.verdict, Verdict::Better);
        let ia = confidence_interval(&a, "eval_accuracy", 1).unwrap().unwrap();
        let ib = confidence_interval(&b, "eval_accuracy", 2).unwrap().unwrap();
        assert!(ia.overlaps(&ib), "separately the two look alike");
    }

    #[test]
    fn repeats_pair_by_seed_or_fall_back_to_independent_draws() {
        let (a0, a1, b0, b1) = (set(200, 180), set(200, 176), set(200, 150), set(200, 154));
        let paired = paired_comparison(&[(1, &a1), (0, &a0)], &[(0, &b0), (1, &b1)], "eval_accuracy", true, 5).unwrap();
        assert!(paired.paired_seeds);
        assert!((paired.difference - (178.0 - 152.0) / 200.0).abs() < 1e-12);
        let unpaired =
            paired_comparison(&[(0, &a0), (1, &a1)], &[(2, &b0), (3, &b1)], "eval_accuracy", true, 5).unwrap();
        assert!(!unpaired.paired_seeds);
        assert_eq!(unpaired.difference, paired.difference);
    }

    #[test]
    fn refuses_sets_of_different_examples() {
        let (a, b) = (set(10, 5), set(12, 5));
        assert!(matches!(
            paired_comparison(&[(0, &a)], &[(0, &b)], "eval_accuracy", true, 0),
            Err(EvaluationError::DifferentExamples)
        ));
        assert!(matches!(
            paired_comparison(&[(0, &a)], &[], "eval_accuracy", true, 0),
            Err(EvaluationError::NothingToCompare)
        ));
    }
}
