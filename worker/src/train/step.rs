//! One optimizer step, exactly as every trial takes it ([`StepTrainer`]): forward, loss,
//! backward, gradient clipping and a fused AdamW step at the scheduled learning rate.

use std::collections::HashMap;

use tch::{nn, Device, Kind, Reduction, TchError, Tensor};

use super::config::TrialConfig;
use super::error::{torch, TrainError};
use crate::bert::{self, BertForSequenceClassification};
use crate::config::BertConfig;
use crate::data::Batch;
use crate::optim::AdamW;
use crate::phase_clock::{Phase, PhaseClock};
use crate::pretrained::Weights;
use crate::schedule::LinearSchedule;

/// Maximum L2 norm of all gradients together (transformers' `max_grad_norm`).
pub const MAX_GRAD_NORM: f64 = 1.0;

/// One optimizer step at a time, exactly as every trial takes them: the model (pre-trained
/// weights loaded), AdamW with transformers' parameter groups, the linear schedule and
/// gradient clipping. [`run_trial`](super::run_trial) drives it over its epochs; it is public so parity tests
/// can drive it over explicit batches and compare each step with PyTorch + transformers.
pub struct StepTrainer {
    /// Every variable of the model, by checkpoint name.
    pub(super) vs: nn::VarStore,
    /// The model over `vs`.
    model: BertForSequenceClassification,
    /// AdamW over the trainable variables (its step count is the schedule's position).
    pub(super) optimizer: AdamW,
    /// Warm-up and decay over the whole run's steps.
    pub(super) schedule: LinearSchedule,
    /// Peak learning rate of the encoder.
    learning_rate: f64,
    /// The classifier's learning rate over the encoder's.
    head_lr_multiplier: f64,
    /// Per-class loss weights (`torch.nn.CrossEntropyLoss(weight=…)`), on the device.
    pub(super) class_weights: Option<Tensor>,
    /// Per-phase wall time, when asked for (`BERTSWEEP_STEP_PROFILE=1`; adds device waits).
    pub(super) clock: Option<PhaseClock>,
}

/// What one optimizer step measured (detached, on the training device: reading them syncs).
pub struct StepStats {
    /// The batch's mean cross-entropy loss before the step.
    pub loss: Tensor,
    /// The joint L2 norm of all gradients before clipping (what `clip_grad_norm_` returns).
    pub grad_norm: Tensor,
}

impl StepTrainer {
    /// Seeds torch with `cfg.seed`, builds the model for `config` (whose dropout rates are
    /// used as given) with `num_labels` classes, loads `cfg.model_dir`'s weights and sets up
    /// AdamW and a schedule over `total_steps`.
    pub fn new(
        cfg: &TrialConfig,
        config: &BertConfig,
        num_labels: i64,
        total_steps: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(cfg.seed as i64);
        if device.is_cuda() {
            tch::Cuda::manual_seed_all(cfg.seed);
        }
        let vs = nn::VarStore::new(device);
        let kind = bert::compute_kind_for(device);
        let model = BertForSequenceClassification::new(&vs.root(), config, num_labels, cfg.freeze_layers, kind);
        let weights = Weights::from_dir(&cfg.model_dir)?;
        let report = weights.load_into(&vs)?;
        drop(weights);
        tracing::info!(initialized = ?report.initialized, unused = report.unused.len(), "loaded pre-trained weights");

        let optimizer = AdamW::new(&vs, cfg.weight_decay).map_err(torch("creating the optimizer"))?;
        Ok(StepTrainer {
            vs,
            model,
            optimizer,
            schedule: LinearSchedule::new(total_steps, cfg.warmup_ratio),
            learning_rate: cfg.learning_rate,
            head_lr_multiplier: cfg.head_lr_multiplier,
            class_weights: None,
            clock: PhaseClock::from_env(device),
        })
    }

    /// Weights each class's loss by `weights` (one per class; the batch loss is then the
    /// weighted mean, as `torch.nn.CrossEntropyLoss(weight=…)`).
    pub fn set_class_weights(&mut self, weights: &[f64]) -> Result<(), TrainError> {
        let device = self.vs.device();
        let tensor = Tensor::from_slice(weights)
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_to_device(device))
            .map_err(torch("class weights"))?;
        self.class_weights = Some(tensor);
        Ok(())
    }

    /// Forward, backward, clip, AdamW step at the scheduled learning rate.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats, TrainError> {
        let factor = self.schedule.factor(self.steps_done());
        let lr = self.learning_rate * factor;
        let head_lr = lr * self.head_lr_multiplier;
        let mut rates = [0.0; bert::NUM_GROUPS];
        rates[bert::GROUP_DECAY] = lr;
        rates[bert::GROUP_NO_DECAY] = lr;
        rates[bert::GROUP_HEAD_DECAY] = head_lr;
        rates[bert::GROUP_HEAD_NO_DECAY] = head_lr;

        let logits = self.logits(batch, true).map_err(torch("forward pass"))?;
        let loss = logits
            .f_cross_entropy_loss(&batch.labels, self.class_weights.as_ref(), Reduction::Mean, -100, 0.0)
            .map_err(torch("computing the loss"))?;
        self.mark(Phase::Forward);
        self.optimizer.zero_grad().map_err(torch("dropping gradients"))?;
        loss.f_backward().map_err(torch("backward pass"))?;
        self.mark(Phase::Backward);
        let grad_norm =
            clip_grad_norm(&self.optimizer.parameters(), MAX_GRAD_NORM).map_err(torch("clipping gradients"))?;
        self.mark(Phase::Clip);
        self.optimizer.step(&rates).map_err(torch("optimizer step"))?;
        self.mark(Phase::Optimizer);
        Ok(StepStats { loss: loss.f_detach().map_err(torch("training step"))?, grad_norm })
    }

    /// The model's logits for `batch` (`train`: dropout on), on its padded or unpadded path
    /// as the batch was built.
    pub(super) fn logits(&self, batch: &Batch, train: bool) -> Result<Tensor, TchError> {
        self.model.forward_unpadded_t(
            &batch.input_ids,
            batch.token_type_ids.as_ref(),
            batch.attention_mask.as_ref(),
            batch.tokens.as_ref(),
            train,
        )
    }

    /// Charges the time since the last mark to `phase`, if profiling.
    pub(super) fn mark(&mut self, phase: Phase) {
        if let Some(clock) = &mut self.clock {
            clock.mark(phase);
        }
    }

    /// Restarts the phase clock at the start of a step, if profiling.
    pub(super) fn start_step_clock(&mut self) {
        if let Some(clock) = &mut self.clock {
            clock.start();
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        // The optimizer's count is the one truth (a resume restores it with the moments).
        self.optimizer.steps() as usize
    }

    /// The model (for evaluation).
    pub fn model(&self) -> &BertForSequenceClassification {
        &self.model
    }

    /// Every variable by its checkpoint name (shared with the model: copy before changing).
    pub fn variables(&self) -> HashMap<String, Tensor> {
        self.vs.variables()
    }
}

/// Scales gradients so their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (one `_foreach` pass, no host synchronisation); returns
/// the norm before clipping (a 0-d tensor).
pub fn clip_grad_norm(variables: &[&Tensor], max_norm: f64) -> Result<Tensor, TchError> {
    crate::aten::clip_grad_norm(variables, max_norm)
}
