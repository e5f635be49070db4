//! Training checkpoints: a trial's resumable state after an epoch — weights, AdamW moments,
//! the step count (which fixes the schedule's position), the best epoch so far and its
//! metrics, and, when the best epoch is an earlier one and a model is to be exported, its
//! weights. (The pre-trained weights every trial starts from are [`crate::pretrained`]'s.)
//!
//! Nothing else is needed to continue exactly: the batch order of epoch `e` and the dropout
//! stream of epoch `e` are functions of (seed, e) alone (see [`crate::train`]), so the next
//! epoch after a resume draws what it would have drawn without the interruption.
//!
//! On disk a checkpoint is a directory: `tensors.safetensors` (`model/…`, `exp_avg/…`,
//! `exp_avg_sq/…`, `best/…`) and `state.json`, written last, which names the tensors file's
//! sha256 and the trial's fingerprint. Loading checks both, so a torn, corrupted or foreign
//! checkpoint is refused as a whole and the trial starts again from epoch 1.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bertsweep_evaluation::Predictions;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::optim::{AdamW, OptimStateError};
use crate::train::config::TrialConfig;

/// The JSON file that describes a checkpoint (written last: without it there is none).
pub const STATE_FILE: &str = "state.json";
/// The tensors of a checkpoint.
pub const TENSORS_FILE: &str = "tensors.safetensors";
/// Every file of a checkpoint directory, the state file last (copy in this order, so a
/// copy cut short has no state file and is not a checkpoint).
pub const FILES: [&str; 2] = [TENSORS_FILE, STATE_FILE];
/// Version of the layout; another version is refused.
pub const FORMAT: u32 = 1;

/// Prefix of the model's variables in the tensors file.
const MODEL: &str = "model/";
/// Prefix of the best epoch's weights (only when it is not the checkpoint's own epoch).
const BEST: &str = "best/";

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The checkpoint is not usable for this trial.
    #[error("{dir}: {message}")]
    Invalid {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's optimizer state does not fit the model.
    #[error("{dir}: {error}")]
    Optimizer {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong with the state.
        error: OptimStateError,
    },
}

/// A tensor could not be copied to host memory for a checkpoint (training goes on without it).
#[derive(Debug, thiserror::Error)]
#[error("copying a tensor to the host: {0}")]
pub struct HostCopyError(pub tch::TchError);

/// `state.json`: where the trial stood after the checkpoint's epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// [`FORMAT`].
    pub format: u32,
    /// [`fingerprint`] of the trial that wrote it.
    pub fingerprint: String,
    /// Epochs completed (the next one to train is `epoch + 1`).
    pub epoch: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Best epoch so far (1-based).
    pub best_epoch: usize,
    /// Its objective value.
    pub best_value: f64,
    /// Its metrics.
    pub best_metrics: BTreeMap<String, f64>,
    /// The best epoch's dev-set predictions (absent in checkpoints that predate them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_predictions: Option<SavedPredictions>,
    /// The checkpoint epoch's metrics.
    pub last_metrics: BTreeMap<String, f64>,
    /// Whether `best/…` weights are in the tensors file.
    pub has_best_weights: bool,
    /// Lowercase hex sha256 of the tensors file.
    pub tensors_sha256: String,
}

/// [`Predictions`] as `state.json` keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPredictions {
    /// Classes per example.
    pub classes: usize,
    /// True class per example, in the validation file's order.
    pub labels: Vec<u32>,
    /// Row-major probabilities.
    pub probabilities: Vec<f32>,
    /// Per-class loss weights (empty: unweighted).
    #[serde(default)]
    pub class_weights: Vec<f32>,
}

impl From<&Predictions> for SavedPredictions {
    fn from(p: &Predictions) -> Self {
        SavedPredictions {
            classes: p.classes(),
            labels: p.labels().to_vec(),
            probabilities: p.probabilities().to_vec(),
            class_weights: p.class_weights().to_vec(),
        }
    }
}

impl SavedPredictions {
    /// The predictions again; `None` (logged) when the saved ones do not hold together, which
    /// costs the trial only its confidence interval.
    pub fn restore(self) -> Option<Predictions> {
        Predictions::new(self.classes, self.labels, self.probabilities, self.class_weights)
            .map_err(|e| tracing::warn!("the checkpoint's dev-set predictions are dropped: {e}"))
            .ok()
    }
}

/// What a loaded checkpoint gives back besides the weights and moments it restored.
pub struct Restored {
    /// Where the trial stood.
    pub state: ResumeState,
    /// The best epoch's weights on the CPU, when stored apart from the current ones.
    pub best_weights: Option<HashMap<String, Tensor>>,
}

/// What identifies a trial's training run: every setting that changes what is learned (paths
/// are left out: workers lay the same inputs out at different places).
pub fn fingerprint(cfg: &TrialConfig) -> String {
    format!(
        "lr={:e} epochs={} batch={} warmup={:e} decay={:e} seed={} head_lr×{:e} freeze={} max_len={} samples={:?} \
         group={} text={} label={} objective={} maximize={}",
        cfg.learning_rate,
        cfg.num_train_epochs,
        cfg.per_device_train_batch_size,
        cfg.warmup_ratio,
        cfg.weight_decay,
        cfg.seed,
        cfg.head_lr_multiplier,
        cfg.freeze_layers,
        cfg.max_seq_length,
        cfg.max_train_samples,
        cfg.group_by_length,
        cfg.text_column,
        cfg.label_column,
        cfg.objective_metric,
        cfg.maximize,
    ) + if cfg.balanced_class_weights { " class_weights=balanced" } else { "" }
        // Only when set, so checkpoints of single-sentence trials written before pairs match.
        + &cfg.text_pair_column.as_ref().map(|c| format!(" text_pair={c}")).unwrap_or_default()
        // Each fold trains on other examples: a checkpoint resumes only its own fold.
        + &cfg.folds.map(|f| format!(" fold={}/{} fold_seed={}", f.index, f.count, f.seed)).unwrap_or_default()
}

/// Size and time of one written checkpoint (for the log).
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Bytes on disk.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// A checkpoint's contents copied off the training tensors (on the host, so training may go
/// on mutating its own), ready to be written to disk by another thread.
pub struct Snapshot {
    state: ResumeState,
    tensors: Vec<(String, Tensor)>,
    /// How long taking the copies held training up.
    pub seconds: f64,
}

impl Snapshot {
    /// Copies the current weights, AdamW state and `best` (the best epoch's weights when they
    /// differ from the current ones and will be exported) to host memory. CPU tensors are
    /// cloned (training updates them in place); device tensors are copied down.
    pub fn take(
        state: ResumeState,
        variables: &HashMap<String, Tensor>,
        optimizer: &AdamW,
        best: Option<&HashMap<String, Tensor>>,
    ) -> Result<Snapshot, HostCopyError> {
        Self::gather(state, variables, optimizer, best, true)
    }

    /// [`Snapshot::take`]; with `clone_cpu` false, CPU tensors are shared rather than cloned
    /// (for a write that finishes before training touches them again).
    fn gather(
        state: ResumeState,
        variables: &HashMap<String, Tensor>,
        optimizer: &AdamW,
        best: Option<&HashMap<String, Tensor>>,
        clone_cpu: bool,
    ) -> Result<Snapshot, HostCopyError> {
        let started = Instant::now();
        let _no_grad = tch::no_grad_guard();
        let host_copy = |t: &Tensor| -> Result<Tensor, HostCopyError> {
            let copied = match t.device() {
                Device::Cpu if !clone_cpu => t.f_contiguous(),
                Device::Cpu => Tensor::f_empty_like(t)
                    .and_then(|mut copy| copy.f_copy_(t).map(|()| copy))
                    .and_then(|c| c.f_contiguous()),
                _ => t.f_to_device(Device::Cpu).and_then(|c| c.f_contiguous()),
            };
            copied.map_err(HostCopyError)
        };
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in variables {
            tensors.push((format!("{MODEL}{name}"), host_copy(t)?));
        }
        for (name, t) in optimizer.state() {
            tensors.push((name, host_copy(&t)?));
        }
        let mut state = state;
        state.has_best_weights = best.is_some();
        for (name, t) in best.into_iter().flatten() {
            // Best weights are host copies already, replaced (never updated) on improvement.
            let t = if t.device() == Device::Cpu { t.shallow_clone() } else { host_copy(t)? };
            tensors.push((format!("{BEST}{name}"), t));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Snapshot { state, tensors, seconds: started.elapsed().as_secs_f64() })
    }

    /// The epoch it ends.
    pub fn epoch(&self) -> usize {
        self.state.epoch
    }

    /// Writes it into `dir` (created; must not hold another): the tensors, then `state.json`
    /// naming their sha256.
    pub fn write(self, dir: &Path) -> Result<Written, ResumeError> {
        let started = Instant::now();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ResumeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let invalid = |message: String| ResumeError::Invalid { dir: dir.to_path_buf(), message };
        let path = dir.join(TENSORS_FILE);
        Tensor::write_safetensors(&self.tensors, &path).map_err(|e| invalid(format!("writing {TENSORS_FILE}: {e}")))?;
        let (digest, size) = bertsweep_transfer::digest::hash_file(&path).map_err(io(&path))?;
        let mut state = self.state;
        state.tensors_sha256 = digest.to_string();
        state.format = FORMAT;
        let json = serde_json::to_vec_pretty(&state).map_err(|e| invalid(e.to_string()))?;
        let state_path = dir.join(STATE_FILE);
        std::fs::write(&state_path, &json).map_err(io(&state_path))?;
        Ok(Written { bytes: size + json.len() as u64, seconds: started.elapsed().as_secs_f64() })
    }
}

/// Writes a checkpoint into `dir` (created; must not hold another). `best` are the best
/// epoch's weights when they differ from the current ones and will be exported.
pub fn save(
    dir: &Path,
    state: ResumeState,
    variables: &HashMap<String, Tensor>,
    optimizer: &AdamW,
    best: Option<&HashMap<String, Tensor>>,
) -> Result<Written, ResumeError> {
    let started = Instant::now();
    // Written before training goes on: CPU tensors need no copy.
    let snapshot = Snapshot::gather(state, variables, optimizer, best, false)
        .map_err(|e| ResumeError::Invalid { dir: dir.to_path_buf(), message: e.to_string() })?;
    let written = snapshot.write(dir)?;
    Ok(Written { bytes: written.bytes, seconds: started.elapsed().as_secs_f64() })
}

/// Reads `dir`'s `state.json` and checks it belongs to `cfg` and leaves an epoch to train.
pub fn read_state(dir: &Path, cfg: &TrialConfig) -> Result<ResumeState, ResumeError> {
    let invalid = |message: String| ResumeError::Invalid { dir: dir.to_path_buf(), message };
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ResumeError::Io { path: path.clone(), source })?;
    let state: ResumeState =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{STATE_FILE} is not a checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(invalid(format!("checkpoint format {} (this worker reads {FORMAT})", state.format)));
    }
    if state.fingerprint != fingerprint(cfg) {
        return Err(invalid(format!(
            "written by another configuration ({}), not this trial's ({})",
            state.fingerprint,
            fingerprint(cfg)
        )));
    }
    if state.epoch == 0
        || state.epoch >= cfg.num_train_epochs
        || state.best_epoch == 0
        || state.best_epoch > state.epoch
    {
        return Err(invalid(format!(
            "epoch {} (best {}) leaves nothing to resume in a {}-epoch trial",
            state.epoch, state.best_epoch, cfg.num_train_epochs
        )));
    }
    Ok(state)
}

/// Loads a checkpoint into the model's `variables` and `optimizer`. Everything is checked
/// before anything changes, so on error the model is as it was.
pub fn load(
    dir: &Path,
    cfg: &TrialConfig,
    variables: &HashMap<String, Tensor>,
    optimizer: &mut AdamW,
) -> Result<Restored, ResumeError> {
    let invalid = |message: String| ResumeError::Invalid { dir: dir.to_path_buf(), message };
    let state = read_state(dir, cfg)?;
    let path = dir.join(TENSORS_FILE);
    let (digest, _) = bertsweep_transfer::digest::hash_file(&path)
        .map_err(|source| ResumeError::Io { path: path.clone(), source })?;
    if digest.to_string() != state.tensors_sha256 {
        return Err(invalid(format!("{TENSORS_FILE} does not match its recorded sha256 (corrupted or torn)")));
    }
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .map_err(|e| invalid(format!("reading {TENSORS_FILE}: {e}")))?
        .into_iter()
        .collect();
    let mut model = Vec::with_capacity(variables.len());
    let mut best = HashMap::new();
    for (name, var) in variables {
        for (prefix, wanted) in [(MODEL, true), (BEST, state.has_best_weights)] {
            if !wanted {
                continue;
            }
            let key = format!("{prefix}{name}");
            let t = tensors.get(&key).ok_or_else(|| invalid(format!("tensor {key} is missing")))?;
            if t.size() != var.size() || t.kind() != Kind::Float {
                return Err(invalid(format!(
                    "tensor {key} is {:?} {:?}, the model has {:?}",
                    t.kind(),
                    t.size(),
                    var.size()
                )));
            }
            if prefix == MODEL {
                model.push((var, t));
            } else {
                best.insert(name.clone(), t.shallow_clone());
            }
        }
    }
    // The optimizer checks all its moments before it changes any; the weights go last.
    optimizer
        .load_state(&tensors, state.steps)
        .map_err(|error| ResumeError::Optimizer { dir: dir.to_path_buf(), error })?;
    let _no_grad = tch::no_grad_guard();
    for (var, t) in model {
        let mut var = var.shallow_clone();
        var.f_copy_(t).map_err(|e| invalid(format!("restoring a weight: {e}")))?;
    }
    let best_weights = state.has_best_weights.then_some(best);
    Ok(Restored { state, best_weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_column_joins_the_fingerprint_only_when_set() {
        let single = TrialConfig::default();
        assert!(!fingerprint(&single).contains("text_pair"), "old checkpoints still match");
        let pair = TrialConfig { text_pair_column: Some("sentence2".into()), ..TrialConfig::default() };
        assert_eq!(fingerprint(&pair), fingerprint(&single) + " text_pair=sentence2");
    }
}
