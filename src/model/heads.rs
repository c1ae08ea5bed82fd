//! Heads on top of any backbone: the masked-LM head (tied to the token embedding), the
//! next-sentence head and the classification head.

use burn::module::Param;
use crate::model::dropout::Dropout;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use crate::model::kernels::{activate, linear, linear_transposed, LayerNorm};
use burn::tensor::activation::{softmax, tanh};
use crate::config::{Activation, HeadKind, ModelConfig};
use crate::model::backbone::BackboneOutput;

/// Dense + GELU + LayerNorm, then the transposed token embedding plus a bias: scores over the vocabulary.
#[derive(Module, Debug)]
pub struct MlmHead {
    /// The transform before the projection.
    pub transform: Linear,
    /// Normalises the transformed state.
    pub norm: LayerNorm,
    /// Output bias, one a vocabulary entry.
    pub bias: Param<Tensor<1>>,
    /// The transform's activation, the backbone's (configuration).
    #[module(skip)]
    pub activation: Activation,
}

impl MlmHead {
    /// A head from states of width `d_in` to the embedding width `d_model`, then `vocab_size`
    /// outputs; activation and LayerNorm epsilon as the Transformer's.
    pub fn init(d_in: usize, config: &ModelConfig, device: &Device) -> Self {
        Self {
            transform: LinearConfig::new(d_in, config.d_model).init(device),
            norm: LayerNorm::new(config.d_model, config.transformer.layer_norm_eps, device),
            bias: Param::from_tensor(Tensor::zeros([config.vocab_size], device)),
            activation: config.transformer.activation,
        }
    }

    /// Selected states `[n, d]` and embedding `[vocab, d]` → logits `[n, vocab]`.
    pub fn forward(&self, states: Tensor<2>, embedding: Tensor<2>) -> Tensor<2> {
        let h = self.norm.forward(activate(linear(&self.transform, states), self.activation));
        linear_transposed(h, embedding, self.bias.val())
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

/// ELECTRA's discriminator head: dense + the backbone's activation, then one logit a position
/// (positive: the word piece was replaced).
#[derive(Module, Debug)]
pub struct RtdHead {
    /// Transform of each state.
    pub dense: Linear,
    /// One logit a position.
    pub output: Linear,
    /// The transform's activation (configuration).
    #[module(skip)]
    pub activation: Activation,
}

impl RtdHead {
    /// A head on states of width `d_in`.
    pub fn init(d_in: usize, config: &ModelConfig, device: &Device) -> Self {
        Self { dense: LinearConfig::new(d_in, d_in).init(device), output: LinearConfig::new(d_in, 1).init(device), activation: config.transformer.activation }
    }

    /// States `[batch, seq, d]` → logits `[batch, seq]`.
    pub fn forward(&self, states: Tensor<3>) -> Tensor<2> {
        let [b, l, _] = states.dims();
        self.output.forward(activate(linear(&self.dense, states), self.activation)).reshape([b, l])
    }
}

/// Label-wise attention (as in CAML, Mullenbach et al., 2018): label `j` weighs the positions
/// by `softmax_t(q_j · h_t)`, pools the states with those weights into `c_j` and scores
/// `w_j · c_j`. One pooled vector serves all labels of the pooled head; here each label looks
/// for its own evidence, wherever it sits in the text.
#[derive(Module, Debug)]
pub struct LabelAttention {
    /// One attention query a label, `[labels, d]`.
    pub query: Param<Tensor<2>>,
    /// One scoring vector a label, `[labels, d]`; zeros at the start.
    pub weight: Param<Tensor<2>>,
}

impl LabelAttention {
    /// Random queries and zero scoring vectors: the term adds nothing until training moves it.
    pub fn init(d: usize, num_labels: usize, device: &Device) -> Self {
        let query = burn::nn::Initializer::Normal { mean: 0.0, std: 0.02 }.init([num_labels, d], device);
        Self { query, weight: Param::from_tensor(Tensor::zeros([num_labels, d], device)) }
    }

    /// States `[batch, seq, d]` and padding mask `[batch, seq]` → one logit a label `[batch, labels]`.
    pub fn forward(&self, states: Tensor<3>, pad_mask: &Tensor<2, Bool>) -> Tensor<2> {
        let [b, t, d] = states.dims();
        let labels = self.query.dims()[0];
        let query = self.query.val().reshape([1, labels, d]).expand([b, labels, d]);
        let scores = query.matmul(states.clone().swap_dims(1, 2));
        // padding gets no attention (a large negative score, not -inf, keeps softmax finite)
        let scores = scores.mask_fill(pad_mask.clone().reshape([b, 1, t]).expand([b, labels, t]), -1.0e4);
        let context = softmax(scores, 2).matmul(states);
        (context * self.weight.val().reshape([1, labels, d])).sum_dim(2).reshape([b, labels])
    }
}

/// Dropout, dense + tanh (BERT's pooler), dropout, linear: one logit a label; optionally plus
/// a label-wise attention term over the per-position states.
#[derive(Module, Debug)]
pub struct ClassificationHead {
    /// Pooler transform.
    pub dense: Linear,
    /// Dropout before each linear layer.
    pub dropout: Dropout,
    /// Output layer.
    pub output: Linear,
    /// Label-wise attention over the states (`finetune.head = "label-attention"`).
    pub attention: Option<LabelAttention>,
}

impl ClassificationHead {
    /// A head from width `d_model` to `num_labels` logits.
    pub fn init(d_model: usize, num_labels: usize, dropout: f64, kind: HeadKind, device: &Device) -> Self {
        Self {
            dense: LinearConfig::new(d_model, d_model).init(device),
            dropout: Dropout::new(dropout),
            output: LinearConfig::new(d_model, num_labels).init(device),
            attention: (kind == HeadKind::LabelAttention).then(|| LabelAttention::init(d_model, num_labels, device)),
        }
    }

    /// Backbone output (pooled `[batch, d]`, states `[batch, seq, d]`) → logits `[batch, labels]`.
    pub fn forward(&self, out: BackboneOutput, pad_mask: &Tensor<2, Bool>) -> Tensor<2> {
        let logits = self.forward_pooled(out.pooled);
        match &self.attention {
            Some(attention) => logits + attention.forward(self.dropout.forward(out.states), pad_mask),
            None => logits,
        }
    }

    /// Pooled `[batch, d]` → logits `[batch, labels]` of the pooled part alone: the whole head
    /// when it has no label attention ([`ClassificationHead::reads_states`] is false).
    pub fn forward_pooled(&self, pooled: Tensor<2>) -> Tensor<2> {
        let h = tanh(self.dense.forward(self.dropout.forward(pooled)));
        self.output.forward(self.dropout.forward(h))
    }

    /// Whether the head reads every position's state (label attention), not just the pooled vector.
    pub fn reads_states(&self) -> bool {
        self.attention.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn t2(v: Vec<f32>, shape: [usize; 2], d: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, shape), d)
    }

    #[test]
    fn label_attention_pools_each_label_by_its_own_weights_and_ignores_padding() {
        let d = Device::flex();
        // one text of 3 positions, the last one padding; 2 labels
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false, false, true], [1, 3]), &d);
        let head = LabelAttention {
            query: Param::from_tensor(t2(vec![2.0, 0.0, 0.0, 0.0], [2, 2], &d)),
            weight: Param::from_tensor(t2(vec![1.0, 0.0, 1.0, 1.0], [2, 2], &d)),
        };
        let logits = |pad_state: [f32; 2]| -> Vec<f32> {
            let states = Tensor::<3>::from_data(TensorData::new(vec![1.0, 0.0, 0.0, 1.0, pad_state[0], pad_state[1]], [1, 3, 2]), &d);
            head.forward(states, &mask).into_data().try_into_vec().unwrap()
        };
        // label 0: scores 2 and 0 → weights e²/(e²+1), 1/(e²+1); pooled (0.881, 0.119); w·c = 0.881
        // label 1: scores 0 and 0 → weights ½, ½; pooled (½, ½); w·c = 1
        let e2 = 2f32.exp();
        let want = [e2 / (e2 + 1.0), 1.0];
        let got = logits([5.0, 5.0]);
        assert!((got[0] - want[0]).abs() < 1e-5 && (got[1] - want[1]).abs() < 1e-5, "{got:?} vs {want:?}");
        assert_eq!(logits([100.0, -100.0]), got, "the padding state takes no part");
    }

    #[test]
    fn a_fresh_attention_term_leaves_the_pooled_head_unchanged() {
        let d = Device::flex();
        d.seed(4);
        let with = ClassificationHead::init(6, 3, 0.0, HeadKind::LabelAttention, &d);
        let mut without = with.clone();
        without.attention = None;
        let states = Tensor::<3>::random([2, 5, 6], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let pooled = states.clone().max_dim(1).reshape([2, 6]);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 10], [2, 5]), &d);
        let out = || BackboneOutput { states: states.clone(), pooled: pooled.clone() };
        let a: Vec<f32> = with.forward(out(), &mask).into_data().try_into_vec().unwrap();
        let b: Vec<f32> = without.forward(out(), &mask).into_data().try_into_vec().unwrap();
        assert_eq!(a, b);
    }
}
