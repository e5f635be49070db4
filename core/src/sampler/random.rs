//! Random search: each trial's params come from a ChaCha stream seeded by (study seed, trial
//! number), so a study is reproducible whatever order workers ask in and across restarts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Sampler;
use crate::model::Trial;
use crate::params::{ParamKind, ParamValue, Params};
use crate::spec::{Domain, Objective, ParamSpec, RangeDomain, StudySpec};

/// Independent draws from each parameter's domain.
pub struct RandomSampler {
    seed: u64,
    parameters: Vec<ParamSpec>,
}

impl RandomSampler {
    /// The sampler of `spec`: its seed and parameter domains are all it needs.
    pub fn new(spec: &StudySpec) -> Self {
        RandomSampler { seed: spec.seed, parameters: spec.parameters.clone() }
    }
}

/// One draw from a domain; shared with model-based samplers for their start-up trials.
pub(crate) fn draw(domain: &Domain, rng: &mut impl Rng) -> ParamValue {
    match domain {
        Domain::Fixed(v) => v.clone(),
        Domain::Categorical(vs) => vs[rng.gen_range(0..vs.len())].clone(),
        Domain::Range(r) => draw_range(r, rng),
    }
}

fn draw_range(r: &RangeDomain, rng: &mut impl Rng) -> ParamValue {
    if let Some(points) = r.grid().filter(|_| r.step.is_some() || r.kind == ParamKind::Int) {
        return points[rng.gen_range(0..points.len())].clone();
    }
    let x = if r.log {
        (r.min.ln() + rng.gen::<f64>() * (r.max.ln() - r.min.ln())).exp()
    } else {
        r.min + rng.gen::<f64>() * (r.max - r.min)
    };
    ParamValue::Float(x.clamp(r.min, r.max))
}

impl Sampler for RandomSampler {
    fn sample(&self, number: u32, _trials: &[Trial], _objective: &Objective) -> Option<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(number as u64 + 1);
        Some(self.parameters.iter().map(|p| (p.name.clone(), draw(&p.domain, &mut rng))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_study;

    fn spec(seed: u64) -> StudySpec {
        let text = crate::spec::test_support::SMALL_GRID
            .replace("sampler = \"grid\"", &format!("sampler = \"random\"\nseed = {seed}"))
            .replace("values = [3e-5, 5e-5]", "distribution = \"log_uniform\"\nmin = 1e-5\nmax = 5e-5")
            .replace("[budget]", "[budget]\nmax_trials = 50");
        parse_study(&text).unwrap()
    }

    #[test]
    fn reproducible_in_range_and_seed_dependent() {
        let a = RandomSampler::new(&spec(7));
        let b = RandomSampler::new(&spec(7));
        let c = RandomSampler::new(&spec(8));
        let obj = Objective { metric: "eval_accuracy".into(), maximize: true };
        let mut differs = false;
        for n in 0..50 {
            let pa = a.sample(n, &[], &obj).unwrap();
            assert_eq!(pa, b.sample(n, &[], &obj).unwrap());
            differs |= pa != c.sample(n, &[], &obj).unwrap();
            let lr = pa["learning_rate"].as_f64().unwrap();
            assert!((1e-5..=5e-5).contains(&lr), "{lr}");
            assert!(matches!(pa["per_device_train_batch_size"], ParamValue::Int(16) | ParamValue::Int(32)));
        }
        assert!(differs);
    }
}
