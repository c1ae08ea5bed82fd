//! Models: a backbone with the masked-LM head (pre-training) or a classification head.

pub mod backbone;
pub mod dropout;
pub mod fused;
pub mod heads;

use crate::batch::{MlmBatch, TokenBatch};
use crate::config::ModelConfig;
use crate::tasks::classify::Problem;
use backbone::Backbone;
use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig};
use burn::prelude::*;
use heads::{ClassificationHead, MlmHead};

/// Backbone + masked-LM head.
#[derive(Module, Debug)]
pub struct PretrainModel {
    /// The encoder being pre-trained.
    pub backbone: Backbone,
    /// Scores the masked positions.
    pub mlm: MlmHead,
}

/// Loss and accuracy of one masked-LM batch.
#[derive(Debug, Clone)]
pub struct MlmOutput {
    /// Mean cross-entropy over the chosen positions, `[1]`.
    pub loss: Tensor<1>,
    /// Correctly predicted chosen positions, `[1]` (integer-valued).
    pub correct: Tensor<1, Int>,
    /// Number of chosen positions.
    pub count: usize,
}

impl PretrainModel {
    /// A random model for `config`.
    pub fn init(config: &ModelConfig, device: &Device) -> Self {
        Self { backbone: Backbone::init(config, device), mlm: MlmHead::init(config.output_dim(), config.d_model, config.vocab_size, device) }
    }

    /// Encodes the batch and scores only the chosen positions (gathered before the vocabulary
    /// projection, so the cost is `n × vocab`, not `batch × seq × vocab`).
    pub fn forward(&self, batch: &MlmBatch) -> MlmOutput {
        let out = self.backbone.forward(&batch.tokens);
        let [b, l, d] = out.states.dims();
        let selected = out.states.reshape([b * l, d]).select(0, batch.positions.clone());
        let logits = self.mlm.forward(selected, self.backbone.token_embedding());
        let loss = CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.clone(), batch.targets.clone());
        let correct = logits.argmax(1).reshape([-1]).equal(batch.targets.clone()).int().sum();
        MlmOutput { loss, correct, count: batch.targets.dims()[0] }
    }
}

/// Backbone + classification head.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The encoder (pre-trained or random).
    pub backbone: Backbone,
    /// Maps the pooled vector to label logits.
    pub head: ClassificationHead,
}

impl Classifier {
    /// A random model for `config` with `num_labels` outputs.
    pub fn init(config: &ModelConfig, num_labels: usize, device: &Device) -> Self {
        Self { backbone: Backbone::init(config, device), head: ClassificationHead::init(config.output_dim(), num_labels, config.dropout, device) }
    }

    /// Sets the output bias to the labels' log-odds (multi-label) or log-frequencies
    /// (single-label), so the untrained model already predicts the label prior and the first
    /// steps go to telling examples apart rather than to learning how rare each label is.
    pub fn with_prior_bias(mut self, frequencies: &[f64], problem: Problem) -> Self {
        let eps = 1e-4;
        let bias: Vec<f32> = frequencies
            .iter()
            .map(|&f| {
                let f = f.clamp(eps, 1.0 - eps);
                (match problem {
                    Problem::MultiLabel => (f / (1.0 - f)).ln(),
                    Problem::SingleLabel => f.ln(),
                }) as f32
            })
            .collect();
        let device = self.head.output.weight.val().device();
        let n = bias.len();
        self.head.output.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(burn::tensor::TensorData::new(bias, [n]), &device)));
        self
    }

    /// Logits `[batch, labels]`.
    pub fn forward(&self, tokens: &TokenBatch) -> Tensor<2> {
        self.head.forward(self.backbone.forward(tokens).pooled)
    }

    /// Probabilities `[batch, labels]`: softmax for single-label, sigmoid for multi-label.
    pub fn probabilities(logits: Tensor<2>, problem: Problem) -> Tensor<2> {
        match problem {
            Problem::SingleLabel => burn::tensor::activation::softmax(logits, 1),
            Problem::MultiLabel => burn::tensor::activation::sigmoid(logits),
        }
    }

    /// Mean loss of logits against gold label lists: cross-entropy on the first label for
    /// single-label, binary cross-entropy on the multi-hot vector for multi-label.
    pub fn loss(logits: Tensor<2>, gold: &[Vec<usize>], problem: Problem) -> Tensor<1> {
        let device = logits.device();
        let [b, c] = logits.dims();
        match problem {
            Problem::SingleLabel => {
                let t: Vec<i64> = gold.iter().map(|g| g.first().map(|&x| x as i64).unwrap_or(0)).collect();
                let targets = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(t, [b]), &device);
                CrossEntropyLossConfig::new().init(&device).forward(logits, targets)
            }
            Problem::MultiLabel => {
                let mut t = vec![0i64; b * c];
                for (i, g) in gold.iter().enumerate() {
                    for &j in g {
                        t[i * c + j] = 1;
                    }
                }
                let targets = Tensor::<2, Int>::from_data(burn::tensor::TensorData::new(t, [b, c]), &device);
                BinaryCrossEntropyLossConfig::new().with_logits(true).init(&device).forward(logits, targets)
            }
        }
    }
}
