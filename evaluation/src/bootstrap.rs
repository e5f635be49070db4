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

/// One completed trial of a configuration, as a paired comparison sees it.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// Its cross-validation fold (0 without folds): runs of one fold share their examples.
    pub fold: u32,
    /// The seed it trained with (0 without repeats): runs of one seed pair across sides.
    pub seed: u64,
    /// Its dev-set predictions.
    pub predictions: &'a Predictions,
}

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

/// One fold's runs on both sides, seeds sorted.
struct FoldRuns<'a> {
    best: Vec<&'a Predictions>,
    runner_up: Vec<&'a Predictions>,
    paired_seeds: bool,
    examples: usize,
}

/// Paired bootstrap of `best` against `runner_up` on `metric`. A configuration's score is the
/// mean over its folds of the mean over its seeds. Every resample draws, within each fold the
/// two sides share, the same dev examples for both sides, and draws seeds: the same seeds for
/// both when both ran the same seeds in that fold (else each its own). The verdict is
/// [`Verdict::Better`] when the interval of the difference lies wholly on the best's side of
/// zero (above it when `maximize`). Folds only one side has are left out.
pub fn paired_comparison<'a>(
    best: &[Run<'a>],
    runner_up: &[Run<'a>],
    metric: &str,
    maximize: bool,
    seed: u64,
) -> Result<Comparison, EvaluationError> {
    let mut folds: Vec<u32> = best.iter().map(|r| r.fold).filter(|f| runner_up.iter().any(|r| r.fold == *f)).collect();
    folds.sort_unstable();
    folds.dedup();
    if folds.is_empty() {
        return Err(EvaluationError::NothingToCompare);
    }
    let mut groups = Vec::with_capacity(folds.len());
    for &fold in &folds {
        let (b, r) = (fold_side(best, fold), fold_side(runner_up, fold));
        let reference = b[0].1;
        if b.iter().chain(&r).any(|(_, p)| !p.same_examples(reference)) {
            return Err(EvaluationError::DifferentExamples);
        }
        groups.push(FoldRuns {
            paired_seeds: b.iter().map(|x| x.0).eq(r.iter().map(|x| x.0)),
            best: b.into_iter().map(|x| x.1).collect(),
            runner_up: r.into_iter().map(|x| x.1).collect(),
            examples: reference.len(),
        });
    }
    let paired_seeds = groups.iter().all(|g| g.paired_seeds);
    let mean_of = |runs: &[&Predictions], picks: &[usize], indices: &[usize]| -> Result<f64, EvaluationError> {
        let mut sum = 0.0;
        for &k in picks {
            sum += runs[k].score_on(metric, indices)?;
        }
        Ok(sum / picks.len() as f64)
    };
    let mut observed = 0.0;
    for g in &groups {
        let all: Vec<usize> = (0..g.examples).collect();
        let every = |n: usize| (0..n).collect::<Vec<_>>();
        observed +=
            mean_of(&g.best, &every(g.best.len()), &all)? - mean_of(&g.runner_up, &every(g.runner_up.len()), &all)?;
    }
    let difference = observed / groups.len() as f64;
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(RESAMPLES);
    let mut indices = Vec::new();
    let (mut picks_best, mut picks_runner) = (Vec::new(), Vec::new());
    for _ in 0..RESAMPLES {
        let mut total = 0.0;
        for g in &groups {
            indices.clear();
            indices.extend((0..g.examples).map(|_| rng.below(g.examples)));
            picks_best.clear();
            picks_best.extend((0..g.best.len()).map(|_| rng.below(g.best.len())));
            picks_runner.clear();
            if g.paired_seeds {
                picks_runner.extend_from_slice(&picks_best);
            } else {
                picks_runner.extend((0..g.runner_up.len()).map(|_| rng.below(g.runner_up.len())));
            }
            total += mean_of(&g.best, &picks_best, &indices)? - mean_of(&g.runner_up, &picks_runner, &indices)?;
        }
        values.push(total / groups.len() as f64);
    }
    let interval = percentile_interval(values).unwrap_or(Interval { low: f64::NAN, high: f64::NAN });
    let clear = if maximize { interval.low > 0.0 } else { interval.high < 0.0 };
    let verdict = if clear { Verdict::Better } else { Verdict::TiedWithinNoise };
    Ok(Comparison { difference, interval, verdict, paired_seeds })
}

/// One side's runs of `fold` as (seed, predictions), seeds sorted.
fn fold_side<'a>(runs: &[Run<'a>], fold: u32) -> Vec<(u64, &'a Predictions)> {
    let mut v: Vec<(u64, &'a Predictions)> =
        runs.iter().filter(|r| r.fold == fold).map(|r| (r.seed, r.predictions)).collect();
    v.sort_by_key(|r| r.0);
    v
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

    fn runs<'a>(sets: &[(u32, u64, &'a Predictions)]) -> Vec<Run<'a>> {
        sets.iter().map(|&(fold, seed, predictions)| Run { fold, seed, predictions }).collect()
    }

    /// One run per side, fold 0 and seed 0.
    fn one(p: &Predictions) -> Vec<Run<'_>> {
        runs(&[(0, 0, p)])
    }

    #[test]
    fn a_clear_lead_is_better_and_a_small_one_is_a_tie() {
        let (strong, weak, close) = (set(872, 800), set(872, 700), set(872, 798));
        let c = paired_comparison(&one(&strong), &one(&weak), "eval_accuracy", true, 3).unwrap();
        assert!((c.difference - 100.0 / 872.0).abs() < 1e-12);
        assert_eq!(c.verdict, Verdict::Better);
        assert!(c.interval.low > 0.0 && c.paired_seeds);
        let t = paired_comparison(&one(&strong), &one(&close), "eval_accuracy", true, 3).unwrap();
        assert_eq!(t.verdict, Verdict::TiedWithinNoise);
        assert!(t.interval.low <= 0.0 && t.interval.high > 0.0);
        // Lower is better: the weak set's loss is higher, so strong is better when minimising.
        let l = paired_comparison(&one(&strong), &one(&weak), "eval_loss", false, 3).unwrap();
        assert!(l.difference < 0.0);
        assert_eq!(l.verdict, Verdict::Better);
    }

    #[test]
    fn pairing_examples_narrows_the_interval() {
        // Identical except for 20 examples: unpaired intervals would overlap widely, the
        // paired difference is clear.
        let (a, b) = (set(872, 820), set(872, 800));
        let c = paired_comparison(&one(&a), &one(&b), "eval_accuracy", true, 11).unwrap();
        assert_eq!(c.verdict, Verdict::Better);
        let ia = confidence_interval(&a, "eval_accuracy", 1).unwrap().unwrap();
        let ib = confidence_interval(&b, "eval_accuracy", 2).unwrap().unwrap();
        assert!(ia.overlaps(&ib), "separately the two look alike");
    }

    #[test]
    fn repeats_pair_by_seed_or_fall_back_to_independent_draws() {
        let (a0, a1, b0, b1) = (set(200, 180), set(200, 176), set(200, 150), set(200, 154));
        let paired = paired_comparison(
            &runs(&[(0, 1, &a1), (0, 0, &a0)]),
            &runs(&[(0, 0, &b0), (0, 1, &b1)]),
            "eval_accuracy",
            true,
            5,
        )
        .unwrap();
        assert!(paired.paired_seeds);
        assert!((paired.difference - (178.0 - 152.0) / 200.0).abs() < 1e-12);
        let unpaired = paired_comparison(
            &runs(&[(0, 0, &a0), (0, 1, &a1)]),
            &runs(&[(0, 2, &b0), (0, 3, &b1)]),
            "eval_accuracy",
            true,
            5,
        )
        .unwrap();
        assert!(!unpaired.paired_seeds);
        assert_eq!(unpaired.difference, paired.difference);
    }

    #[test]
    fn refuses_sets_of_different_examples() {
        let (a, b) = (set(10, 5), set(12, 5));
        assert!(matches!(
            paired_comparison(&one(&a), &one(&b), "eval_accuracy", true, 0),
            Err(EvaluationError::DifferentExamples)
        ));
        assert!(matches!(
            paired_comparison(&one(&a), &[], "eval_accuracy", true, 0),
            Err(EvaluationError::NothingToCompare)
        ));
    }

    #[test]
    fn folds_are_compared_fold_by_fold_and_averaged() {
        // Two folds of different sizes (examples differ between folds, never within one).
        let (a0, a1, b0, b1) = (set(300, 270), set(200, 150), set(300, 240), set(200, 140));
        let c = paired_comparison(
            &runs(&[(0, 0, &a0), (1, 0, &a1)]),
            &runs(&[(1, 0, &b1), (0, 0, &b0)]),
            "eval_accuracy",
            true,
            9,
        )
        .unwrap();
        let expected = ((270.0 - 240.0) / 300.0 + (150.0 - 140.0) / 200.0) / 2.0;
        assert!((c.difference - expected).abs() < 1e-12, "{}", c.difference);
        assert_eq!(c.verdict, Verdict::Better);
        // A fold only one side has is left out; none in common is nothing to compare.
        let partial =
            paired_comparison(&runs(&[(0, 0, &a0), (1, 0, &a1)]), &runs(&[(0, 0, &b0)]), "eval_accuracy", true, 9)
                .unwrap();
        assert!((partial.difference - 30.0 / 300.0).abs() < 1e-12);
        assert!(matches!(
            paired_comparison(&runs(&[(1, 0, &a1)]), &runs(&[(0, 0, &b0)]), "eval_accuracy", true, 9),
            Err(EvaluationError::NothingToCompare)
        ));
    }
}
