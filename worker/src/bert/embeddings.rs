//! `bert.embeddings`: word, position and token-type embeddings, summed, normalised and
//! dropped out, on the padded or the unpadded path.

use tch::{nn, TchError, Tensor};

use super::layers::{dropout, LayerNorm, Params};
use super::unpadded::Unpadded;
use crate::config::BertConfig;

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
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, c: &BertConfig) -> Self {
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
