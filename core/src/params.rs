//! Hyperparameter values and the set of parameters bertsweep knows how to search.

use bertsweep_proto::contract::params as P;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One hyperparameter value. Integers and floats stay distinct so a worker receives
/// `num_train_epochs = 3`, never `3.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// Integer parameters (epochs, batch size, seed, frozen layers).
    Int(i64),
    /// Real-valued parameters (learning rate, ratios, multipliers).
    Float(f64),
    /// Categorical strings (reserved for future parameters; none of the known ones is a string).
    Str(String),
}

impl ParamValue {
    /// The value as a float, for samplers that model numbers (TPE) and for sorting.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            ParamValue::Str(_) => None,
        }
    }

    /// Equality that treats floats by bit pattern, so sets of configurations can be compared.
    pub fn key(&self) -> String {
        match self {
            ParamValue::Int(v) => format!("i{v}"),
            ParamValue::Float(v) => format!("f{:x}", v.to_bits()),
            ParamValue::Str(s) => format!("s{s}"),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            // `{}` on f64 prints the shortest representation that round-trips (3e-5 → 0.00003).
            ParamValue::Float(v) => {
                if *v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
                    write!(f, "{v:e}")
                } else {
                    write!(f, "{v}")
                }
            }
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// A trial's parameters, ordered by name so output and hashing are stable.
pub type Params = BTreeMap<String, ParamValue>;

/// Whether a known parameter takes integers or reals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Whole numbers (epochs, batch size, seed, frozen layers).
    Int,
    /// Reals (learning rate, ratios, multipliers).
    Float,
}

/// A parameter the worker understands, with the range of values that make sense for it.
#[derive(Debug, Clone, Copy)]
pub struct KnownParam {
    /// Hugging Face TrainingArguments-style name used in study files and by the worker.
    pub name: &'static str,
    /// Integers or reals: decides how study values are read and how samplers draw.
    pub kind: ParamKind,
    /// Smallest allowed value (inclusive unless `min_exclusive`).
    pub min: f64,
    /// `true` when the value must be strictly greater than `min` (a learning rate of 0 trains nothing).
    pub min_exclusive: bool,
    /// Largest allowed value (inclusive).
    pub max: f64,
}

/// Every parameter a study may search; anything else is rejected at `study create`.
pub const KNOWN_PARAMS: &[KnownParam] = &[
    KnownParam { name: P::LEARNING_RATE, kind: ParamKind::Float, min: 0.0, min_exclusive: true, max: 1.0 },
    KnownParam { name: P::NUM_TRAIN_EPOCHS, kind: ParamKind::Int, min: 1.0, min_exclusive: false, max: 1000.0 },
    KnownParam { name: P::BATCH_SIZE, kind: ParamKind::Int, min: 1.0, min_exclusive: false, max: 65536.0 },
    KnownParam { name: P::WARMUP_RATIO, kind: ParamKind::Float, min: 0.0, min_exclusive: false, max: 1.0 },
    KnownParam { name: P::WEIGHT_DECAY, kind: ParamKind::Float, min: 0.0, min_exclusive: false, max: 10.0 },
    KnownParam { name: P::SEED, kind: ParamKind::Int, min: 0.0, min_exclusive: false, max: 4294967295.0 },
    KnownParam { name: P::HEAD_LR_MULTIPLIER, kind: ParamKind::Float, min: 0.0, min_exclusive: true, max: 10000.0 },
    KnownParam { name: P::FREEZE_LAYERS, kind: ParamKind::Int, min: 0.0, min_exclusive: false, max: 1000.0 },
];

/// Looks a parameter up by name.
pub fn known_param(name: &str) -> Option<&'static KnownParam> {
    KNOWN_PARAMS.iter().find(|p| p.name == name)
}

/// Comma-separated list of known names, for error messages.
pub fn known_param_names() -> String {
    KNOWN_PARAMS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// Renders params as `name=value` pairs for logs and tables.
pub fn format_params(params: &Params) -> String {
    params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Parameters the registry sets per trial of a configuration (seed repeats, cross-validation
/// folds) rather than the search: a configuration is everything else.
pub const PER_TRIAL_PARAMS: &[&str] = &[P::SEED, P::FOLD];

/// A stable identity of a configuration (all params except [`PER_TRIAL_PARAMS`]), used to spot
/// duplicates and to group seed repeats and folds.
pub fn config_key(params: &Params) -> String {
    params
        .iter()
        .filter(|(k, _)| !PER_TRIAL_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.key()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_readably() {
        assert_eq!(ParamValue::Float(3e-5).to_string(), "3e-5");
        assert_eq!(ParamValue::Float(0.1).to_string(), "0.1");
        assert_eq!(ParamValue::Int(32).to_string(), "32");
    }

    #[test]
    fn json_round_trip_keeps_ints_and_floats_apart() {
        let mut p = Params::new();
        p.insert("learning_rate".into(), ParamValue::Float(2e-5));
        p.insert("num_train_epochs".into(), ParamValue::Int(3));
        let text = serde_json::to_string(&p).unwrap();
        let back: Params = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }
}
