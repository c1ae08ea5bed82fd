//! Heads on top of any backbone: the masked-LM head (tied to the token embedding), the
//! next-sentence head and the classification head.

use burn::module::Param;
use crate::model::dropout::Dropout;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use crate::model::fused::{gelu, LayerNorm};
use burn::tensor::activation::tanh;

/// Dense + GELU + LayerNorm, then the transposed token embedding plus a bias: scores over the vocabulary.
#[derive(Module, Debug)]
pub struct MlmHead {
    /// The transform before the projection.
    pub transform: Linear,
    /// Normalises the transformed state.
    pub norm: LayerNorm,
    /// Output bias, one a vocabulary entry.
    pub bias: Param<Tensor<1>>,
}

impl MlmHead {
    /// A head from states of width `d_in` to the embedding width `d_model`, then `vocab_size` outputs.
    pub fn init(d_in: usize, d_model: usize, vocab_size: usize, device: &Device) -> Self {
        Self {
            transform: LinearConfig::new(d_in, d_model).init(device),
            norm: LayerNorm::new(d_model, 1e-12, device),
            bias: Param::from_tensor(Tensor::zeros([vocab_size], device)),
        }
    }

    /// Selected states `[n, d]` and embedding `[vocab, d]` → logits `[n, vocab]`.
    pub fn forward(&self, states: Tensor<2>, embedding: Tensor<2>) -> Tensor<2> {
        let h = self.norm.forward(gelu(self.transform.forward(states)));
        let v = self.bias.dims()[0];
        h.matmul(embedding.transpose()) + self.bias.val().reshape([1, v])
    }
}

/// Next-sentence prediction: dense + tanh (BERT's pooler) on the pooled vector, then two
/// logits (0: B is random, 1: B follows A).
#[derive(Module, Debug)]
pub struct NspHead {
    /// Pooler transform.
    pub dense: Linear,
    /// The two logits.
    pub output: Linear,
}

impl NspHead {
    /// A head from pooled vectors of width `d_in`.
    pub fn init(d_in: usize, device: &Device) -> Self {
        Self { dense: LinearConfig::new(d_in, d_in).init(device), output: LinearConfig::new(d_in, 2).init(device) }
    }

    /// Pooled `[batch, d]` → logits `[batch, 2]`.
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.output.forward(tanh(self.dense.forward(pooled)))
    }
}

/// Dropout, dense + tanh (BERT's pooler), dropout, linear: one logit a label.
#[derive(Module, Debug)]
pub struct ClassificationHead {
    /// Pooler transform.
    pub dense: Linear,
    /// Dropout before each linear layer.
    pub dropout: Dropout,
    /// Output layer.
    pub output: Linear,
}

impl ClassificationHead {
    /// A head from width `d_model` to `num_labels` logits.
    pub fn init(d_model: usize, num_labels: usize, dropout: f64, device: &Device) -> Self {
        Self {
            dense: LinearConfig::new(d_model, d_model).init(device),
            dropout: Dropout::new(dropout),
            output: LinearConfig::new(d_model, num_labels).init(device),
        }
    }

    /// Pooled `[batch, d]` → logits `[batch, labels]`.
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        let h = tanh(self.dense.forward(self.dropout.forward(pooled)));
        self.output.forward(self.dropout.forward(h))
    }
}
