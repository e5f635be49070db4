//! BertForSequenceClassification on tch, with the Hugging Face class and variable names.
//!
//! Every sub-module is created under the `nn::Path` equal to its checkpoint key
//! (`bert.encoder.layer.0.attention.self.query.weight`, `classifier.bias`, …), so loading
//! a checkpoint or exporting one is a 1:1 copy.
//!
//! Mixed precision is explicit rather than autocast (tch only exposes fp16 autocast): with a
//! reduced `compute_kind` the master weights stay fp32, matrix products and attention run in
//! that kind, and LayerNorm, residual sums and the logits stay fp32 — what
//! `torch.autocast(dtype=bfloat16)` does.//!
//! - `layers`: parameters under checkpoint names and optimizer groups, `Linear`,
//!   `LayerNorm`, dropout.
//! - `unpadded`: [`Unpadded`], the real tokens of a padded batch.
//! - `embeddings`: [`BertEmbeddings`].
//! - `encoder`: [`BertEncoder`] and its layers (self-attention, output blocks, feed-forward).
//! - `model`: [`BertModel`] with its pooler, and [`BertForSequenceClassification`].

mod embeddings;
mod encoder;
mod layers;
mod model;
#[cfg(test)]
mod tests;
mod unpadded;

use tch::{Device, Kind};

pub use embeddings::BertEmbeddings;
pub use encoder::{
    BertAttention, BertEncoder, BertIntermediate, BertLayer, BertOutput, BertSelfAttention, BertSelfOutput,
    ResidualOutput,
};
pub use model::{additive_mask, BertForSequenceClassification, BertModel, BertPooler};
pub use unpadded::Unpadded;

/// Optimizer group of encoder and embedding weights: weight decay applies.
pub const GROUP_DECAY: usize = 0;
/// Optimizer group of encoder biases and LayerNorm weights: no weight decay (as HF Trainer).
pub const GROUP_NO_DECAY: usize = 1;
/// Optimizer group of the classifier weight: decay, learning rate × head multiplier.
pub const GROUP_HEAD_DECAY: usize = 2;
/// Optimizer group of the classifier bias: no decay, learning rate × head multiplier.
pub const GROUP_HEAD_NO_DECAY: usize = 3;
/// Number of optimizer groups the model uses.
pub const NUM_GROUPS: usize = 4;

/// The optimizer group of a variable, by its checkpoint name: the classifier apart (its own
/// learning rate), and no weight decay for biases and LayerNorm weights (as HF Trainer's
/// `get_decay_parameter_names`).
pub fn param_group(name: &str) -> usize {
    let no_decay = name.ends_with(".bias") || name.contains("LayerNorm.");
    match (name.starts_with("classifier."), no_decay) {
        (false, false) => GROUP_DECAY,
        (false, true) => GROUP_NO_DECAY,
        (true, false) => GROUP_HEAD_DECAY,
        (true, true) => GROUP_HEAD_NO_DECAY,
    }
}

/// The kind matrix products run in on `device`: bf16 on CUDA (as `--bf16`), fp32 elsewhere.
pub fn compute_kind_for(device: Device) -> Kind {
    if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    }
}
