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

/// Creates the parameters of one sub-module: its name prefix, whether they are trained
/// (`freeze_layers`), and which optimizer groups they belong to.
#[derive(Clone, Copy)]
struct Params<'p, 'a> {
    path: &'p nn::Path<'a>,
    trainable: bool,
    head: bool,
}

impl<'p, 'a> Params<'p, 'a> {
    fn tensor(&self, name: &str, dims: &[i64], init: Init, group: usize) -> Tensor {
        let opts = (Kind::Float, self.path.device());
        let value = match init {
            Init::Normal(std) => Tensor::randn(dims, opts) * std,
            Init::Zeros => Tensor::zeros(dims, opts),
            Init::Ones => Tensor::ones(dims, opts),
        };
        self.path.set_group(group).add(name, value, self.trainable)
    }

    /// A weight matrix, decayed.
    fn weight(&self, name: &str, dims: &[i64], std: f64) -> Tensor {
        let group = if self.head { GROUP_HEAD_DECAY } else { GROUP_DECAY };
        self.tensor(name, dims, Init::Normal(std), group)
    }

    /// A bias or LayerNorm parameter, never decayed.
    fn no_decay(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        let group = if self.head { GROUP_HEAD_NO_DECAY } else { GROUP_NO_DECAY };
        self.tensor(name, dims, init, group)
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
    fn new(p: &nn::Path, params: Params, in_dim: i64, out_dim: i64, std: f64) -> Self {
        let params = Params { path: p, ..params };
        Linear {
            weight: params.weight("weight", &[out_dim, in_dim], std),
            bias: params.no_decay("bias", &[out_dim], Init::Zeros),
        }
    }

    fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        if kind == Kind::Float {
            return xs.f_linear(&self.weight, Some(&self.bias));
        }
        xs.f_to_kind(kind)?
            .f_linear(&self.weight.f_to_kind(kind)?, Some(&self.bias.f_to_kind(kind)?))
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
    fn new(p: &nn::Path, params: Params, dim: i64, eps: f64) -> Self {
        let params = Params { path: p, ..params };
        LayerNorm {
            weight: params.no_decay("weight", &[dim], Init::Ones),
            bias: params.no_decay("bias", &[dim], Init::Zeros),
            eps,
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let dim = self.weight.size();
        xs.f_to_kind(Kind::Float)?
            .f_layer_norm(&dim, Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

fn dropout(xs: Tensor, p: f64, train: bool) -> Result<Tensor, TchError> {
    if train && p > 0.0 {
        xs.f_dropout(p, true)
    } else {
        Ok(xs)
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        let std = c.initializer_range;
        let params = Params { path: p, ..params };
        let word_embeddings = params.weight("word_embeddings.weight", &[c.vocab_size, h], std);
        let pad = c.pad_token_id;
        if (0..c.vocab_size).contains(&pad) {
            // nn.Embedding(padding_idx) starts the padding row at zero.
            tch::no_grad(|| word_embeddings.get(pad).zero_());
        }
        BertEmbeddings {
            word_embeddings,
            position_embeddings: params.weight(
                "position_embeddings.weight",
                &[c.max_position_embeddings, h],
                std,
            ),
            token_type_embeddings: params.weight("token_type_embeddings.weight", &[c.type_vocab_size, h], std),
            layer_norm: LayerNorm::new(&(p / "LayerNorm"), params, h, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
            pad_token_id: if (0..c.vocab_size).contains(&pad) { pad } else { -1 },
        }
    }

    /// `input_ids` `[batch, seq]` → `[batch, seq, hidden]` (fp32). Token types are all 0 and
    /// positions count from 0, as transformers does when none are given.
    pub fn forward_t(&self, input_ids: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let seq_len = input_ids.size()[1];
        // padding_idx as nn.Embedding: the [PAD] row receives no gradient.
        let words = Tensor::f_embedding(&self.word_embeddings, input_ids, self.pad_token_id, false, false)?;
        let positions = self.position_embeddings.f_narrow(0, 0, seq_len)?;
        let token_type = self.token_type_embeddings.f_get(0)?;
        let summed = words.f_add(&token_type)?.f_add(&positions)?;
        dropout(self.layer_norm.forward(&summed)?, self.dropout, train)
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
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
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let size = xs.size();
        let (batch, seq) = (size[0], size[1]);
        let heads = |t: Tensor| t.f_view([batch, seq, self.num_heads, self.head_dim])?.f_transpose(1, 2);
        let q = heads(self.query.forward(xs, kind)?)?;
        let k = heads(self.key.forward(xs, kind)?)?;
        let v = heads(self.value.forward(xs, kind)?)?;
        let p = if train { self.dropout } else { 0.0 };
        let context = Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, p, false, None, false)?;
        context.f_transpose(1, 2)?.f_reshape([batch, seq, self.num_heads * self.head_dim])
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
        BertAttention {
            self_attention: BertSelfAttention::new(&(p / "self"), params, c),
            output: BertSelfOutput::new(&(p / "output"), params, c),
        }
    }

    fn forward_t(&self, xs: &Tensor, mask: Option<&Tensor>, kind: Kind, train: bool) -> Result<Tensor, TchError> {
        let attended = self.self_attention.forward_t(xs, mask, kind, train)?;
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
        BertLayer {
            attention: BertAttention::new(&(p / "attention"), params, c),
            intermediate: BertIntermediate::new(&(p / "intermediate"), params, c),
            output: BertOutput::new(&(p / "output"), params, c),
        }
    }

    fn forward_t(&self, xs: &Tensor, mask: Option<&Tensor>, kind: Kind, train: bool) -> Result<Tensor, TchError> {
        let attended = self.attention.forward_t(xs, mask, kind, train)?;
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
    fn new(p: &nn::Path, params: Params, c: &BertConfig, frozen_layers: usize) -> Self {
        let layers = (0..c.num_hidden_layers as usize)
            .map(|i| {
                let params = Params { trainable: params.trainable && i >= frozen_layers, ..params };
                BertLayer::new(&(p / "layer" / i), params, c)
            })
            .collect();
        BertEncoder { layers }
    }

    fn forward_t(&self, xs: Tensor, mask: Option<&Tensor>, kind: Kind, train: bool) -> Result<Tensor, TchError> {
        self.layers.iter().try_fold(xs, |xs, layer| layer.forward_t(&xs, mask, kind, train))
    }
}

/// Dense + tanh over the first ([CLS]) token.
#[derive(Debug)]
pub struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    fn new(p: &nn::Path, params: Params, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        BertPooler { dense: Linear::new(&(p / "dense"), params, h, h, c.initializer_range) }
    }

    fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        let first = xs.f_select(1, 0)?;
        self.dense.forward(&first, kind)?.f_tanh()
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
    fn new(p: &nn::Path, c: &BertConfig, freeze_layers: usize) -> Self {
        let trainable = Params { path: p, trainable: true, head: false };
        let embeddings_params = Params { trainable: freeze_layers == 0, ..trainable };
        BertModel {
            embeddings: BertEmbeddings::new(&(p / "embeddings"), embeddings_params, c),
            encoder: BertEncoder::new(&(p / "encoder"), trainable, c, freeze_layers),
            pooler: BertPooler::new(&(p / "pooler"), trainable, c),
        }
    }

    /// `input_ids` `[batch, seq]` → pooled output `[batch, hidden]`.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        kind: Kind,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let mask = attention_mask.map(|m| additive_mask(m, kind)).transpose()?;
        let embedded = self.embeddings.forward_t(input_ids, train)?;
        let hidden = self.encoder.forward_t(embedded, mask.as_ref(), kind, train)?;
        self.pooler.forward(&hidden, kind)
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
        root: &nn::Path,
        config: &BertConfig,
        num_labels: i64,
        freeze_layers: usize,
        compute_kind: Kind,
    ) -> Self {
        let head = Params { path: root, trainable: true, head: true };
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

    /// Logits `[batch, num_labels]` (fp32) for `input_ids` `[batch, seq]` (int64);
    /// `attention_mask` (1 = token, 0 = padding) may be `None` when nothing is padded.
    /// `train` turns dropout on.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, TchError> {
        let pooled = self.bert.forward_t(input_ids, attention_mask, self.compute_kind, train)?;
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
