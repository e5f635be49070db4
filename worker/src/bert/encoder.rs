//! `bert.encoder`: the stack of transformer layers — self-attention (query, key and value in
//! one product, attention on a padded view), its output block, the feed-forward layer and
//! its output block.

use tch::{nn, Kind, TchError, Tensor};

use super::layers::{dropout, LayerNorm, Linear, Params};
use super::unpadded::Unpadded;
use crate::config::BertConfig;

/// What every layer of one forward pass shares: the additive attention mask (`None` when no
/// position is padding), the unpadded layout (`None`: hidden states are padded), the compute
/// kind, and whether dropout is on.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    /// `[batch, 1, 1, seq]`, added to attention scores.
    pub(super) mask: Option<&'a Tensor>,
    /// The batch's real tokens, when hidden states are `[tokens, hidden]`.
    pub(super) tokens: Option<&'a Unpadded>,
    /// The kind matrix products run in.
    pub(super) kind: Kind,
    /// Training: dropout on.
    pub(super) train: bool,
}

/// Query, key and value projections and scaled-dot-product attention over all heads.
#[derive(Debug)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl BertSelfAttention {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        let (h, std) = (c.hidden_size, c.initializer_range);
        BertSelfAttention {
            query: Linear::new(&(p / "query"), params, h, h, std),
            key: Linear::new(&(p / "key"), params, h, h, std),
            value: Linear::new(&(p / "value"), params, h, h, std),
            num_heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            dropout: c.attention_probs_dropout_prob,
        }
    }

    /// `[batch, seq, hidden]` → `[batch, seq, hidden]` in `kind`; `mask` is additive,
    /// `[batch, 1, 1, seq]`, `None` when no position is padding.
    /// With `tokens`, `xs` is `[tokens, hidden]` (real tokens only) and so is the result; the
    /// projections run on real tokens and attention on a padded view.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        // One matrix product for the three projections (their weights stacked), and one
        // padded copy of the result: the same products as three `nn.Linear`s.
        let weight = Tensor::f_cat(&[&self.query.weight, &self.key.weight, &self.value.weight], 0)?;
        let bias = Tensor::f_cat(&[&self.query.bias, &self.key.bias, &self.value.bias], 0)?;
        let qkv = Linear { weight, bias }.forward(xs, kind)?;
        let qkv = match tokens {
            Some(tokens) => tokens.pad(&qkv)?,
            None => qkv,
        };
        let size = qkv.size();
        let (batch, seq, width) = (size[0], size[1], size[2]);
        // Three [batch, heads, seq, head_dim] views, split along the feature axis: backward
        // joins their gradients with one concatenation (selecting from a [3, …] view instead
        // would write three zero-filled full-size gradients and add them up).
        let heads = |part: &Tensor| -> Result<Tensor, TchError> {
            part.f_view([batch, seq, self.num_heads, self.head_dim])?.f_transpose(1, 2)
        };
        let parts = qkv.f_split(width / 3, 2)?;
        let (q, k, v) = (heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?);
        let p = if train { self.dropout } else { 0.0 };
        let context = Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, p, false, None, false)?;
        let context = context.f_transpose(1, 2)?.f_reshape([batch, seq, self.num_heads * self.head_dim])?;
        match tokens {
            Some(tokens) => tokens.unpad(&context),
            None => Ok(context),
        }
    }
}

/// Projection, dropout, residual and LayerNorm: the block after attention (`attention.output`,
/// [`BertSelfOutput`]) and after the feed-forward layer (`output`, [`BertOutput`]), which
/// differ only in the width they project from.
#[derive(Debug)]
pub struct ResidualOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: f64,
}

/// Projection after attention, dropout, residual and LayerNorm (`attention.output`).
pub type BertSelfOutput = ResidualOutput;
/// Second feed-forward projection, dropout, residual and LayerNorm (`output`).
pub type BertOutput = ResidualOutput;

impl ResidualOutput {
    /// The block under `p`, projecting `in_dim` features back to the hidden size.
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig, in_dim: i64) -> Self {
        ResidualOutput {
            dense: Linear::new(&(p / "dense"), params, in_dim, c.hidden_size, c.initializer_range),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), params, c.hidden_size, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
        }
    }

    fn forward_t(&self, xs: &Tensor, input: &Tensor, kind: Kind, train: bool) -> Result<Tensor, TchError> {
        let xs = dropout(self.dense.forward(xs, kind)?, self.dropout, train)?;
        self.layer_norm.forward(&xs.f_add(input)?)
    }
}

/// Self-attention followed by its output block.
#[derive(Debug)]
pub struct BertAttention {
    self_attention: BertSelfAttention,
    output: BertSelfOutput,
}

impl BertAttention {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertAttention {
            self_attention: BertSelfAttention::new(&(p / "self"), params, c),
            output: ResidualOutput::new(&(p / "output"), params, c, c.hidden_size),
        }
    }

    /// The block over `xs` (`[batch, seq, hidden]`, or `[tokens, hidden]` with `pass.tokens`).
    pub(super) fn forward_t(&self, xs: &Tensor, pass: Pass<'_>) -> Result<Tensor, TchError> {
        let attended = self.self_attention.forward_t(xs, pass.mask, pass.tokens, pass.kind, pass.train)?;
        self.output.forward_t(&attended, xs, pass.kind, pass.train)
    }
}

/// First feed-forward projection and activation.
#[derive(Debug)]
pub struct BertIntermediate {
    dense: Linear,
    activation: String,
}

impl BertIntermediate {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertIntermediate {
            dense: Linear::new(&(p / "dense"), params, c.hidden_size, c.intermediate_size, c.initializer_range),
            activation: c.hidden_act.clone(),
        }
    }

    /// The projection to the intermediate size and the activation, in `kind`.
    pub(super) fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        let xs = self.dense.forward(xs, kind)?;
        match self.activation.as_str() {
            "relu" => xs.f_relu(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => xs.f_gelu("tanh"),
            // "gelu" in transformers is the exact erf form.
            _ => xs.f_gelu("none"),
        }
    }
}

/// One transformer encoder layer.
#[derive(Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
}

impl BertLayer {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertLayer {
            attention: BertAttention::new(&(p / "attention"), params, c),
            intermediate: BertIntermediate::new(&(p / "intermediate"), params, c),
            output: ResidualOutput::new(&(p / "output"), params, c, c.intermediate_size),
        }
    }

    /// The block over `xs` (`[batch, seq, hidden]`, or `[tokens, hidden]` with `pass.tokens`).
    pub(super) fn forward_t(&self, xs: &Tensor, pass: Pass<'_>) -> Result<Tensor, TchError> {
        let attended = self.attention.forward_t(xs, pass)?;
        let hidden = self.intermediate.forward(&attended, pass.kind)?;
        self.output.forward_t(&hidden, &attended, pass.kind, pass.train)
    }
}

/// The stack of encoder layers.
#[derive(Debug)]
pub struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig, frozen_layers: usize) -> Self {
        let layers = (0..c.num_hidden_layers as usize)
            .map(|i| {
                let params = Params { trainable: params.trainable && i >= frozen_layers, ..params };
                BertLayer::new(&(p / "layer" / i), params, c)
            })
            .collect();
        BertEncoder { layers }
    }

    /// Every layer in turn over `xs` (`[batch, seq, hidden]`, or `[tokens, hidden]` with
    /// `pass.tokens`).
    pub(super) fn forward_t(&self, xs: Tensor, pass: Pass<'_>) -> Result<Tensor, TchError> {
        self.layers.iter().try_fold(xs, |xs, layer| layer.forward_t(&xs, pass))
    }
}
