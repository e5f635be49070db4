//! Tree-structured Parzen Estimator (Bergstra et al. 2011), univariate, as in Hyperopt/Optuna.
//!
//! After `startup_trials` random configurations, finished trials are split by the objective
//! into a good set (the best quarter) and a bad set (the rest, plus every PRUNED trial). Each
//! parameter gets a density for each set — a truncated Gaussian mixture for real ranges (in log
//! space for log ranges), smoothed frequencies for discrete ones — and the sampler draws joint
//! candidates from the good densities and keeps the one with the highest l(x)/g(x).
//!
//! Concurrency: trials still PENDING or RUNNING join the bad set with their params (a
//! "constant liar"), which pushes new proposals away from configurations in flight, and a
//! candidate equal to any existing configuration is skipped while an unused one can be found.
//! Randomness comes from a ChaCha stream per (seed, configuration index), so a study is
//! reproducible for a given order of events.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::random::draw;
use super::Sampler;
use crate::model::{Trial, TrialState};
use crate::params::{config_key, ParamKind, ParamValue, Params};
use crate::spec::{Domain, Objective, ParamSpec, RangeDomain, StudySpec};

/// Fraction of finished trials that form the good set (Hyperopt's default).
const GAMMA: f64 = 0.25;
/// Joint candidates drawn from the good densities per proposal.
const CANDIDATES: usize = 64;
/// Random draws tried to find an unused configuration when every candidate was used.
const UNUSED_TRIES: usize = 2000;
/// Discrete ranges with more points than this are modelled as continuous and rounded.
const MAX_DISCRETE_POINTS: usize = 1000;

/// The TPE sampler of a study.
pub struct TpeSampler {
    seed: u64,
    startup_trials: u32,
    parameters: Vec<ParamSpec>,
}

impl TpeSampler {
    /// The sampler of `spec`: its seed, start-up trials and parameter domains.
    pub fn new(spec: &StudySpec) -> Self {
        TpeSampler { seed: spec.seed, startup_trials: spec.startup_trials, parameters: spec.parameters.clone() }
    }

    fn random(&self, rng: &mut ChaCha8Rng) -> Params {
        self.parameters.iter().map(|p| (p.name.clone(), draw(&p.domain, rng))).collect()
    }

    /// A random configuration not yet used, if one turns up.
    fn random_unused(&self, rng: &mut ChaCha8Rng, used: &HashSet<String>) -> Params {
        let first = self.random(rng);
        if !used.contains(&config_key(&first)) {
            return first;
        }
        for _ in 0..UNUSED_TRIES {
            let p = self.random(rng);
            if !used.contains(&config_key(&p)) {
                return p;
            }
        }
        first
    }
}

/// The observations one parameter's densities are built from.
struct Split<'a> {
    good: Vec<&'a Params>,
    bad: Vec<&'a Params>,
}

fn split<'a>(trials: &'a [Trial], objective: &Objective) -> Split<'a> {
    let mut finished: Vec<(&Params, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Completed)
        .filter_map(|t| t.value.map(|v| (&t.params, if objective.maximize { v } else { -v })))
        .collect();
    // Best first; ties keep trial order (stable sort), so the split is deterministic.
    finished.sort_by(|a, b| b.1.total_cmp(&a.1));
    let n_good = ((finished.len() as f64 * GAMMA).ceil() as usize).max(1).min(finished.len());
    let good = finished[..n_good].iter().map(|(p, _)| *p).collect();
    let mut bad: Vec<&Params> = finished[n_good..].iter().map(|(p, _)| *p).collect();
    // Pruned trials were judged worse than their peers; in-flight ones are the constant liar.
    bad.extend(
        trials
            .iter()
            .filter(|t| matches!(t.state, TrialState::Pruned | TrialState::Pending | TrialState::Running))
            .map(|t| &t.params),
    );
    Split { good, bad }
}

impl Sampler for TpeSampler {
    fn sample(&self, config_index: u32, trials: &[Trial], objective: &Objective) -> Option<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(config_index as u64 + 1);
        let used: HashSet<String> = trials.iter().map(|t| config_key(&t.params)).collect();
        let has_result = trials.iter().any(|t| t.state == TrialState::Completed && t.value.is_some());
        if config_index < self.startup_trials || !has_result {
            return Some(self.random_unused(&mut rng, &used));
        }
        let obs = split(trials, objective);
        let models: Vec<ParamModel> = self.parameters.iter().map(|p| ParamModel::fit(p, &obs)).collect();
        let mut best: Option<(f64, Params)> = None;
        for _ in 0..CANDIDATES {
            let mut params = Params::new();
            let mut score = 0.0;
            for model in &models {
                let (value, s) = model.propose(&mut rng);
                params.insert(model.name.clone(), value);
                score += s;
            }
            if used.contains(&config_key(&params)) {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, params));
            }
        }
        Some(match best {
            Some((_, params)) => params,
            None => self.random_unused(&mut rng, &used),
        })
    }
}

/// One parameter's pair of densities.
struct ParamModel {
    name: String,
    kind: ModelKind,
}

enum ModelKind {
    Fixed(ParamValue),
    /// Probabilities over a finite list of values for the good (l) and bad (g) sets.
    Discrete {
        values: Vec<ParamValue>,
        l: Vec<f64>,
        g: Vec<f64>,
    },
    /// Truncated Gaussian mixtures in (log-)space.
    Continuous {
        range: RangeDomain,
        l: Mixture,
        g: Mixture,
    },
}

impl ParamModel {
    fn fit(spec: &ParamSpec, obs: &Split<'_>) -> Self {
        let name = spec.name.clone();
        let values_of =
            |set: &[&Params]| -> Vec<ParamValue> { set.iter().filter_map(|p| p.get(&spec.name).cloned()).collect() };
        let kind = match &spec.domain {
            Domain::Fixed(v) => ModelKind::Fixed(v.clone()),
            Domain::Categorical(values) => discrete(values.clone(), &values_of(&obs.good), &values_of(&obs.bad)),
            Domain::Range(r) => match r
                .grid()
                .filter(|pts| (r.step.is_some() || r.kind == ParamKind::Int) && pts.len() <= MAX_DISCRETE_POINTS)
            {
                Some(points) => discrete(points, &values_of(&obs.good), &values_of(&obs.bad)),
                None => {
                    let to_x = |v: &ParamValue| v.as_f64().map(|x| if r.log { x.ln() } else { x });
                    let (lo, hi) = if r.log { (r.min.ln(), r.max.ln()) } else { (r.min, r.max) };
                    let good: Vec<f64> = values_of(&obs.good).iter().filter_map(to_x).collect();
                    let bad: Vec<f64> = values_of(&obs.bad).iter().filter_map(to_x).collect();
                    ModelKind::Continuous {
                        range: r.clone(),
                        l: Mixture::fit(&good, lo, hi),
                        g: Mixture::fit(&bad, lo, hi),
                    }
                }
            },
        };
        ParamModel { name, kind }
    }

    /// Draws from the good density; returns the value and its log l(x) - log g(x).
    fn propose(&self, rng: &mut ChaCha8Rng) -> (ParamValue, f64) {
        match &self.kind {
            ModelKind::Fixed(v) => (v.clone(), 0.0),
            ModelKind::Discrete { values, l, g } => {
                let mut u = rng.gen::<f64>();
                let mut index = values.len() - 1;
                for (i, p) in l.iter().enumerate() {
                    if u < *p {
                        index = i;
                        break;
                    }
                    u -= p;
                }
                (values[index].clone(), l[index].ln() - g[index].ln())
            }
            ModelKind::Continuous { range, l, g } => {
                let x = l.sample(rng);
                let score = l.log_pdf(x) - g.log_pdf(x);
                let raw = if range.log { x.exp() } else { x };
                let value = match range.kind {
                    ParamKind::Int => ParamValue::Int(raw.round().clamp(range.min, range.max) as i64),
                    ParamKind::Float => ParamValue::Float(raw.clamp(range.min, range.max)),
                };
                (value, score)
            }
        }
    }
}

/// Frequencies with a uniform prior worth one observation, so unseen values keep a chance.
fn discrete(values: Vec<ParamValue>, good: &[ParamValue], bad: &[ParamValue]) -> ModelKind {
    let probabilities = |obs: &[ParamValue]| -> Vec<f64> {
        let k = values.len() as f64;
        let total = obs.len() as f64 + 1.0;
        values.iter().map(|v| (obs.iter().filter(|o| o.key() == v.key()).count() as f64 + 1.0 / k) / total).collect()
    };
    let (l, g) = (probabilities(good), probabilities(bad));
    ModelKind::Discrete { values, l, g }
}

/// A truncated Gaussian mixture on [lo, hi]: one component per observation plus a broad prior.
struct Mixture {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Mixture {
    /// Hyperopt's bandwidths: each component spans the larger gap to its neighbours, clipped
    /// to [(hi - lo) / min(100, n + 1), hi - lo]; the prior sits mid-range with sigma hi - lo.
    fn fit(observations: &[f64], lo: f64, hi: f64) -> Self {
        let width = hi - lo;
        let mut points: Vec<f64> = observations.iter().map(|x| x.clamp(lo, hi)).collect();
        points.push((lo + hi) / 2.0);
        points.sort_by(f64::total_cmp);
        let prior = (lo + hi) / 2.0;
        let min_sigma = width / (100.0f64).min(points.len() as f64 + 1.0);
        let mut mus = Vec::with_capacity(points.len());
        let mut sigmas = Vec::with_capacity(points.len());
        let mut prior_done = false;
        for (i, &mu) in points.iter().enumerate() {
            let left = if i == 0 { mu - lo } else { mu - points[i - 1] };
            let right = if i + 1 == points.len() { hi - mu } else { points[i + 1] - mu };
            let sigma = if !prior_done && mu == prior {
                prior_done = true;
                width
            } else {
                left.max(right).clamp(min_sigma, width)
            };
            mus.push(mu);
            sigmas.push(sigma.max(1e-12));
        }
        Mixture { mus, sigmas, lo, hi }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let i = rng.gen_range(0..self.mus.len());
        for _ in 0..100 {
            let x = self.mus[i] + self.sigmas[i] * standard_normal(rng);
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        self.mus[i].clamp(self.lo, self.hi)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let w = 1.0 / self.mus.len() as f64;
        let density: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(&mu, &s)| {
                let mass = normal_cdf((self.hi - mu) / s) - normal_cdf((self.lo - mu) / s);
                let z = (x - mu) / s;
                w * (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt()) / mass.max(1e-12)
            })
            .sum();
        density.max(1e-300).ln()
    }
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), enough for density ratios.
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592)
            * t
            * (-x * x).exp();
    sign * y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::RandomSampler;
    use crate::spec::parse_study;
    use crate::testing::StudyToml;

    fn spec(sampler: &str, seed: u64, params: &str) -> StudySpec {
        let text = StudyToml::new("t").sampler(sampler).seed(seed).budget("max_trials = 40").parameters(params);
        parse_study(&text.to_string()).unwrap()
    }

    const SPACE: &str = "[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-6\nmax = 1e-3\n[parameters.warmup_ratio]\ndistribution = \"uniform\"\nmin = 0.0\nmax = 0.5\n[parameters.per_device_train_batch_size]\nvalues = [8, 16, 32, 64]\n";

    /// A synthetic objective peaking at lr = 3e-5, warmup 0.1, batch 16.
    fn objective(p: &Params) -> f64 {
        let lr = p["learning_rate"].as_f64().unwrap();
        let warmup = p["warmup_ratio"].as_f64().unwrap();
        let batch = p["per_device_train_batch_size"].as_f64().unwrap();
        let d = (lr.log10() - 3e-5f64.log10()).powi(2)
            + ((warmup - 0.1) * 4.0).powi(2)
            + ((batch.log2() - 4.0) / 2.0).powi(2);
        0.9 - 0.1 * d
    }

    fn trial(number: u32, params: Params, value: Option<f64>, state: TrialState) -> Trial {
        Trial { value, ..crate::model::test_trial(number, params, state) }
    }

    /// Runs `n` sequential trials and returns the best value found.
    fn run(sampler: &dyn Sampler, n: u32) -> (f64, Vec<Trial>) {
        let obj = Objective { metric: "eval_accuracy".into(), maximize: true };
        let mut trials = Vec::new();
        for i in 0..n {
            let params = sampler.sample(i, &trials, &obj).unwrap();
            let v = objective(&params);
            trials.push(trial(i, params, Some(v), TrialState::Completed));
        }
        let best = trials.iter().filter_map(|t| t.value).fold(f64::MIN, f64::max);
        (best, trials)
    }

    #[test]
    fn beats_random_search_over_many_seeds_and_concentrates_on_the_good_region() {
        let (mut tpe_wins, mut tpe_total, mut random_total) = (0, 0.0, 0.0);
        let mut near_optimum_late = 0usize;
        for seed in 0..20 {
            let (tpe_best, trials) = run(&TpeSampler::new(&spec("tpe", seed, SPACE)), 40);
            let (random_best, _) = run(&RandomSampler::new(&spec("random", seed, SPACE)), 40);
            tpe_total += tpe_best;
            random_total += random_best;
            tpe_wins += (tpe_best > random_best) as u32;
            near_optimum_late += trials[20..]
                .iter()
                .filter(|t| (t.params["learning_rate"].as_f64().unwrap().log10() - 3e-5f64.log10()).abs() < 0.5)
                .count();
        }
        assert!(tpe_total > random_total, "TPE mean best {} <= random {}", tpe_total / 20.0, random_total / 20.0);
        assert!(tpe_wins >= 13, "TPE won only {tpe_wins}/20 seeds");
        // Late TPE proposals sit near the optimum far more often than uniform draws would
        // (a ±0.5 decade window is a third of the 3-decade range).
        let share = near_optimum_late as f64 / (20.0 * 20.0);
        assert!(share > 0.5, "only {share:.2} of late proposals near the optimum");
    }

    #[test]
    fn reproducible_for_the_same_history() {
        let a = run(&TpeSampler::new(&spec("tpe", 3, SPACE)), 15).1;
        let b = run(&TpeSampler::new(&spec("tpe", 3, SPACE)), 15).1;
        assert_eq!(a.iter().map(|t| &t.params).collect::<Vec<_>>(), b.iter().map(|t| &t.params).collect::<Vec<_>>());
    }

    #[test]
    fn in_flight_configurations_are_not_proposed_again_while_others_remain() {
        // A 4 × 3 discrete space; 11 configurations are in flight or done: the 12th proposal
        // must be the single unused one.
        let space = "[parameters.learning_rate]\nvalues = [1e-5, 2e-5, 3e-5, 5e-5]\n[parameters.num_train_epochs]\nvalues = [2, 3, 4]\n";
        let s = spec("tpe", 1, space);
        let sampler = TpeSampler::new(&s);
        let obj = Objective { metric: "eval_accuracy".into(), maximize: true };
        let grid = crate::sampler::GridSampler::new(&s);
        let all: Vec<Params> = (0..grid.size()).map(|i| grid.point(i).unwrap()).collect();
        for missing in 0..all.len() {
            let trials: Vec<Trial> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .enumerate()
                .map(|(n, (i, p))| {
                    let state = if i % 2 == 0 { TrialState::Running } else { TrialState::Completed };
                    let value = (state == TrialState::Completed).then_some(0.5 + i as f64 / 100.0);
                    trial(n as u32, p.clone(), value, state)
                })
                .collect();
            let proposal = sampler.sample(11, &trials, &obj).unwrap();
            assert_eq!(config_key(&proposal), config_key(&all[missing]));
        }
    }

    #[test]
    fn minimize_prefers_low_values() {
        let space = "[parameters.per_device_train_batch_size]\nvalues = [8, 16, 32, 64]\n[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-6\nmax = 1e-3\n";
        let s = spec("tpe", 5, space);
        let sampler = TpeSampler::new(&s);
        let obj = Objective { metric: "eval_loss".into(), maximize: false };
        let mut trials = Vec::new();
        for i in 0..30u32 {
            let p = sampler.sample(i, &trials, &obj).unwrap();
            // Loss is lowest at batch 64.
            let loss = 1.0 - p["per_device_train_batch_size"].as_f64().unwrap() / 100.0;
            trials.push(trial(i, p, Some(loss), TrialState::Completed));
        }
        let late64 =
            trials[15..].iter().filter(|t| t.params["per_device_train_batch_size"] == ParamValue::Int(64)).count();
        assert!(late64 >= 8, "only {late64}/15 late proposals chose the best batch size");
    }
}
