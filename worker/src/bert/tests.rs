//! Tests of the model: shapes, padding, token types, variable names and groups, freezing,
//! loading pre-trained weights.

use std::collections::HashMap;

use tch::{nn, Device, Kind, Tensor};

use super::*;
use crate::pretrained::Weights;
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
        err.contains("m.safetensors") && err.contains("missing tensor bert.encoder.layer.0.attention.self.key.bias"),
        "{err}"
    );
    broken
        .tensors
        .insert("bert.encoder.layer.0.attention.self.key.bias".into(), Tensor::zeros([31], (Kind::Float, Device::Cpu)));
    let err = broken.load_into(&vs).unwrap_err().to_string();
    assert!(err.contains("has shape [31]") && err.contains("[32]"), "{err}");
}
