//! BertForSequenceClassification on tch, with the Hugging Face class and variable names.
//!
//! Every sub-module is created under the `nn::Path` equal to its checkpoint key
//! (`bert.encoder.layer.0.attention.self.query.weight`, `classifier.bias`, …), so loading
//! a checkpoint or exporting one is a 1:1 copy.
//!
//! Mixed precision is explicit rather than autocast (tch only exposes fp16 autocast): with a
//! reduced `compute_kind` the master weights stay fp32, matrix products and attention run in
//! that kind, and LayerNorm, residual sums and the logits stay fp32 — what
//! `torch.autocast(dtype=bfloat16)` does.

use tch::{nn, Device, Kind, TchError, Tensor};

use crate::config::BertConfig;

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

/// Creates the parameters of one sub-module under its path, trainable or frozen
/// (`freeze_layers`), each in the optimizer group its name implies.
#[derive(Clone, Copy)]
struct Params<'p, 'a> {
    path: &'p nn::Path<'a>,
    trainable: bool,
}

impl<'p, 'a> Params<'p, 'a> {
    fn tensor(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        let opts = (Kind::Float, self.path.device());
        let value = match init {
            Init::Normal(std) => Tensor::randn(dims, opts) * std,
            Init::Zeros => Tensor::zeros(dims, opts),
            Init::Ones => Tensor::ones(dims, opts),
        };
        let group = param_group(&self.path.path(name));
        self.path.set_group(group).add(name, value, self.trainable)
    }

    /// A weight matrix, initialised normal(0, std).
    fn weight(&self, name: &str, dims: &[i64], std: f64) -> Tensor {
        self.tensor(name, dims, Init::Normal(std))
    }

    /// A bias or LayerNorm parameter, filled with a constant.
    fn filled(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        self.tensor(name, dims, init)
    }
}

#[derive(Clone, Copy)]
enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// `nn.Linear`: `weight` is `[out, in]`, run in the model's compute kind.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, in_dim: i64, out_dim: i64, std: f64) -> Self {
        let params = Params { path: p, ..params };
        Linear {
            weight: params.weight("weight", &[out_dim, in_dim], std),
            bias: params.filled("bias", &[out_dim], Init::Zeros),
        }
    }

    fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        if kind == Kind::Float {
            return xs.f_linear(&self.weight, Some(&self.bias));
        }
        xs.f_to_kind(kind)?.f_linear(&self.weight.f_to_kind(kind)?, Some(&self.bias.f_to_kind(kind)?))
    }
}

/// `nn.LayerNorm`, always computed in fp32.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, dim: i64, eps: f64) -> Self {
        let params = Params { path: p, ..params };
        LayerNorm {
            weight: params.filled("weight", &[dim], Init::Ones),
            bias: params.filled("bias", &[dim], Init::Zeros),
            eps,
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let dim = self.weight.size();
        xs.f_to_kind(Kind::Float)?.f_layer_norm(&dim, Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

fn dropout(xs: Tensor, p: f64, train: bool) -> Result<Tensor, TchError> {
    if train && p > 0.0 {
        xs.f_dropout(p, true)
    } else {
        Ok(xs)
    }
}

/// Where the real (non-padding) tokens of a right-padded `[batch, seq]` batch sit: the
/// encoder then keeps its hidden states as `[tokens, hidden]`, so the embeddings, projections,
/// feed-forward layers and LayerNorms compute real tokens only (on SST-2 sentences in random
/// batches of 32, about a third of the padded positions), and only attention sees a padded
/// `[batch, heads, seq, head_dim]` view. Padding never influenced a real token (its keys are
/// masked to zero weight), so the result is the padded computation's, up to the order of
/// floating-point sums.
#[derive(Debug)]
pub struct Unpadded {
    /// Flat positions (`row * seq + column`) of the real tokens, in row-major order.
    index: Tensor,
    /// Row of each example's first token ([CLS]) in the `[tokens, hidden]` states.
    starts: Tensor,
    batch: i64,
    seq: i64,
}

impl Unpadded {
    /// The real tokens of `attention_mask` (`[batch, seq]`, 1 = token, 0 = padding),
    /// found on its device (on a GPU, `nonzero` waits for the device: prefer
    /// [`Unpadded::from_lengths`] where the lengths are known).
    pub fn from_mask(attention_mask: &Tensor) -> Result<Self, TchError> {
        let size = attention_mask.size();
        let index = attention_mask.f_reshape([-1])?.f_nonzero()?.f_squeeze_dim(1)?;
        let lengths = attention_mask.f_sum_dim_intlist(1, false, Kind::Int64)?;
        let starts = lengths.f_cumsum(0, Kind::Int64)?.f_sub(&lengths)?;
        Ok(Unpadded { index, starts, batch: size[0], seq: size[1] })
    }

    /// The real tokens of a right-padded batch of examples with `lengths` tokens each,
    /// padded to `seq`: computed on the host and copied to `device` with the batch, so the
    /// training step never waits for the device to find them.
    pub fn from_lengths(lengths: &[usize], seq: usize, device: Device) -> Result<Self, TchError> {
        let index: Vec<i64> = lengths
            .iter()
            .enumerate()
            .flat_map(|(row, &len)| (0..len.min(seq)).map(move |column| (row * seq + column) as i64))
            .collect();
        let starts: Vec<i64> = lengths
            .iter()
            .scan(0i64, |next, &len| {
                let start = *next;
                *next += len.min(seq) as i64;
                Some(start)
            })
            .collect();
        Ok(Unpadded {
            index: crate::aten::upload(Tensor::f_from_slice(&index)?, device)?,
            starts: crate::aten::upload(Tensor::f_from_slice(&starts)?, device)?,
            batch: lengths.len() as i64,
            seq: seq as i64,
        })
    }

    /// `[tokens, width]` → `[batch, seq, width]` with zeros at padding.
    fn pad(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let width = xs.size()[1];
        // In place into fresh zeros: the out-of-place `index_copy` would first clone the
        // zeros, a full-size copy per layer (on 2 CPU cores, 0.6 against 3.9 ms for a MiniLM
        // batch of 32 SST-2 sentences).
        let mut zeros = Tensor::f_zeros([self.batch * self.seq, width], (xs.kind(), xs.device()))?;
        zeros.f_index_copy_(0, &self.index, xs)?.f_view([self.batch, self.seq, width])
    }

    /// `[batch, seq, width]` → `[tokens, width]`.
    fn unpad(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let width = xs.size()[2];
        xs.f_reshape([self.batch * self.seq, width])?.f_index_select(0, &self.index)
    }
}

/// Word, position and token-type embeddings, summed, normalised and dropped out.
#[derive(Debug)]
pub struct BertEmbeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
    pad_token_id: i64,
}

impl BertEmbeddings {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        let std = c.initializer_range;
        let table = |name: &str, rows: i64| Params { path: &(p / name), ..params }.weight("weight", &[rows, h], std);
        let word_embeddings = table("word_embeddings", c.vocab_size);
        let pad = c.pad_token_id;
        if (0..c.vocab_size).contains(&pad) {
            // nn.Embedding(padding_idx) starts the padding row at zero.
            let _ = tch::no_grad(|| word_embeddings.get(pad).zero_());
        }
        BertEmbeddings {
            word_embeddings,
            position_embeddings: table("position_embeddings", c.max_position_embeddings),
            token_type_embeddings: table("token_type_embeddings", c.type_vocab_size),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), params, h, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
            pad_token_id: if (0..c.vocab_size).contains(&pad) { pad } else { -1 },
        }
    }

    /// `input_ids` `[batch, seq]` → `[batch, seq, hidden]` (fp32). Positions count from 0;
    /// `token_type_ids` (`[batch, seq]`, sentence pairs) select each token's type embedding,
    /// and without them every token is type 0, as transformers does when none are given.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let seq_len = input_ids.size()[1];
        // padding_idx as nn.Embedding: the [PAD] row receives no gradient.
        let words = Tensor::f_embedding(&self.word_embeddings, input_ids, self.pad_token_id, false, false)?;
        let positions = self.position_embeddings.f_narrow(0, 0, seq_len)?;
        let token_type = self.token_types(token_type_ids)?;
        let summed = words.f_add(&token_type)?.f_add(&positions)?;
        dropout(self.layer_norm.forward(&summed)?, self.dropout, train)
    }

    /// [`Self::forward_t`] for the real tokens only: `[tokens, hidden]`.
    pub fn forward_unpadded(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        tokens: &Unpadded,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let ids = input_ids.f_reshape([-1])?.f_index_select(0, &tokens.index)?;
        let words = Tensor::f_embedding(&self.word_embeddings, &ids, self.pad_token_id, false, false)?;
        let position_ids = tokens.index.f_remainder(tokens.seq)?;
        let positions = self.position_embeddings.f_index_select(0, &position_ids)?;
        let types = token_type_ids
            .map(|t| t.f_reshape([-1]).and_then(|flat| flat.f_index_select(0, &tokens.index)))
            .transpose()?;
        let token_type = self.token_types(types.as_ref())?;
        let summed = words.f_add(&token_type)?.f_add(&positions)?;
        dropout(self.layer_norm.forward(&summed)?, self.dropout, train)
    }

    /// The type embedding of each token in `token_type_ids` (shaped like them, plus
    /// `hidden`), or without them type 0's row, `[hidden]`, which broadcasts: single
    /// sentences skip the lookup.
    fn token_types(&self, token_type_ids: Option<&Tensor>) -> Result<Tensor, TchError> {
        match token_type_ids {
            None => self.token_type_embeddings.f_get(0),
            // No padding_idx, as transformers' token_type_embeddings: every row learns.
            Some(types) => Tensor::f_embedding(&self.token_type_embeddings, types, -1, false, false),
        }
    }
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
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
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

/// Projection after attention, dropout, residual and LayerNorm.
#[derive(Debug)]
pub struct BertSelfOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertSelfOutput {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        BertSelfOutput {
            dense: Linear::new(&(p / "dense"), params, h, h, c.initializer_range),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), params, h, c.layer_norm_eps),
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
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertAttention {
            self_attention: BertSelfAttention::new(&(p / "self"), params, c),
            output: BertSelfOutput::new(&(p / "output"), params, c),
        }
    }

    fn forward_t(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let attended = self.self_attention.forward_t(xs, mask, tokens, kind, train)?;
        self.output.forward_t(&attended, xs, kind, train)
    }
}

/// First feed-forward projection and activation.
#[derive(Debug)]
pub struct BertIntermediate {
    dense: Linear,
    activation: String,
}

impl BertIntermediate {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertIntermediate {
            dense: Linear::new(&(p / "dense"), params, c.hidden_size, c.intermediate_size, c.initializer_range),
            activation: c.hidden_act.clone(),
        }
    }

    fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        let xs = self.dense.forward(xs, kind)?;
        match self.activation.as_str() {
            "relu" => xs.f_relu(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => xs.f_gelu("tanh"),
            // "gelu" in transformers is the exact erf form.
            _ => xs.f_gelu("none"),
        }
    }
}

/// Second feed-forward projection, dropout, residual and LayerNorm.
#[derive(Debug)]
pub struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertOutput {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertOutput {
            dense: Linear::new(&(p / "dense"), params, c.intermediate_size, c.hidden_size, c.initializer_range),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), params, c.hidden_size, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
        }
    }

    fn forward_t(&self, xs: &Tensor, input: &Tensor, kind: Kind, train: bool) -> Result<Tensor, TchError> {
        let xs = dropout(self.dense.forward(xs, kind)?, self.dropout, train)?;
        self.layer_norm.forward(&xs.f_add(input)?)
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
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        BertLayer {
            attention: BertAttention::new(&(p / "attention"), params, c),
            intermediate: BertIntermediate::new(&(p / "intermediate"), params, c),
            output: BertOutput::new(&(p / "output"), params, c),
        }
    }

    fn forward_t(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let attended = self.attention.forward_t(xs, mask, tokens, kind, train)?;
        let hidden = self.intermediate.forward(&attended, kind)?;
        self.output.forward_t(&hidden, &attended, kind, train)
    }
}

/// The stack of encoder layers.
#[derive(Debug)]
pub struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig, frozen_layers: usize) -> Self {
        let layers = (0..c.num_hidden_layers as usize)
            .map(|i| {
                let params = Params { trainable: params.trainable && i >= frozen_layers, ..params };
                BertLayer::new(&(p / "layer" / i), params, c)
            })
            .collect();
        BertEncoder { layers }
    }

    fn forward_t(
        &self,
        xs: Tensor,
        mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        self.layers.iter().try_fold(xs, |xs, layer| layer.forward_t(&xs, mask, tokens, kind, train))
    }
}

/// Dense + tanh over the first ([CLS]) token.
#[derive(Debug)]
pub struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        BertPooler { dense: Linear::new(&(p / "dense"), params, h, h, c.initializer_range) }
    }

    /// `first`: the [CLS] token's hidden state of each example, `[batch, hidden]`.
    fn forward(&self, first: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        self.dense.forward(first, kind)?.f_tanh()
    }
}

/// Embeddings, encoder and pooler.
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pooler: BertPooler,
}

impl BertModel {
    fn new(p: &nn::Path<'_>, c: &BertConfig, freeze_layers: usize) -> Self {
        let trainable = Params { path: p, trainable: true };
        let embeddings_params = Params { trainable: freeze_layers == 0, ..trainable };
        BertModel {
            embeddings: BertEmbeddings::new(&(p / "embeddings"), embeddings_params, c),
            encoder: BertEncoder::new(&(p / "encoder"), trainable, c, freeze_layers),
            pooler: BertPooler::new(&(p / "pooler"), trainable, c),
        }
    }

    /// `input_ids` `[batch, seq]` → pooled output `[batch, hidden]`; `token_type_ids`
    /// (same shape) for sentence pairs, `None` for all type 0; `tokens`, when given, is
    /// `attention_mask`'s layout (found from the mask otherwise).
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let Some(attention_mask) = attention_mask else {
            let embedded = self.embeddings.forward_t(input_ids, token_type_ids, train)?;
            let hidden = self.encoder.forward_t(embedded, None, None, kind, train)?;
            return self.pooler.forward(&hidden.f_select(1, 0)?, kind);
        };
        // Padded batches run on their real tokens only (see `Unpadded`); the batches are
        // right-padded, so each example's [CLS] is its first real token.
        let mask = additive_mask(attention_mask, kind)?;
        let found;
        let tokens = match tokens {
            Some(tokens) => tokens,
            None => {
                found = Unpadded::from_mask(attention_mask)?;
                &found
            }
        };
        let embedded = self.embeddings.forward_unpadded(input_ids, token_type_ids, tokens, train)?;
        let hidden = self.encoder.forward_t(embedded, Some(&mask), Some(tokens), kind, train)?;
        self.pooler.forward(&hidden.f_index_select(0, &tokens.starts)?, kind)
    }
}

/// `[batch, seq]` of 1 (token) / 0 (padding) → `[batch, 1, 1, seq]` of 0 / dtype minimum,
/// added to attention scores (as transformers' extended attention mask).
pub fn additive_mask(attention_mask: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
    let min = match kind {
        Kind::BFloat16 => -3.389_531_389_251_535e38,
        Kind::Half => -65504.0,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    };
    let size = attention_mask.size();
    let padding = attention_mask.f_eq(0)?.f_view([size[0], 1, 1, size[1]])?;
    Tensor::f_zeros(padding.size(), (kind, attention_mask.device()))?.f_masked_fill(&padding, min)
}

/// BERT with dropout and a linear classifier over the pooled output.
#[derive(Debug)]
pub struct BertForSequenceClassification {
    bert: BertModel,
    classifier: Linear,
    dropout: f64,
    /// Number of classes (rows of `classifier.weight`).
    pub num_labels: i64,
    /// Kind matrix products run in: fp32 on CPU, bf16 on CUDA.
    pub compute_kind: Kind,
}

impl BertForSequenceClassification {
    /// Creates the model under `root` (normally `vs.root()`), initialised as transformers
    /// does (normal(0, initializer_range) weights, zero biases, unit LayerNorm). Embeddings
    /// and the first `freeze_layers` encoder layers are created untrainable.
    pub fn new(
        root: &nn::Path<'_>,
        config: &BertConfig,
        num_labels: i64,
        freeze_layers: usize,
        compute_kind: Kind,
    ) -> Self {
        let head = Params { path: root, trainable: true };
        BertForSequenceClassification {
            bert: BertModel::new(&(root / "bert"), config, freeze_layers),
            classifier: Linear::new(
                &(root / "classifier"),
                head,
                config.hidden_size,
                num_labels,
                config.initializer_range,
            ),
            dropout: config.classifier_dropout_prob(),
            num_labels,
            compute_kind,
        }
    }

    /// Logits `[batch, num_labels]` (fp32) for single sentences, `input_ids` `[batch, seq]`
    /// (int64); `attention_mask` (1 = token, 0 = padding) may be `None` when nothing is
    /// padded. `train` turns dropout on.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, TchError> {
        self.forward_unpadded_t(input_ids, None, attention_mask, None, train)
    }

    /// [`Self::forward_t`] with the token type ids of sentence pairs (`[batch, seq]`: 0 for
    /// `[CLS] a [SEP]` and padding, 1 for `b [SEP]`; `None` = all 0) and the padded batch's
    /// layout, when already known (`tokens`, from [`Unpadded::from_lengths`]), so no device
    /// synchronisation is needed to find it.
    pub fn forward_unpadded_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        tokens: Option<&Unpadded>,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let pooled =
            self.bert.forward_t(input_ids, token_type_ids, attention_mask, tokens, self.compute_kind, train)?;
        let pooled = dropout(pooled, self.dropout, train)?;
        self.classifier.forward(&pooled, self.compute_kind)?.f_to_kind(Kind::Float)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Weights;
    use crate::testing::{tiny_config, write_tiny_bert};

    fn tiny(freeze_layers: usize) -> (nn::VarStore, BertForSequenceClassification) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = BertForSequenceClassification::new(&vs.root(), &tiny_config(), 3, freeze_layers, Kind::Float);
        (vs, model)
    }

    fn ids(rows: &[&[i64]]) -> (Tensor, Tensor) {
        let longest = rows.iter().map(|r| r.len()).max().unwrap();
        let pad = |r: &[i64], fill: i64, value: Option<i64>| {
            let mut v: Vec<i64> = r.iter().map(|&x| value.unwrap_or(x)).collect();
            v.resize(longest, fill);
            v
        };
        let flat: Vec<i64> = rows.iter().flat_map(|r| pad(r, 0, None)).collect();
        let mask: Vec<i64> = rows.iter().flat_map(|r| pad(r, 0, Some(1))).collect();
        let shape = [rows.len() as i64, longest as i64];
        (Tensor::from_slice(&flat).view(shape), Tensor::from_slice(&mask).view(shape))
    }

    #[test]
    fn token_layout_from_lengths_is_the_masks() {
        let (_vs, model) = tiny(0);
        let rows: [&[i64]; 3] = [&[2, 5, 7], &[2, 9, 4, 4, 3], &[2]];
        let (input, mask) = ids(&rows);
        let from_mask = Unpadded::from_mask(&mask).unwrap();
        let from_lengths = Unpadded::from_lengths(&[3, 5, 1], 5, Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(&from_lengths.index).unwrap(), Vec::<i64>::try_from(&from_mask.index).unwrap());
        assert_eq!(Vec::<i64>::try_from(&from_lengths.starts).unwrap(), vec![0, 3, 8]);
        assert_eq!(Vec::<i64>::try_from(&from_mask.starts).unwrap(), vec![0, 3, 8]);
        let a = model.forward_t(&input, Some(&mask), false).unwrap();
        let b = model.forward_unpadded_t(&input, None, Some(&mask), Some(&from_lengths), false).unwrap();
        assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn token_types_reach_the_embeddings_on_both_paths() {
        let (_vs, model) = tiny(0);
        let (input, mask) = ids(&[&[2, 5, 3, 7, 9, 3], &[2, 9, 3, 4, 3]]);
        let types = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0]).view([2, 6]);
        let zeros = types.zeros_like();
        let single = model.forward_t(&input, Some(&mask), false).unwrap();
        let all_zero = model.forward_unpadded_t(&input, Some(&zeros), Some(&mask), None, false).unwrap();
        assert!(f64::try_from((&single - &all_zero).abs().max()).unwrap() < 1e-6);
        let paired = model.forward_unpadded_t(&input, Some(&types), Some(&mask), None, false).unwrap();
        assert!(f64::try_from((&single - &paired).abs().max()).unwrap() > 1e-6, "types change the logits");
        // Unpadded (the mask) and padded (no mask, the first example alone) agree.
        let first = input.narrow(0, 0, 1);
        let alone = model.forward_unpadded_t(&first, Some(&types.narrow(0, 0, 1)), None, None, false).unwrap();
        assert!(f64::try_from((paired.get(0) - alone.get(0)).abs().max()).unwrap() < 1e-5);
    }

    #[test]
    fn logits_are_batch_by_labels() {
        let (_vs, model) = tiny(0);
        let (input, mask) = ids(&[&[2, 5, 7, 3], &[2, 6, 3]]);
        let logits = model.forward_t(&input, Some(&mask), false).unwrap();
        assert_eq!(logits.size(), [2, 3]);
        assert_eq!(logits.kind(), Kind::Float);
        let train = model.forward_t(&input, Some(&mask), true).unwrap();
        assert_eq!(train.size(), [2, 3]);
    }

    #[test]
    fn padding_does_not_change_the_logits_of_a_shorter_example() {
        let (_vs, model) = tiny(0);
        let short: &[i64] = &[2, 5, 7, 9, 13, 24, 3];
        let long: &[i64] = &[2, 6, 8, 10, 12, 14, 19, 20, 21, 18, 24, 3];
        let (alone, _) = ids(&[short]);
        let alone = model.forward_t(&alone, None, false).unwrap();
        let (batch, mask) = ids(&[short, long]);
        let padded = model.forward_t(&batch, Some(&mask), false).unwrap();
        let diff = f64::try_from((padded.get(0) - alone.get(0)).abs().max()).unwrap();
        assert!(diff < 1e-5, "padding changed logits by {diff}");
        // Without the mask the padding would be attended to: the test has teeth.
        let unmasked = model.forward_t(&batch, None, false).unwrap();
        let diff = f64::try_from((unmasked.get(0) - alone.get(0)).abs().max()).unwrap();
        assert!(diff > 1e-5);
    }

    #[test]
    fn variables_are_named_like_checkpoint_keys() {
        let (vs, _model) = tiny(0);
        let names = vs.variables();
        for key in [
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.LayerNorm.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.attention.output.LayerNorm.bias",
            "bert.encoder.layer.1.intermediate.dense.weight",
            "bert.encoder.layer.1.output.dense.bias",
            "bert.pooler.dense.weight",
            "classifier.weight",
            "classifier.bias",
        ] {
            assert!(names.contains_key(key), "no variable {key}");
        }
        // 5 embedding tensors, 16 per layer, 2 pooler, 2 classifier.
        assert_eq!(names.len(), 5 + 2 * 16 + 2 + 2);
        assert_eq!(names["classifier.weight"].size(), [3, 32]);
        let bias = f64::try_from(names["classifier.bias"].abs().sum(Kind::Float)).unwrap();
        assert_eq!(bias, 0.0);
    }

    #[test]
    fn groups_follow_hf_no_decay_rules() {
        assert_eq!(param_group("bert.encoder.layer.0.attention.self.query.weight"), GROUP_DECAY);
        assert_eq!(param_group("bert.embeddings.word_embeddings.weight"), GROUP_DECAY);
        assert_eq!(param_group("bert.encoder.layer.0.attention.self.query.bias"), GROUP_NO_DECAY);
        assert_eq!(param_group("bert.encoder.layer.0.output.LayerNorm.weight"), GROUP_NO_DECAY);
        assert_eq!(param_group("bert.embeddings.LayerNorm.weight"), GROUP_NO_DECAY);
        assert_eq!(param_group("classifier.weight"), GROUP_HEAD_DECAY);
        assert_eq!(param_group("classifier.bias"), GROUP_HEAD_NO_DECAY);
    }

    #[test]
    fn frozen_layers_are_not_trainable() {
        let (vs, _) = tiny(0);
        let all = vs.trainable_variables().len();
        let (vs, _) = tiny(1);
        assert_eq!(vs.trainable_variables().len(), all - 5 - 16);
        for (name, tensor) in vs.variables() {
            let frozen = name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
            assert_eq!(tensor.requires_grad(), !frozen, "{name}");
        }
    }

    #[test]
    fn checkpoint_loads_one_to_one_and_reports_missing_and_misshaped_keys() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 7).unwrap();
        let weights = Weights::from_dir(dir.path()).unwrap();
        assert!(weights.tensors.contains_key("bert.encoder.layer.1.output.dense.weight"));
        assert!(!weights.tensors.keys().any(|k| k.contains("position_ids")));
        let (vs, _) = tiny(0);
        let report = weights.load_into(&vs).unwrap();
        assert_eq!(report.initialized, ["classifier.bias", "classifier.weight"]);
        assert!(report.unused.is_empty());
        let loaded = &vs.variables()["bert.encoder.layer.1.output.dense.weight"];
        assert!(loaded.equal(&weights.tensors["bert.encoder.layer.1.output.dense.weight"]));

        let mut broken = Weights { tensors: HashMap::new(), source: "m.safetensors".into() };
        for (k, v) in &weights.tensors {
            broken.tensors.insert(k.clone(), v.shallow_clone());
        }
        broken.tensors.remove("bert.encoder.layer.0.attention.self.key.bias");
        let err = broken.load_into(&vs).unwrap_err().to_string();
        assert!(
            err.contains("m.safetensors")
                && err.contains("missing tensor bert.encoder.layer.0.attention.self.key.bias"),
            "{err}"
        );
        broken.tensors.insert(
            "bert.encoder.layer.0.attention.self.key.bias".into(),
            Tensor::zeros([31], (Kind::Float, Device::Cpu)),
        );
        let err = broken.load_into(&vs).unwrap_err().to_string();
        assert!(err.contains("has shape [31]") && err.contains("[32]"), "{err}");
    }

    use std::collections::HashMap;
}
