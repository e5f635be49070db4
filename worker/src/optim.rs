//! AdamW whose state the worker owns, so a checkpoint can carry it and a resumed trial takes
//! exactly the steps an uninterrupted one would (tch's `nn::Optimizer` keeps its state inside
//! libtorch, out of reach).
//!
//! The update is `torch.optim.AdamW(fused=True)`'s, transformers Trainer's default optimizer
//! (`adamw_torch_fused`; β₁ 0.9, β₂ 0.999, ε 1e-8, no amsgrad): decoupled decay
//! `p ← p·(1 − lr·wd)`, `m ← lerp(m, g, 1 − β₁)`, `v ← β₂·v + (1 − β₂)·g²`,
//! `p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)`, run by ATen's fused kernel
//! ([`crate::aten`]): one pass over each group's tensors instead of about ten operations per
//! tensor. Each trainable variable sits in one of [`crate::bert`]'s groups, which decides its
//! weight decay and whether it takes the encoder's or the classifier's learning rate.

use std::collections::HashMap;

use tch::{nn, Kind, TchError, Tensor};

use crate::aten::{self, AdamWHyper, AdamWState};
use crate::bert::{self, NUM_GROUPS};

/// β₁ of transformers' Trainer.
pub const BETA1: f64 = 0.9;
/// β₂ of transformers' Trainer.
pub const BETA2: f64 = 0.999;
/// ε of transformers' Trainer.
pub const EPS: f64 = 1e-8;

/// Prefix of the first-moment tensors in [`AdamW::state`].
pub const EXP_AVG: &str = "exp_avg/";
/// Prefix of the second-moment tensors in [`AdamW::state`].
pub const EXP_AVG_SQ: &str = "exp_avg_sq/";

/// Why saved optimizer state could not be restored (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum OptimStateError {
    /// A moment of a trainable variable is not among the saved tensors.
    #[error("optimizer state {key} is missing")]
    Missing {
        /// The moment's name (`exp_avg/<variable>` or `exp_avg_sq/<variable>`).
        key: String,
    },
    /// A saved moment has another shape than its variable.
    #[error("optimizer state {key} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The moment's name.
        key: String,
        /// Its shape in the saved state.
        found: Vec<i64>,
        /// Its variable's shape.
        expected: Vec<i64>,
    },
    /// Copying the checked moments in failed inside torch.
    #[error("{0}")]
    Torch(TchError),
}

/// One trainable variable and its moments.
struct Slot {
    /// Checkpoint name (`bert.encoder.layer.0…`), which names its state too.
    name: String,
    /// The variable (shares storage with the model's).
    param: Tensor,
    /// Which of the model's optimizer groups it is in.
    group: usize,
    /// First moment (running mean of gradients).
    exp_avg: Tensor,
    /// Second moment (running mean of squared gradients).
    exp_avg_sq: Tensor,
    /// Steps this variable has taken (0-d float on its device, as torch keeps it for the
    /// fused kernel).
    step: Tensor,
}

/// AdamW over a `VarStore`'s trainable variables, with per-group weight decay.
pub struct AdamW {
    /// Trainable variables in name order (a stable order for state and clipping).
    slots: Vec<Slot>,
    /// Weight decay of each group.
    weight_decay: [f64; NUM_GROUPS],
    /// Steps taken (the bias corrections' `t`).
    steps: u64,
}

impl AdamW {
    /// Zero moments for every trainable variable of `vs`; `weight_decay` applies to the
    /// decaying groups only.
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> Result<Self, TchError> {
        let mut variables: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let _no_grad = tch::no_grad_guard();
        let slots = variables
            .into_iter()
            .map(|(name, param)| {
                Ok(Slot {
                    group: bert::param_group(&name),
                    exp_avg: param.f_zeros_like()?,
                    exp_avg_sq: param.f_zeros_like()?,
                    step: Tensor::f_zeros([], (Kind::Float, param.device()))?,
                    name,
                    param,
                })
            })
            .collect::<Result<Vec<_>, TchError>>()?;
        let mut decay = [0.0; NUM_GROUPS];
        decay[bert::GROUP_DECAY] = weight_decay;
        decay[bert::GROUP_HEAD_DECAY] = weight_decay;
        Ok(AdamW { slots, weight_decay: decay, steps: 0 })
    }

    /// The trainable variables, in state order (for clipping their gradients).
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.slots.iter().map(|s| &s.param).collect()
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Drops every gradient (transformers' `zero_grad(set_to_none=True)`), so the next
    /// backward pass hands over fresh gradients rather than adding into zeroed ones.
    pub fn zero_grad(&mut self) -> Result<(), TchError> {
        aten::clear_grads(&self.parameters())
    }

    /// One step with learning rate `lr[group]` for each group: one fused AdamW call per
    /// group. Variables without a gradient (never reached by the loss) are left alone, their
    /// step counters included, as torch does.
    pub fn step(&mut self, lr: &[f64; NUM_GROUPS]) -> Result<(), TchError> {
        self.steps += 1;
        for (group, (&lr, &weight_decay)) in lr.iter().zip(&self.weight_decay).enumerate() {
            let states: Vec<AdamWState<'_>> = self
                .slots
                .iter()
                .filter(|slot| slot.group == group)
                .map(|slot| AdamWState {
                    param: &slot.param,
                    exp_avg: &slot.exp_avg,
                    exp_avg_sq: &slot.exp_avg_sq,
                    step: &slot.step,
                })
                .collect();
            let hyper = AdamWHyper { lr, beta1: BETA1, beta2: BETA2, weight_decay, eps: EPS };
            aten::adamw_step(&states, hyper)?;
        }
        Ok(())
    }

    /// The moments under `exp_avg/<name>` and `exp_avg_sq/<name>` (shallow: copy before
    /// changing), for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("{EXP_AVG}{}", s.name), s.exp_avg.shallow_clone()),
                    (format!("{EXP_AVG_SQ}{}", s.name), s.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores moments written by [`AdamW::state`] and the step count (every variable's
    /// counter: each trainable BERT variable gets a gradient at every step). Every moment must
    /// be there with its variable's shape; nothing changes unless all are.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<(), OptimStateError> {
        let mut found = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut pair = Vec::with_capacity(2);
            for prefix in [EXP_AVG, EXP_AVG_SQ] {
                let key = format!("{prefix}{}", slot.name);
                let Some(t) = tensors.get(&key) else { return Err(OptimStateError::Missing { key }) };
                if t.size() != slot.param.size() {
                    return Err(OptimStateError::Shape { key, found: t.size(), expected: slot.param.size() });
                }
                pair.push(t);
            }
            found.push(pair);
        }
        let _no_grad = tch::no_grad_guard();
        for (slot, pair) in self.slots.iter_mut().zip(found) {
            slot.exp_avg.f_copy_(pair[0]).map_err(OptimStateError::Torch)?;
            slot.exp_avg_sq.f_copy_(pair[1]).map_err(OptimStateError::Torch)?;
            let _ = slot.step.f_fill_(steps as f64).map_err(OptimStateError::Torch)?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// One weight (decays) and one bias (does not), one step against the formula by hand.
    #[test]
    fn one_step_matches_the_adamw_formula() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = (&root / "encoder" / "dense").set_group(bert::GROUP_DECAY).add(
            "weight",
            Tensor::from_slice(&[1.0f32, -2.0]),
            true,
        );
        let b = (&root / "encoder" / "dense").set_group(bert::GROUP_NO_DECAY).add(
            "bias",
            Tensor::from_slice(&[0.5f32]),
            true,
        );
        let mut opt = AdamW::new(&vs, 0.1).unwrap();
        let loss = (&w * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float) + (&b * 2.0).sum(Kind::Float);
        opt.zero_grad().unwrap();
        loss.backward();
        opt.step(&[0.01, 0.01, 0.0, 0.0]).unwrap();
        // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + ε) ≈ lr·sign(g).
        let expect = |p: f64, g: f64, wd: f64| p * (1.0 - 0.01 * wd) - 0.01 * g / (g.abs() + EPS);
        let got: Vec<f32> = Vec::try_from(&w.detach()).unwrap();
        assert!((got[0] as f64 - expect(1.0, 3.0, 0.1)).abs() < 1e-6, "{got:?}");
        assert!((got[1] as f64 - expect(-2.0, 4.0, 0.1)).abs() < 1e-6, "{got:?}");
        let got: Vec<f32> = Vec::try_from(&b.detach()).unwrap();
        assert!((got[0] as f64 - expect(0.5, 2.0, 0.0)).abs() < 1e-6, "{got:?}");
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn state_round_trips_and_a_wrong_shape_changes_nothing() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = (vs.root() / "encoder" / "dense").add("weight", Tensor::from_slice(&[1.0f32, 2.0]), true);
        let mut opt = AdamW::new(&vs, 0.0).unwrap();
        (&p * &p).sum(Kind::Float).backward();
        opt.step(&[0.1; NUM_GROUPS]).unwrap();
        let saved: HashMap<String, Tensor> = opt.state().into_iter().map(|(k, t)| (k, t.copy())).collect();
        let mut other = AdamW::new(&vs, 0.0).unwrap();
        let mut bad = saved.iter().map(|(k, t)| (k.clone(), t.copy())).collect::<HashMap<_, _>>();
        bad.insert(format!("{EXP_AVG}encoder.dense.weight"), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        assert!(other.load_state(&bad, 1).unwrap_err().to_string().contains("shape"));
        assert_eq!(other.steps(), 0);
        other.load_state(&saved, 1).unwrap();
        for ((ka, a), (kb, b)) in opt.state().iter().zip(other.state().iter()) {
            assert_eq!(ka, kb);
            assert!(a.equal(b), "{ka}");
        }
        assert_eq!(other.steps(), 1);
    }
}
