//! Models: a backbone with pre-training heads (masked LM, next sentence) or a classification head.

pub mod backbone;
pub mod dropout;
pub mod device;
pub mod flops;
pub mod generator;
pub mod kernels;
pub mod heads;
pub mod loss;

use crate::data::batch::{PretrainBatch, TokenBatch};
use crate::config::{Config, HeadKind, ModelConfig, Objective, DEFAULT_GENERATOR_SIZE};
use crate::data::classify::Problem;
use crate::text::tokenizer::SpecialIds;
use backbone::Backbone;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::TensorData;
use generator::Generator;
use heads::{ClassificationHead, MlmHead, NspHead, RtdHead};

/// Backbone + one head a pre-training objective.
#[derive(Module, Debug)]
pub struct PretrainModel {
    /// The encoder being pre-trained.
    pub backbone: Backbone,
    /// Scores the masked positions (objective `mlm`).
    pub mlm: Option<MlmHead>,
    /// Tells true next sentences from random ones (objective `nsp`).
    pub nsp: Option<NspHead>,
    /// ELECTRA's generator (objective `electra`); not part of the fine-tuned model.
    pub generator: Option<Generator>,
    /// ELECTRA's replaced-token detection head on the backbone (objective `electra`).
    pub rtd: Option<RtdHead>,
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
        let loss = kernels::cross_entropy(logits.clone(), &targets);
        let count = targets.dims()[0];
        let correct = logits.argmax(1).reshape([-1]).equal(targets).int().sum();
        Self { loss, correct, count }
    }
}

/// Replaced-token detection on one batch.
#[derive(Debug, Clone)]
pub struct RtdOutput {
    /// Mean binary cross-entropy over the non-padding positions, `[1]` (before the weight).
    pub loss: Tensor<1>,
    /// Positions classified right, `[1]` (integer-valued).
    pub correct: Tensor<1, Int>,
    /// Non-padding positions.
    pub count: usize,
    /// Of them, replaced: the generator's sample differs from the original word piece.
    pub replaced: usize,
    /// λ, the loss's weight in the training loss.
    pub weight: f64,
}

impl RtdOutput {
    /// Mean loss, correct positions, positions and replaced positions, read back from the device.
    pub fn values(self) -> (f64, usize, usize, usize) {
        (self.loss.into_scalar::<f32>() as f64, self.correct.into_scalar::<i64>() as usize, self.count, self.replaced)
    }

    /// Logits and 0/1 `labels` `[b, l]`, scored where `pad_mask` `[b, l]` is false.
    fn of(logits: Tensor<2>, labels: Tensor<2>, pad_mask: &Tensor<2, Bool>, replaced: usize, weight: f64) -> Self {
        let keep = pad_mask.clone().bool_not();
        let count = keep.clone().int().sum().into_scalar::<i64>() as usize;
        let bce = (labels.clone() * log_sigmoid(logits.clone()) + labels.clone().neg().add_scalar(1.0) * log_sigmoid(logits.clone().neg())).neg();
        let loss = (bce * keep.clone().float()).sum().div_scalar(count.max(1) as f32);
        let correct = logits.greater_elem(0.0).equal(labels.greater_elem(0.5)).bool_and(keep).int().sum();
        Self { loss, correct, count, replaced, weight }
    }
}

/// What a pre-training batch yields: one output an objective trained.
#[derive(Debug, Clone)]
pub struct PretrainOutput {
    /// Masked-LM loss and accuracy (with `electra`: the generator's).
    pub mlm: Option<TaskOutput>,
    /// Next-sentence loss and accuracy.
    pub nsp: Option<TaskOutput>,
    /// Replaced-token detection (with `electra`).
    pub rtd: Option<RtdOutput>,
}

impl PretrainOutput {
    /// The training loss: the objectives' losses summed, replaced-token detection's weighted by λ.
    pub fn loss(&self) -> Tensor<1> {
        self.loss_scaled(1.0, 1.0)
    }

    /// [`Self::loss`] with the masked-LM loss times `mlm` and the detection loss times `rtd`
    /// (next-sentence prediction's, one term a pair, as it is).
    pub fn loss_scaled(&self, mlm: f64, rtd: f64) -> Tensor<1> {
        let rtd = self.rtd.iter().map(|r| r.loss.clone().mul_scalar((r.weight * rtd) as f32));
        let mlm = self.mlm.iter().map(|t| t.loss.clone().mul_scalar(mlm as f32));
        let mut parts = mlm.chain(self.nsp.iter().map(|t| t.loss.clone())).chain(rtd);
        let first = parts.next().expect("at least one objective");
        parts.fold(first, |a, b| a + b)
    }
}

impl PretrainModel {
    /// A random model for `config` with a head for each of `tasks` (an ELECTRA generator of the
    /// default width).
    pub fn init(config: &ModelConfig, tasks: &[Objective], device: &Device) -> Self {
        Self::build(config, tasks, DEFAULT_GENERATOR_SIZE, device)
    }

    /// A random model for the pre-training that `cfg` describes (its kept heads included).
    pub fn init_for(cfg: &Config, device: &Device) -> Self {
        let p = &cfg.pretrain;
        let heads: Vec<Objective> = [Objective::Mlm, Objective::Nsp, Objective::Electra].into_iter().filter(|&o| p.has_head(o)).collect();
        Self::build(&cfg.model, &heads, p.generator_size, device)
    }

    fn build(config: &ModelConfig, tasks: &[Objective], generator_size: f64, device: &Device) -> Self {
        let electra = tasks.contains(&Objective::Electra);
        Self {
            backbone: Backbone::init(config, device),
            mlm: tasks.contains(&Objective::Mlm).then(|| MlmHead::init(config.output_dim(), config, device)),
            nsp: tasks.contains(&Objective::Nsp).then(|| NspHead::init(config.output_dim(), device)),
            generator: electra.then(|| Generator::init(config, generator_size, device)),
            rtd: electra.then(|| RtdHead::init(config.output_dim(), config, device)),
        }
    }

    /// ELECTRA: the generator scores the masked positions of `batch` (its masked-LM loss and
    /// accuracy are `mlm`), a sample of its softmax drawn with `rng` replaces each of them, and
    /// the backbone scores every non-padding position of the result as original or replaced
    /// (`rtd`, weighted by `rtd_weight`); the next-sentence head, if any, reads that pass too.
    /// No gradient flows through the sampling.
    pub fn forward_electra<R: rand::Rng>(&self, batch: &PretrainBatch, specials: SpecialIds, rtd_weight: f64, rng: &mut R) -> PretrainOutput {
        let (generator, rtd) = match (&self.generator, &self.rtd) {
            (Some(g), Some(r)) => (g, r),
            _ => panic!("forward_electra needs a model pre-trained with electra"),
        };
        let tokens = &batch.tokens;
        let [b, l] = tokens.dims();
        let device = tokens.ids.device();
        let logits = generator.forward(self.backbone.embed(tokens), &tokens.pad_mask, batch.positions.clone(), self.backbone.token_embedding());
        let [n, vocab] = logits.dims();
        let ints = |t: &Tensor<1, Int>| -> Vec<i64> { t.clone().into_data().convert::<i64>().try_into_vec::<i64>().expect("integer ids") };
        let (positions, targets) = (ints(&batch.positions), ints(&batch.targets));
        let mut ids = ints(&tokens.ids.clone().reshape([b * l]));
        let samples = if n > 0 {
            // the softmax on the tensor (vectorised, rows in parallel), the draws on its rows
            let probs: Vec<f32> = kernels::softmax_last(logits.clone().detach()).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 probabilities");
            generator::sample(&probs, vocab, &[specials.pad, specials.cls, specials.sep, specials.mask], rng)
        } else {
            Vec::new()
        };
        let (labels, replaced) = generator::replace(&mut ids, &positions, &targets, &samples);
        let corrupted = TokenBatch { ids: Tensor::from_data(TensorData::new(ids, [b, l]), &device), pad_mask: tokens.pad_mask.clone(), segments: tokens.segments.clone() };
        let out = self.backbone.forward(&corrupted);
        let nsp = match (&self.nsp, &batch.is_next) {
            (Some(head), Some(targets)) => Some(TaskOutput::of(head.forward(out.pooled), targets.clone())),
            _ => None,
        };
        let labels = Tensor::from_data(TensorData::new(labels, [b, l]), &device);
        PretrainOutput {
            mlm: (n > 0).then(|| TaskOutput::of(logits, batch.targets.clone())),
            nsp,
            rtd: Some(RtdOutput::of(rtd.forward(out.states), labels, &tokens.pad_mask, replaced, rtd_weight)),
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
        PretrainOutput { mlm, nsp, rtd: None }
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

    /// A TextCNN classifier's convolutions folded into its embedding table for prediction
    /// ([`backbone::textcnn::FoldedConvs`]), where its head reads the pooled vector alone and
    /// the fold applies; `None` otherwise (prediction then runs [`Classifier::forward`]).
    pub fn folded(&self) -> Option<backbone::textcnn::FoldedConvs> {
        match &self.backbone {
            Backbone::TextCnn(cnn) if !self.head.reads_states() => backbone::textcnn::FoldedConvs::of(cnn),
            _ => None,
        }
    }

    /// Logits `[batch, labels]` for prediction: through `folded` (made by [`Classifier::folded`]
    /// from this model's weights) when given, else [`Classifier::forward`].
    pub fn predict(&self, tokens: &TokenBatch, folded: Option<&backbone::textcnn::FoldedConvs>) -> Tensor<2> {
        match folded.and_then(|f| f.pooled(tokens)) {
            Some(pooled) => self.head.forward_pooled(pooled),
            None => self.forward(tokens),
        }
    }

    /// Logits `[batch, labels]`.
    pub fn forward(&self, tokens: &TokenBatch) -> Tensor<2> {
        if !self.head.reads_states() {
            return self.head.forward_pooled(self.backbone.pooled(tokens));
        }
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

    /// Mean loss of logits `[batch, labels]` against target distributions `targets` (row-major,
    /// `batch × labels`, each cell in [0, 1]; a single-label row sums to 1): cross-entropy
    /// `−Σ t · log softmax` for single-label, `multi` cell by cell for multi-label. With one-hot
    /// rows it is [`Self::loss`].
    pub fn soft_loss(logits: Tensor<2>, targets: Vec<f32>, problem: Problem, multi: loss::LabelLoss) -> Tensor<1> {
        let [b, c] = logits.dims();
        let t = Tensor::<2>::from_data(TensorData::new(targets, [b, c]), &logits.device());
        match problem {
            Problem::SingleLabel => (t * burn::tensor::activation::log_softmax(logits, 1)).sum_dim(1).mean().neg(),
            Problem::MultiLabel => multi.forward_soft(logits, t),
        }
    }
}
