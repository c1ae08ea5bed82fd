//! Models: a backbone with pre-training heads (masked LM, next sentence) or a classification head.

pub mod backbone;
pub mod dropout;
pub mod device;
pub mod kernels;
pub mod heads;
pub mod loss;

use crate::data::batch::{PretrainBatch, TokenBatch};
use crate::config::{HeadKind, ModelConfig, Objective};
use crate::data::classify::Problem;
use backbone::Backbone;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use heads::{ClassificationHead, MlmHead, NspHead};

/// Backbone + one head a pre-training objective.
#[derive(Module, Debug)]
pub struct PretrainModel {
    /// The encoder being pre-trained.
    pub backbone: Backbone,
    /// Scores the masked positions (objective `mlm`).
    pub mlm: Option<MlmHead>,
    /// Tells true next sentences from random ones (objective `nsp`).
    pub nsp: Option<NspHead>,
}

/// Loss and accuracy of one objective on one batch.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    /// Mean cross-entropy, `[1]`.
    pub loss: Tensor<1>,
    /// Correct predictions, `[1]` (integer-valued).
    pub correct: Tensor<1, Int>,
    /// Number of predictions (masked positions, or pairs).
    pub count: usize,
}

impl TaskOutput {
    /// Mean loss, correct predictions and their count, read back from the device.
    pub fn values(self) -> (f64, usize, usize) {
        (self.loss.into_scalar::<f32>() as f64, self.correct.into_scalar::<i64>() as usize, self.count)
    }

    fn of(logits: Tensor<2>, targets: Tensor<1, Int>) -> Self {
        let loss = CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.clone(), targets.clone());
        let count = targets.dims()[0];
        let correct = logits.argmax(1).reshape([-1]).equal(targets).int().sum();
        Self { loss, correct, count }
    }
}

/// What a pre-training batch yields: one output an objective trained.
#[derive(Debug, Clone)]
pub struct PretrainOutput {
    /// Masked-LM loss and accuracy.
    pub mlm: Option<TaskOutput>,
    /// Next-sentence loss and accuracy.
    pub nsp: Option<TaskOutput>,
}

impl PretrainOutput {
    /// The training loss: the objectives' losses summed.
    pub fn loss(&self) -> Tensor<1> {
        let mut parts = self.mlm.iter().chain(&self.nsp).map(|t| t.loss.clone());
        let first = parts.next().expect("at least one objective");
        parts.fold(first, |a, b| a + b)
    }
}

impl PretrainModel {
    /// A random model for `config` with a head for each of `tasks`.
    pub fn init(config: &ModelConfig, tasks: &[Objective], device: &Device) -> Self {
        Self {
            backbone: Backbone::init(config, device),
            mlm: tasks.contains(&Objective::Mlm).then(|| MlmHead::init(config.output_dim(), config, device)),
            nsp: tasks.contains(&Objective::Nsp).then(|| NspHead::init(config.output_dim(), device)),
        }
    }

    /// Encodes the batch and scores each objective. The masked-LM head sees only the chosen
    /// positions (gathered before the vocabulary projection, so the cost is `n × vocab`, not
    /// `batch × seq × vocab`); the next-sentence head sees the pooled vector.
    pub fn forward(&self, batch: &PretrainBatch) -> PretrainOutput {
        let out = self.backbone.forward(&batch.tokens);
        let nsp = match (&self.nsp, &batch.is_next) {
            (Some(head), Some(targets)) => Some(TaskOutput::of(head.forward(out.pooled), targets.clone())),
            _ => None,
        };
        let mlm = self.mlm.as_ref().filter(|_| batch.targets.dims()[0] > 0).map(|head| {
            let [b, l, d] = out.states.dims();
            let selected = out.states.reshape([b * l, d]).select(0, batch.positions.clone());
            TaskOutput::of(head.forward(selected, self.backbone.token_embedding()), batch.targets.clone())
        });
        PretrainOutput { mlm, nsp }
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
    /// A random model for `config` with `num_labels` outputs and the pooled head.
    pub fn init(config: &ModelConfig, num_labels: usize, device: &Device) -> Self {
        Self::init_with_head(config, HeadKind::Pooled, num_labels, device)
    }

    /// A random model for `config` with `num_labels` outputs and a head of `kind`.
    pub fn init_with_head(config: &ModelConfig, kind: HeadKind, num_labels: usize, device: &Device) -> Self {
        Self { backbone: Backbone::init(config, device), head: ClassificationHead::init(config.output_dim(), num_labels, config.dropout, kind, device) }
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
        self.head.forward(self.backbone.forward(tokens), &tokens.pad_mask)
    }

    /// Probabilities `[batch, labels]`: softmax for single-label, sigmoid for multi-label.
    pub fn probabilities(logits: Tensor<2>, problem: Problem) -> Tensor<2> {
        match problem {
            Problem::SingleLabel => burn::tensor::activation::softmax(logits, 1),
            Problem::MultiLabel => burn::tensor::activation::sigmoid(logits),
        }
    }

    /// Mean loss of logits against gold label lists: cross-entropy on the first label for
    /// single-label, `multi` (binary cross-entropy or the asymmetric loss) on the multi-hot
    /// vector for multi-label.
    pub fn loss(logits: Tensor<2>, gold: &[Vec<usize>], problem: Problem, multi: loss::LabelLoss) -> Tensor<1> {
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
                multi.forward(logits, targets)
            }
        }
    }
}
