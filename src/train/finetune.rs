//! Fine-tuning a classifier, from a pre-trained backbone or from scratch.

use super::driver::{diverged, drive, Logged, Run, Task};
use super::metrics_log::{MetricsRow, Window};
use super::ema::Ema;
use super::optim::{adamw, Schedule};
use crate::store::checkpoints::{self, Checkpoints, Position};
use crate::store::fingerprint::Fnv;
use super::{derived_seed, devices, log_epoch, say, streams, RunOptions};
use crate::data::batch::{bucketed_batches, TokenBatch};
use crate::store::weights::{load_mapped, load_prefix};
use crate::store::model_dir::{keep_epoch, ModelDir, ModelKind, ModelMeta};
use crate::config::{Config, Objective};
use crate::infer::classifier::{probabilities, score, Evaluation};
use crate::model::Classifier;
use crate::data::classify::{encode_examples, EncodedExample, LabelSet, Problem};
use crate::text::labelled::Example;
use crate::text::tokenizer::WordPieceTokenizer;
use crate::eval::thresholds::Thresholds;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Labels with fewer training examples than this get a warning: too rare to learn.
pub const RARE_LABEL: usize = 5;

/// Scores after one fine-tuning epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
    #[serde(deserialize_with = "crate::store::checkpoints::f64_or_nan")]
    pub valid_loss: f64,
    /// Validation micro-F1.
    pub micro_f1: f64,
    /// Validation macro-F1.
    pub macro_f1: f64,
    /// Validation micro precision.
    pub precision: f64,
    /// Validation micro recall.
    pub recall: f64,
    /// Seconds since the start of training.
    pub seconds: f64,
    /// With a weight average (`finetune.ema`), the validation micro-F1 of the last step's
    /// weights, beside the average's above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_micro_f1: Option<f64>,
}

/// What a fine-tuning run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// Validation loss of the model before any step (the "loss at start").
    #[serde(deserialize_with = "crate::store::checkpoints::f64_or_nan")]
    pub initial_valid_loss: f64,
    /// Per-epoch scores.
    pub epochs: Vec<FinetuneEpoch>,
    /// Epoch whose model was kept (best validation micro-F1).
    pub best_epoch: usize,
    /// Names of the tensors loaded from the pre-trained model (empty from scratch).
    pub loaded_tensors: Vec<String>,
}

/// Where the starting weights come from.
pub enum Init<'a> {
    /// Random weights.
    Scratch,
    /// Backbone (embeddings included) from a pre-trained model directory.
    Pretrained(&'a ModelDir),
    /// Random weights, except the token embeddings of the words that have a pre-trained vector.
    WordVectors(&'a crate::text::word_vectors::WordVectors),
}

/// A trained classifier's probabilities for the training examples: fine-tuned towards them, the
/// new model learns what the teacher makes of every label of every text, not only its gold labels
/// (knowledge distillation, Hinton et al. 2015) — a way to put an ensemble into one model.
pub struct Teacher {
    /// The teacher's label names: the columns of `probabilities`.
    pub labels: Vec<String>,
    /// One row a training example, in the order of the training examples.
    pub probabilities: Vec<Vec<f32>>,
}

impl Teacher {
    /// For each of the student's `labels`, its column among the teacher's (`None`: a label the
    /// teacher does not know), matched by name.
    pub fn columns(&self, labels: &LabelSet) -> Vec<Option<usize>> {
        (0..labels.len()).map(|j| self.labels.iter().position(|n| n == labels.name(j))).collect()
    }

    /// Training targets, one row of `labels.len()` a training example: `weight · p + (1 − weight)
    /// · gold`, with `p` the teacher's probability of the label. For multi-label problems a label
    /// the teacher does not know keeps its gold target; for single-label ones the teacher's
    /// probabilities over the labels both know are scaled to sum to 1 (a label it does not know
    /// has 0), so every row stays a distribution.
    pub fn targets(&self, gold: &[EncodedExample], labels: &LabelSet, problem: Problem, weight: f64) -> Result<Vec<Vec<f32>>> {
        if self.probabilities.len() != gold.len() {
            bail!("teacher: {} rows of probabilities for {} training examples", self.probabilities.len(), gold.len());
        }
        let known = self.columns(labels);
        let w = weight as f32;
        Ok(self
            .probabilities
            .iter()
            .zip(gold)
            .map(|(p, e)| {
                let mut t = vec![0.0f32; labels.len()];
                // single-label training reads the first label alone, as `Classifier::loss` does
                let gold = if problem == Problem::SingleLabel { &e.labels[..e.labels.len().min(1)] } else { &e.labels[..] };
                for &g in gold {
                    t[g] = 1.0;
                }
                let scale = match problem {
                    Problem::SingleLabel => {
                        let mass: f32 = known.iter().flatten().map(|&k| p[k]).sum();
                        if mass > 0.0 { 1.0 / mass } else { 0.0 }
                    }
                    Problem::MultiLabel => 1.0,
                };
                for (j, k) in known.iter().enumerate() {
                    match (problem, *k) {
                        (Problem::MultiLabel, Some(k)) => t[j] = w * p[k] + (1.0 - w) * t[j],
                        // a multi-label teacher has no opinion of a label it does not know
                        (Problem::MultiLabel, None) => {}
                        // a single-label teacher with no mass on these labels leaves the gold
                        (Problem::SingleLabel, _) if scale == 0.0 => {}
                        (Problem::SingleLabel, k) => t[j] = w * k.map_or(0.0, |k| p[k] * scale) + (1.0 - w) * t[j],
                    }
                }
                t
            })
            .collect())
    }
}

/// Fine-tunes on `train`, selects by validation micro-F1, writes the best model into `out` (when
/// given); with a `teacher`, towards its probabilities (mixed with the gold labels by
/// `finetune.teacher_weight`) instead of the gold labels alone.
#[allow(clippy::too_many_arguments)]
pub fn finetune(cfg: &Config, init: Init, tokenizer: &WordPieceTokenizer, train: &[Example], valid: &[Example], problem: Problem, teacher: Option<Teacher>, out: Option<&Path>, opts: &RunOptions) -> Result<FinetuneReport> {
    let (device, plain) = devices();
    let f = &cfg.finetune;
    device.seed(f.optim.seed);
    let _precision = super::precision(&f.optim, "finetune", opts);
    let labels = LabelSet::from_examples(train);
    let enc_train = encode_examples(train, tokenizer, &labels, cfg.model.max_len);
    let enc_valid = encode_examples(valid, tokenizer, &labels, cfg.model.max_len);
    let valid_seqs: Vec<Vec<u32>> = enc_valid.iter().map(|e| e.input_ids.clone()).collect();
    let valid_gold: Vec<Vec<usize>> = enc_valid.iter().map(|e| e.labels.clone()).collect();
    say(opts, &format!("finetune: {} train / {} valid examples, {} labels, {:?}", train.len(), valid.len(), labels.len(), problem));

    let mut frequencies = vec![0.0; labels.len()];
    for e in &enc_train {
        for &l in &e.labels {
            frequencies[l] += 1.0 / enc_train.len() as f64;
        }
    }
    let rare: Vec<&str> = (0..labels.len()).filter(|&l| frequencies[l] * (enc_train.len() as f64) < RARE_LABEL as f64 - 0.5).map(|l| labels.name(l)).collect();
    if !rare.is_empty() {
        let shown: Vec<&str> = rare.iter().take(8).copied().collect();
        eprintln!(
            "warning: {} of {} labels have fewer than {RARE_LABEL} training examples and will rarely be predicted: {}{}",
            rare.len(), labels.len(), shown.join(", "), if rare.len() > shown.len() { ", …" } else { "" }
        );
    }
    // the teacher's probabilities are dropped once they are targets
    let soft = match teacher {
        Some(t) => {
            let shared = t.columns(&labels).iter().flatten().count();
            say(opts, &format!("finetune: distilling a teacher that knows {shared} of the {} labels (teacher weight {})", labels.len(), f.teacher_weight));
            Some(t.targets(&enc_train, &labels, problem, f.teacher_weight)?)
        }
        None => None,
    };
    let mut model = Classifier::init_with_head(&cfg.model, f.head, labels.len(), &device).with_prior_bias(&frequencies, problem);
    let mut optim = adamw(f.optim.weight_decay, f.optim.grad_clip);
    let hash = data_hash(&enc_train, &enc_valid, &labels, soft.as_deref());
    let mut at = Position { step: 0, epoch: 1, batch: 0, seconds: 0.0, state: LoopState::default() };
    let evaluate = |m: &Classifier| -> Evaluation {
        let m = m.valid();
        let probs = probabilities(&m, m.folded().as_ref(), &valid_seqs, tokenizer.specials(), problem, 64, &plain);
        score(&probs, valid, &valid_gold, &labels, problem, &Thresholds::Global(f.threshold))
    };
    let mut ema = None;
    match out {
        Some(out) if opts.resume => {
            let ckpt = if f.ema > 0.0 {
                // the average is saved beside the weights, as the second half of a pair
                let template = model.valid();
                let (r, ckpt) = checkpoints::restore_latest(out, cfg, &hash, (model, template), optim)?;
                let ((m, average), o, position) = (r.model, r.optim, r.position);
                (model, optim, at) = (m, o, position);
                ema = Some(Ema::new(&model, f.ema, at.step as u64).with_average(average));
                ckpt
            } else {
                let (r, ckpt) = checkpoints::restore_latest(out, cfg, &hash, model, optim)?;
                (model, optim, at) = (r.model, r.optim, r.position);
                ckpt
            };
            say(opts, &format!("finetune: resumed from {} (step {}, epoch {})", ckpt.display(), at.step, at.epoch));
        }
        _ => {
            match init {
                Init::Pretrained(dir) => {
                    let (m, mut names) = load_prefix(model, &dir.weights(), dir.meta.weights_bytes, "backbone.")?;
                    model = m;
                    if dir.config.pretrain.has_head(Objective::Nsp) {
                        // BERT's pooler: the next-sentence head's dense + tanh is the same
                        // layer as the classification head's first one
                        let (m, pooler) = load_mapped(model, &dir.weights(), dir.meta.weights_bytes, "nsp.dense.", "head.dense.")?;
                        model = m;
                        names.extend(pooler.into_iter().map(|n| format!("{n} (from nsp.dense)")));
                    }
                    say(opts, &format!("finetune: loaded {} pre-trained tensors from {}", names.len(), dir.path.display()));
                    if let Some(warning) = weak_pretraining(dir) {
                        say(opts, &warning);
                    }
                    at.state.loaded_tensors = names;
                }
                Init::WordVectors(v) => {
                    model.backbone = model.backbone.with_token_rows(&v.rows);
                    say(opts, &format!(
                        "finetune: word vectors: {} of {} vocabulary words found ({} words, dimension {}); the other embeddings stay random",
                        v.rows.len(), v.candidates, v.file_words, v.dim
                    ));
                    at.state.loaded_tensors = vec![format!("backbone token embedding: {} rows from word vectors", v.rows.len())];
                }
                Init::Scratch => {}
            }
            at.state.initial_valid_loss = evaluate(&model).loss;
            if f.ema > 0.0 {
                ema = Some(Ema::new(&model, f.ema, 0));
            }
        }
    }

    let steps_per_epoch = enc_train.len().div_ceil(f.optim.batch_size);
    let total = steps_per_epoch * f.optim.epochs.max(1);
    let schedule = Schedule::new(f.optim.lr, f.optim.warmup_ratio, total);
    let lengths: Vec<usize> = enc_train.iter().map(|e| e.input_ids.len()).collect();
    let mut task = FinetuneTask { cfg, tokenizer, out, opts, problem, labels: &labels, train: &enc_train, soft: soft.as_deref(), lengths, steps_per_epoch, ema, evaluate, device: device.clone() };
    let run = Run { cfg, tokenizer, out, opts, hash: &hash, seed: f.optim.seed, schedule: &schedule };
    let (_, at) = drive(&mut task, model, optim, at, &run, &device)?;
    let s = at.state;
    Ok(FinetuneReport { initial_valid_loss: s.initial_valid_loss, epochs: s.epochs, best_epoch: s.best_epoch, loaded_tensors: s.loaded_tensors })
}

/// Fine-tuning as a [`Task`] of the driver.
struct FinetuneTask<'a, E: Fn(&Classifier) -> Evaluation> {
    cfg: &'a Config,
    tokenizer: &'a WordPieceTokenizer,
    out: Option<&'a Path>,
    opts: &'a RunOptions,
    problem: Problem,
    labels: &'a LabelSet,
    train: &'a [EncodedExample],
    /// With a teacher: each training example's target row (see [`Teacher::targets`]).
    soft: Option<&'a [Vec<f32>]>,
    lengths: Vec<usize>,
    steps_per_epoch: usize,
    /// The moving average of the weights, with `finetune.ema`.
    ema: Option<Ema<Classifier>>,
    /// Scores a model on the validation examples at the configured threshold.
    evaluate: E,
    device: Device,
}

impl<'a, E: Fn(&Classifier) -> Evaluation> Task<'a> for FinetuneTask<'a, E> {
    type Model = Classifier;
    type Batch = Vec<usize>;
    type State = LoopState;

    fn epochs(&self) -> usize {
        self.cfg.finetune.optim.epochs.max(1)
    }

    fn epochs_shown(&self) -> usize {
        self.cfg.finetune.optim.epochs
    }

    fn batches(&self, epoch: usize, _at: &Position<LoopState>) -> Result<(Box<dyn Iterator<Item = Result<Vec<usize>>> + 'a>, usize)> {
        let f = &self.cfg.finetune;
        let batches = bucketed_batches(&self.lengths, f.optim.batch_size, &mut StdRng::seed_from_u64(derived_seed(f.optim.seed, streams::ORDER, epoch as u64)));
        let n = batches.len();
        Ok((Box::new(batches.into_iter().map(Ok)), n))
    }

    fn step(&mut self, model: Classifier, optim: &mut ModuleOptimizer, idx: Vec<usize>, step: usize, lr: f64, s: &mut LoopState) -> Result<Classifier> {
        let f = &self.cfg.finetune;
        let seqs: Vec<&[u32]> = idx.iter().map(|&k| self.train[k].input_ids.as_slice()).collect();
        let logits = model.forward(&TokenBatch::new(&seqs, self.tokenizer.specials(), &self.device));
        let multi = crate::model::loss::LabelLoss::of(f);
        let loss = match self.soft {
            Some(soft) => Classifier::soft_loss(logits, idx.iter().flat_map(|&k| soft[k].iter().copied()).collect(), self.problem, multi),
            None => {
                let gold: Vec<Vec<usize>> = idx.iter().map(|&k| self.train[k].labels.clone()).collect();
                Classifier::loss(logits, &gold, self.problem, multi)
            }
        };
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(diverged("fine-tuning", step, value, "finetune.lr"));
        }
        let model = descend(optim, model, loss, lr, f.backbone_lr_scale);
        if let Some(e) = &mut self.ema {
            e.update(&model);
        }
        s.loss_sum += value as f64;
        s.window.add(value as f64, 0, 0, seqs.iter().map(|q| q.len()).sum(), seqs.len());
        Ok(model)
    }

    fn message(&self, s: &LoopState, batches_done: usize) -> String {
        format!("loss {:.4}", s.loss_sum / batches_done.max(1) as f64)
    }

    fn end_epoch(&mut self, model: &Classifier, at: &mut Position<LoopState>, lr: f64, seconds: f64) -> Result<bool> {
        let (f, epoch) = (&self.cfg.finetune, at.epoch);
        let scored = self.ema.as_ref().map_or(model, |e| e.model());
        let ev = (self.evaluate)(scored);
        let last_step_micro_f1 = self.ema.as_ref().map(|_| (self.evaluate)(model).scores.micro_f1);
        let sc = &ev.scores;
        let s = &mut at.state;
        let e = FinetuneEpoch {
            epoch,
            train_loss: s.loss_sum / self.steps_per_epoch.max(1) as f64,
            valid_loss: ev.loss,
            micro_f1: sc.micro_f1,
            macro_f1: sc.macro_f1,
            precision: sc.micro_precision,
            recall: sc.micro_recall,
            seconds,
            last_step_micro_f1,
        };
        let improved = e.micro_f1 > s.best;
        let raw = e.last_step_micro_f1.map_or(String::new(), |m| format!(" (last step's weights {m:.4})"));
        let human = format!(
            "epoch {epoch}: train loss {:.4} | valid loss {:.4} micro-F1 {:.4}{raw} macro-F1 {:.4} P {:.4} R {:.4} | {:.0}s{}",
            e.train_loss, e.valid_loss, e.micro_f1, e.macro_f1, e.precision, e.recall, e.seconds, if improved { " *" } else { "" }
        );
        log_epoch(self.opts, "finetune", &human, &e);
        s.rows.push(MetricsRow { step: at.step, epoch, kind: "valid".into(), lr, valid_loss: Some(e.valid_loss), micro_f1: Some(e.micro_f1), macro_f1: Some(e.macro_f1), seconds: e.seconds, ..Default::default() });
        s.epochs.push(e);
        s.loss_sum = 0.0;
        let meta = || {
            let info = serde_json::json!({ "best_epoch": epoch, "epochs": &s.epochs, "initial_valid_loss": s.initial_valid_loss, "loaded_tensors": &s.loaded_tensors });
            ModelMeta::new(ModelKind::Classifier, Some(self.problem), f.threshold, info)
        };
        // every kept epoch's model.json names itself the best: it is the model of that epoch
        if let (Some(out), true) = (self.out, f.keep_epochs) {
            keep_epoch(out, epoch, self.cfg, self.tokenizer, &scored.valid(), meta(), Some(self.labels))?;
        }
        if improved {
            if let Some(out) = self.out {
                ModelDir::write(out, self.cfg, self.tokenizer, &scored.valid(), meta(), Some(self.labels))?;
            }
            s.best = s.epochs.last().expect("just pushed").micro_f1;
            s.best_epoch = epoch;
            s.since_best = 0;
            return Ok(false);
        }
        s.since_best += 1;
        if f.patience > 0 && s.since_best >= f.patience {
            say(self.opts, &format!("early stop: no micro-F1 gain for {} epochs; keeping epoch {}", f.patience, s.best_epoch));
            return Ok(true);
        }
        Ok(false)
    }

    fn save_checkpoint(&self, checkpoints: &Checkpoints, run: &Run, model: &Classifier, optim: &ModuleOptimizer, at: &Position<LoopState>) -> Result<PathBuf> {
        match &self.ema {
            // the average is saved beside the weights, as the second half of a pair
            Some(e) => checkpoints.save(run.cfg, run.tokenizer, &(model.clone(), e.model().clone()), optim, at, run.hash),
            None => checkpoints.save(run.cfg, run.tokenizer, model, optim, at, run.hash),
        }
    }
}

/// One optimizer step: the backbone at `lr × backbone_scale` (not at all at 0), the rest at `lr`.
fn descend(optim: &mut burn::optim::ModuleOptimizer, model: Classifier, loss: burn::tensor::Tensor<1>, lr: f64, backbone_scale: f64) -> Classifier {
    let mut grads = loss.backward();
    if backbone_scale == 1.0 {
        let all = GradientsParams::from_grads(grads, &model);
        return optim.step(lr, model, all);
    }
    // AdamW keeps its moments per parameter, so two steps on disjoint parameter sets are one step
    let backbone = GradientsParams::from_module(&mut grads, &model.backbone);
    let rest = GradientsParams::from_grads(grads, &model);
    let model = optim.step(lr, model, rest);
    if backbone_scale > 0.0 {
        optim.step(lr * backbone_scale, model, backbone)
    } else {
        model
    }
}

/// Running numbers of a fine-tuning loop, saved in its checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    #[serde(deserialize_with = "crate::store::checkpoints::f64_or_nan")]
    initial_valid_loss: f64,
    epochs: Vec<FinetuneEpoch>,
    best: f64,
    best_epoch: usize,
    since_best: usize,
    loss_sum: f64,
    loaded_tensors: Vec<String>,
    rows: Vec<MetricsRow>,
    window: Window,
}

impl Logged for LoopState {
    fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }
    fn log(&mut self) -> (&mut Vec<MetricsRow>, &mut Window) {
        (&mut self.rows, &mut self.window)
    }
}

impl Default for LoopState {
    fn default() -> Self {
        Self { initial_valid_loss: f64::NAN, epochs: Vec::new(), best: -1.0, best_epoch: 0, since_best: 0, loss_sum: 0.0, loaded_tensors: Vec::new(), rows: Vec::new(), window: Window::default() }
    }
}

/// Hash of the encoded training and validation data and the label list.
fn data_hash(train: &[EncodedExample], valid: &[EncodedExample], labels: &LabelSet, soft: Option<&[Vec<f32>]>) -> String {
    let mut h = Fnv::default();
    for e in train.iter().chain(valid) {
        h.ids(&e.input_ids);
        h.ids(&e.labels.iter().map(|&l| l as u64).collect::<Vec<_>>());
    }
    for i in 0..labels.len() {
        h.bytes(labels.name(i).as_bytes());
        h.bytes(&[0]);
    }
    // a run resumed with another teacher (or weight) would train towards other targets
    for row in soft.unwrap_or_default() {
        h.ids(&row.iter().map(|v| v.to_bits() as u64).collect::<Vec<_>>());
    }
    h.hex()
}

/// Held-out masked-token accuracy under which pre-trained weights are not yet useful: on the
/// demo's Transformer, 3.5 % started fine-tuning worse than random weights.
pub const WEAK_MLM_ACCURACY: f64 = 0.20;
/// The same for an ELECTRA model: the share of the gap between calling every word piece
/// original and a perfect discriminator that its held-out accuracy closed.
pub const WEAK_RTD_GAP_CLOSED: f64 = 0.20;

/// A warning when a bertlu-pre-trained model's last held-out score says its weights are not yet
/// useful — masked-token accuracy under [`WEAK_MLM_ACCURACY`], or for an ELECTRA model a
/// discriminator that closed under [`WEAK_RTD_GAP_CLOSED`] of its gap — with what to do about it.
pub fn weak_pretraining(dir: &ModelDir) -> Option<String> {
    let last = dir.meta.info.as_array()?.last()?;
    let number = |key: &str| last.get(key).and_then(|v| v.as_f64());
    let finding = match (number("rtd_valid_accuracy"), number("replaced_share")) {
        // ELECTRA: the masked-LM accuracy is the small generator's; what counts is how much of
        // the gap between "all original" and perfect the discriminator closed
        (Some(accuracy), Some(replaced)) => {
            let base = 1.0 - replaced;
            let closed = (accuracy - base) / replaced.max(1e-9);
            (closed < WEAK_RTD_GAP_CLOSED).then(|| {
                format!(
                    "tells replaced word pieces at {:.1} % held-out accuracy against {:.1} % for calling every piece original (under {:.0} % of the gap closed)",
                    100.0 * accuracy, 100.0 * base, 100.0 * WEAK_RTD_GAP_CLOSED
                )
            })
        }
        _ => {
            let accuracy = number("valid_accuracy")?;
            (accuracy < WEAK_MLM_ACCURACY).then(|| format!("reached {:.1} % held-out masked-token accuracy (under {:.0} %)", 100.0 * accuracy, 100.0 * WEAK_MLM_ACCURACY))
        }
    }?;
    Some(format!(
        "finetune: warning: {} {finding}: its weights may start fine-tuning worse than random ones; pre-train it longer (`bertlu pretrain --init {} --corpus …`) or start from an imported checkpoint (`bertlu import-hf`)",
        dir.path.display(), dir.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneKind, Preset};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;

    /// Every float parameter of a module, in visiting order, flattened.
    struct Flatten(Vec<f32>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().try_into_vec::<f32>().unwrap());
        }
    }
    fn flat<M: Module>(m: &M) -> Vec<f32> {
        let mut f = Flatten(Vec::new());
        m.visit(&mut f);
        f.0
    }

    /// A tiny TextCNN classifier without dropout. The device's generator is shared by the tests
    /// running in parallel, so each test draws its model once and clones it.
    fn tiny_classifier() -> Classifier {
        let (device, _) = devices();
        let mut cfg = Config::preset(Preset::Tiny).model;
        cfg.backbone = BackboneKind::TextCnn;
        cfg.vocab_size = 40;
        cfg.dropout = 0.0;
        Classifier::init(&cfg, 3, &device)
    }

    /// Backbone and head change of one step at `scale` from `model`.
    fn one_step(model: Classifier, scale: f64) -> (Vec<f32>, Vec<f32>) {
        let (device, _) = devices();
        let (b0, h0) = (flat(&model.backbone), flat(&model.head));
        let seqs: [&[u32]; 2] = [&[2, 7, 9, 11, 3], &[2, 12, 5, 3, 0]];
        let logits = model.forward(&TokenBatch::new(&seqs, crate::text::tokenizer::SpecialIds::BERTLU, &device));
        let loss = Classifier::loss(logits, &[vec![0], vec![1, 2]], Problem::MultiLabel, crate::model::loss::LabelLoss::Bce);
        let mut optim = adamw(0.0, 0.0);
        let model = descend(&mut optim, model, loss, 1e-2, scale);
        let diff = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| y - x).collect::<Vec<f32>>();
        (diff(b0, flat(&model.backbone)), diff(h0, flat(&model.head)))
    }

    #[test]
    fn backbone_lr_scale_scales_only_the_backbone_step() {
        let model = tiny_classifier();
        let (b1, h1) = one_step(model.clone(), 1.0);
        let (bh, hh) = one_step(model.clone(), 0.5);
        let (b0, h0) = one_step(model, 0.0);
        assert!(b1.iter().filter(|d| d.abs() > 1e-4).count() > b1.len() / 10, "the backbone moves at scale 1");
        // the head's step does not depend on the scale
        assert!(h1.iter().zip(&hh).chain(h1.iter().zip(&h0)).all(|(a, b)| (a - b).abs() < 1e-6));
        assert!(h1.iter().any(|d| d.abs() > 1e-3));
        // Adam's first step is lr·g/|g|: half the rate is half the move, and 0 freezes the backbone
        assert!(b1.iter().zip(&bh).all(|(a, b)| (0.5 * a - b).abs() < 1e-6));
        assert!(b0.iter().all(|&d| d == 0.0));
    }

    fn example(labels: &[usize]) -> EncodedExample {
        EncodedExample { input_ids: vec![2, 5, 3], labels: labels.to_vec() }
    }

    #[test]
    fn teacher_targets_mix_its_probabilities_with_the_gold_by_label_name() {
        let labels = LabelSet::from_names(vec!["a".into(), "b".into(), "c".into()]);
        // the teacher knows b and a (in its own order) and a label the student has not, not c
        let teacher = Teacher { labels: vec!["b".into(), "x".into(), "a".into()], probabilities: vec![vec![0.8, 0.5, 0.1], vec![0.2, 0.9, 0.6]] };
        let gold = [example(&[0, 2]), example(&[1])];
        let t = teacher.targets(&gold, &labels, Problem::MultiLabel, 0.75).unwrap();
        // a: 0.75 · 0.1 + 0.25 · 1; b: 0.75 · 0.8 + 0; c: the gold alone
        let want = [[0.325f32, 0.6, 1.0], [0.45, 0.4, 0.0]];
        for (row, w) in t.iter().zip(want) {
            assert!(row.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-6), "{row:?} vs {w:?}");
        }
        assert_eq!(teacher.targets(&gold, &labels, Problem::MultiLabel, 0.0).unwrap(), vec![vec![1.0, 0.0, 1.0], vec![0.0, 1.0, 0.0]]);
        // single-label: the teacher's mass on the labels both know, scaled to 1 (x's 0.5 left
        // out, c has none); a teacher with all its mass on x leaves the gold
        let single = Teacher { labels: teacher.labels.clone(), probabilities: vec![vec![0.3, 0.5, 0.2], vec![0.0, 1.0, 0.0]] };
        let t = single.targets(&[example(&[2, 0]), example(&[1])], &labels, Problem::SingleLabel, 0.5).unwrap();
        let want = [[0.5f32 * 0.4, 0.5 * 0.6, 0.5], [0.0, 1.0, 0.0]];
        for (row, w) in t.iter().zip(want) {
            assert!(row.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-6), "{row:?} vs {w:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let e = teacher.targets(&gold[..1], &labels, Problem::MultiLabel, 0.5).unwrap_err().to_string();
        assert!(e.contains("2 rows") && e.contains("1 training"), "{e}");
    }

    #[test]
    fn soft_single_label_loss_is_cross_entropy_against_the_distribution() {
        let (device, _) = devices();
        let logits = || Tensor::<2>::from_data(burn::tensor::TensorData::new(vec![1.0f32, -0.5, 2.0, 0.3, 0.3, -1.0], [2, 3]), &device);
        let bce = crate::model::loss::LabelLoss::Bce;
        let hard: f32 = Classifier::loss(logits(), &[vec![2], vec![0]], Problem::SingleLabel, bce).into_scalar();
        let one_hot: f32 = Classifier::soft_loss(logits(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0], Problem::SingleLabel, bce).into_scalar();
        assert!((hard - one_hot).abs() < 1e-6, "{hard} vs {one_hot}");
        // by hand: −Σ t · log softmax, averaged over the rows
        let rows = [([1.0f64, -0.5, 2.0], [0.2, 0.3, 0.5]), ([0.3, 0.3, -1.0], [0.6, 0.4, 0.0])];
        let want: f64 = rows.iter().map(|(x, t)| {
            let z: f64 = x.iter().map(|v| v.exp()).sum::<f64>().ln();
            -x.iter().zip(t).map(|(v, t)| t * (v - z)).sum::<f64>()
        }).sum::<f64>() / 2.0;
        let got: f32 = Classifier::soft_loss(logits(), vec![0.2, 0.3, 0.5, 0.6, 0.4, 0.0], Problem::SingleLabel, bce).into_scalar();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn a_teachers_targets_change_the_resume_fingerprint_and_none_leave_it_as_it_was() {
        let labels = LabelSet::from_names(vec!["a".into(), "b".into()]);
        let (train, valid) = ([example(&[0]), example(&[1])], [example(&[1])]);
        let plain = data_hash(&train, &valid, &labels, None);
        let one = data_hash(&train, &valid, &labels, Some(&[vec![0.9, 0.1], vec![0.2, 0.7]]));
        let other = data_hash(&train, &valid, &labels, Some(&[vec![0.9, 0.1], vec![0.2, 0.8]]));
        assert!(plain != one && one != other);
        assert_eq!(plain, data_hash(&train, &valid, &labels, Some(&[])));
    }
}
