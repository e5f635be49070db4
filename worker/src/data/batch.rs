//! Batch order and dynamic padding.
//!
//! Each batch is padded to its own longest example (as transformers'
//! `DataCollatorWithPadding`), so short sentences cost short sequences.
//!
//! The default order is transformers Trainer's: a fresh random permutation every epoch, cut
//! into batches. `group_by_length` (opt-in) follows transformers' `LengthGroupedSampler`
//! exactly: the permutation is cut into mega-batches of `min(n / (4 × batch), 50)` batches
//! (at least one), each sorted by descending length (stable), and the longest example is
//! swapped to the very front so an out-of-memory shows at once; batches are then cut in
//! that order.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, TchError, Tensor};

use super::Split;
use crate::aten::upload;
use crate::bert::Unpadded;

/// Most batches per mega-batch when grouping by length (transformers' `mega_batch_mult` cap).
const MAX_MEGABATCH_MULT: usize = 50;

/// One padded batch on the training device.
#[derive(Debug)]
pub struct Batch {
    /// Token ids `[batch, longest]`, padded with the tokenizer's `[PAD]`.
    pub input_ids: Tensor,
    /// Sentence pairs: token type ids `[batch, longest]` (0 for `[CLS] a [SEP]` and padding,
    /// 1 for `b [SEP]`); `None` for single sentences, whose token types are all 0.
    pub token_type_ids: Option<Tensor>,
    /// 1 for tokens, 0 for padding, `[batch, longest]`; `None` when nothing is padded.
    pub attention_mask: Option<Tensor>,
    /// Where the real tokens are when something is padded, computed here on the host (the
    /// model would otherwise find them on the device, a synchronisation on a GPU).
    pub tokens: Option<Unpadded>,
    /// Class ids `[batch]`.
    pub labels: Tensor,
    /// Number of examples.
    pub size: usize,
}

impl Batch {
    /// Pads the examples `indices` of `split` and moves them to `device`.
    pub fn new(split: &Split, indices: &[usize], pad_id: i64, device: Device) -> Result<Self, TchError> {
        let ids = &split.encoded.ids;
        let lengths: Vec<usize> = indices.iter().map(|&i| ids[i].len()).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut flat = Vec::with_capacity(indices.len() * longest);
        let mut mask = Vec::with_capacity(indices.len() * longest);
        for &i in indices {
            let example = &ids[i];
            flat.extend_from_slice(example);
            flat.extend(std::iter::repeat_n(pad_id, longest - example.len()));
            mask.extend(std::iter::repeat_n(1i64, example.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - example.len()));
        }
        let shape = [indices.len() as i64, longest as i64];
        let padded = lengths.iter().any(|&len| len < longest);
        let (attention_mask, tokens) = if padded {
            (
                Some(upload(Tensor::f_from_slice(&mask)?.f_view(shape)?, device)?),
                Some(Unpadded::from_lengths(&lengths, longest, device)?),
            )
        } else {
            (None, None)
        };
        let token_type_ids = match &split.encoded.pair_starts {
            Some(starts) => {
                let mut types = Vec::with_capacity(flat.len());
                for (&i, &len) in indices.iter().zip(&lengths) {
                    types.extend(std::iter::repeat_n(0i64, starts[i]));
                    types.extend(std::iter::repeat_n(1i64, len - starts[i]));
                    types.extend(std::iter::repeat_n(0i64, longest - len));
                }
                Some(upload(Tensor::f_from_slice(&types)?.f_view(shape)?, device)?)
            }
            None => None,
        };
        let labels: Vec<i64> = indices.iter().map(|&i| split.label_ids[i]).collect();
        Ok(Batch {
            input_ids: upload(Tensor::f_from_slice(&flat)?.f_view(shape)?, device)?,
            token_type_ids,
            attention_mask,
            tokens,
            labels: upload(Tensor::f_from_slice(&labels)?, device)?,
            size: indices.len(),
        })
    }
}

/// Training batches of one epoch: indices shuffled with `seed`, then (optionally) grouped by
/// length as transformers' `LengthGroupedSampler` does (see the module docs).
pub fn batch_order(lengths: &[usize], batch_size: usize, seed: u64, group_by_length: bool) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    if group_by_length {
        group_like_transformers(&mut order, lengths, batch_size);
    }
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Mega-batches of a permutation sorted by descending length, the longest example first
/// (transformers' `get_length_grouped_indices` with its default `mega_batch_mult`).
pub fn group_like_transformers(order: &mut [usize], lengths: &[usize], batch_size: usize) {
    let mult = (order.len() / (batch_size.max(1) * 4)).clamp(1, MAX_MEGABATCH_MULT);
    let mega_size = mult * batch_size.max(1);
    for mega in order.chunks_mut(mega_size) {
        // Stable, like Python's sorted(reverse=True): ties keep their random order.
        mega.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    }
    // The first mega-batch whose head is the longest (torch.argmax takes the first maximum).
    let heads = (0..order.len()).step_by(mega_size);
    let longest = heads.fold(0, |best, at| if lengths[order[at]] > lengths[order[best]] { at } else { best });
    order.swap(0, longest);
}

/// Evaluation batches: sorted by length so padding is minimal (order does not matter).
pub fn eval_batch_order(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::EncodedFile;
    use std::sync::Arc;

    fn padding(lengths: &[usize], batches: &[Vec<usize>]) -> usize {
        batches
            .iter()
            .map(|b| {
                let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
                b.iter().map(|&i| longest - lengths[i]).sum::<usize>()
            })
            .sum()
    }

    fn covers_all(batches: &[Vec<usize>], n: usize) -> bool {
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        all == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn shuffle_is_seeded_and_complete() {
        let lengths: Vec<usize> = (0..103).map(|i| 3 + (i * 37) % 60).collect();
        let a = batch_order(&lengths, 8, 1, false);
        assert_eq!(a, batch_order(&lengths, 8, 1, false));
        assert_ne!(a, batch_order(&lengths, 8, 2, false));
        assert!(covers_all(&a, 103));
        assert_eq!(a.len(), 13);
        assert_eq!(a.last().unwrap().len(), 7);
    }

    #[test]
    fn grouping_follows_transformers_rule() {
        // 1,000 examples at batch 32: mega-batches of min(1000 / 128, 50) = 7 batches (224).
        let lengths: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919) % 61).collect();
        let mut order: Vec<usize> = (0..1000).rev().collect();
        group_like_transformers(&mut order, &lengths, 32);
        let longest = *lengths.iter().max().unwrap();
        assert_eq!(lengths[order[0]], longest);
        for (m, mega) in order.chunks(224).enumerate() {
            let tail = if m == 0 { &mega[1..] } else { mega };
            assert!(tail.windows(2).all(|w| lengths[w[0]] >= lengths[w[1]]), "mega-batch {m} is sorted");
        }
        // A tiny set is one mega-batch of one batch; the longest goes first.
        let mut tiny = vec![0, 1, 2];
        group_like_transformers(&mut tiny, &[1, 5, 3], 8);
        assert_eq!(tiny, [1, 2, 0]);
        // Hand-checked against get_length_grouped_indices on the permutation [0, 1, 2, 3, 4, 5]
        // with lengths [2, 9, 4, 4, 1, 7] and batch 1 (mega-batches of one: nothing sorts;
        // the longest, index 1, swaps with the head).
        let mut six = vec![0, 1, 2, 3, 4, 5];
        group_like_transformers(&mut six, &[2, 9, 4, 4, 1, 7], 1);
        assert_eq!(six, [1, 0, 2, 3, 4, 5]);
    }

    #[test]
    fn length_grouping_cuts_padding_and_puts_longest_first() {
        let lengths: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919) % 61).collect();
        let plain = batch_order(&lengths, 16, 0, false);
        let grouped = batch_order(&lengths, 16, 0, true);
        assert!(covers_all(&grouped, 1000));
        assert!(padding(&lengths, &grouped) * 5 < padding(&lengths, &plain));
        let longest = *lengths.iter().max().unwrap();
        assert!(grouped[0].iter().any(|&i| lengths[i] == longest));
    }

    #[test]
    fn batch_pads_dynamically_and_masks() {
        let encoded = Arc::new(EncodedFile {
            path: "x".into(),
            ids: vec![vec![2, 5, 3], vec![2, 5, 6, 7, 3], vec![2, 3]],
            pair_starts: None,
            labels: vec!["0".into(); 3],
            lines: vec![2, 3, 4],
        });
        let split = Split { encoded, label_ids: vec![1, 0, 1] };
        let batch = Batch::new(&split, &[0, 2], 0, Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.size(), [2, 3]);
        assert_eq!(Vec::<i64>::try_from(batch.input_ids.view(-1)).unwrap(), [2, 5, 3, 2, 3, 0]);
        let mask = batch.attention_mask.unwrap();
        assert_eq!(Vec::<i64>::try_from(mask.view(-1)).unwrap(), [1, 1, 1, 1, 1, 0]);
        assert_eq!(Vec::<i64>::try_from(&batch.labels).unwrap(), [1, 1]);
        assert!(batch.token_type_ids.is_none());
        let full = Batch::new(&split, &[0], 0, Device::Cpu).unwrap();
        assert!(full.attention_mask.is_none());
        let eval = eval_batch_order(&split.lengths(), 2);
        assert_eq!(eval, vec![vec![1, 0], vec![2]]);
    }

    #[test]
    fn pair_batches_carry_token_types_padded_with_zero() {
        let encoded = Arc::new(EncodedFile {
            path: "x".into(),
            ids: vec![vec![2, 5, 3, 6, 3], vec![2, 5, 6, 3, 7, 8, 9, 3]],
            pair_starts: Some(vec![3, 4]),
            labels: vec!["0".into(); 2],
            lines: vec![2, 3],
        });
        let split = Split { encoded, label_ids: vec![0, 1] };
        let batch = Batch::new(&split, &[0, 1], 0, Device::Cpu).unwrap();
        let types = Vec::<i64>::try_from(batch.token_type_ids.unwrap().view(-1)).unwrap();
        assert_eq!(types, [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
    }
}
