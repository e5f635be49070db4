//! The whole model: [`BertModel`] (embeddings → encoder → pooler over the first token) and
//! [`BertForSequenceClassification`], dropout and a linear classifier over the pooled output.

use tch::{nn, Kind, TchError, Tensor};

use super::embeddings::BertEmbeddings;
use super::encoder::{BertEncoder, Pass};
use super::layers::{dropout, Linear, Params};
use super::unpadded::Unpadded;
use crate::config::BertConfig;

/// Dense + tanh over the first ([CLS]) token.
#[derive(Debug)]
pub struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        BertPooler { dense: Linear::new(&(p / "dense"), params, h, h, c.initializer_range) }
    }

    /// `first`: the [CLS] token's hidden state of each example, `[batch, hidden]`.
    pub(super) fn forward(&self, first: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
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
            let hidden = self.encoder.forward_t(embedded, Pass { mask: None, tokens: None, kind, train })?;
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
        let hidden = self.encoder.forward_t(embedded, Pass { mask: Some(&mask), tokens: Some(tokens), kind, train })?;
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
