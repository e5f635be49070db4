//! The building blocks every BERT sub-module is made of: parameter creation under checkpoint
//! names and optimizer groups ([`Params`]), `nn.Linear` in the compute kind, `nn.LayerNorm`
//! in fp32, and dropout.

use tch::{nn, Kind, TchError, Tensor};

use super::param_group;

/// Creates the parameters of one sub-module under its path, trainable or frozen
/// (`freeze_layers`), each in the optimizer group its name implies.
#[derive(Clone, Copy)]
pub(super) struct Params<'p, 'a> {
    /// Where the sub-module's parameters go (their checkpoint names).
    pub(super) path: &'p nn::Path<'a>,
    /// Whether they are trained (false under `freeze_layers`).
    pub(super) trainable: bool,
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
    pub(super) fn weight(&self, name: &str, dims: &[i64], std: f64) -> Tensor {
        self.tensor(name, dims, Init::Normal(std))
    }

    /// A bias or LayerNorm parameter, filled with a constant.
    pub(super) fn filled(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        self.tensor(name, dims, init)
    }
}

/// How a parameter starts.
#[derive(Clone, Copy)]
pub(super) enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// `nn.Linear`: `weight` is `[out, in]`, run in the model's compute kind.
#[derive(Debug)]
pub(super) struct Linear {
    /// `[out, in]`.
    pub(super) weight: Tensor,
    /// `[out]`.
    pub(super) bias: Tensor,
}

impl Linear {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, in_dim: i64, out_dim: i64, std: f64) -> Self {
        let params = Params { path: p, ..params };
        Linear {
            weight: params.weight("weight", &[out_dim, in_dim], std),
            bias: params.filled("bias", &[out_dim], Init::Zeros),
        }
    }

    /// `xs · weightᵀ + bias`, in `kind`.
    pub(super) fn forward(&self, xs: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        if kind == Kind::Float {
            return xs.f_linear(&self.weight, Some(&self.bias));
        }
        xs.f_to_kind(kind)?.f_linear(&self.weight.f_to_kind(kind)?, Some(&self.bias.f_to_kind(kind)?))
    }
}

/// `nn.LayerNorm`, always computed in fp32.
#[derive(Debug)]
pub(super) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Creates its parameters under `p`, the sub-module's checkpoint path.
    pub(super) fn new(p: &nn::Path<'_>, params: Params<'_, '_>, dim: i64, eps: f64) -> Self {
        let params = Params { path: p, ..params };
        LayerNorm {
            weight: params.filled("weight", &[dim], Init::Ones),
            bias: params.filled("bias", &[dim], Init::Zeros),
            eps,
        }
    }

    /// Normalises `xs` over its last dimension, in fp32.
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let dim = self.weight.size();
        xs.f_to_kind(Kind::Float)?.f_layer_norm(&dim, Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// Dropout with probability `p` while training; the identity otherwise.
pub(super) fn dropout(xs: Tensor, p: f64, train: bool) -> Result<Tensor, TchError> {
    if train && p > 0.0 {
        xs.f_dropout(p, true)
    } else {
        Ok(xs)
    }
}
