//! Pre-training on a raw corpus: masked LM or ELECTRA's replaced-token detection, with or
//! without next-sentence prediction.

use super::driver::{diverged, drive, Logged, Run, Task};
use super::metrics_log::{MetricsRow, Window};
use super::optim::{adamw, Schedule};
use crate::store::checkpoints::{self, Position};
use crate::store::fingerprint::Fnv;
use super::{derived_seed, devices, log_epoch, say, streams, RunOptions};
use crate::data::batch::{bucketed_batch_count, PretrainBatch};
use crate::store::weights::load_prefix;
use crate::store::model_dir::{keep_epoch, ModelDir, ModelKind, ModelMeta};
use crate::config::{Config, Objective, PretrainConfig};
use crate::model::{PretrainModel, PretrainOutput, RtdOutput, TaskOutput};
use crate::data::mlm::{MaskSplit, Masking, MlmExample, WordBoundaries};
use crate::data::nsp::Sequence;
use crate::text::corpus::DocumentSource;
use crate::text::tokenizer::{SpecialIds, WordPieceTokenizer};
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

mod budget;
mod corpus_pass;
mod held_out;

use budget::{fit_budget, seconds_text};
pub use corpus_pass::{is_held_out, MAX_HELD_OUT, SHUFFLE_BUFFER};
use corpus_pass::{EpochBatches, Pass};
pub use held_out::{evaluate, HeldOutScores};
use held_out::held_out_draws;

/// Scores of one pre-training epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub steps: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Masked-token accuracy on training batches.
    pub train_accuracy: f64,
    /// Loss on the held-out sequences (NaN without any).
    #[serde(deserialize_with = "crate::store::checkpoints::f64_or_nan")]
    pub valid_loss: f64,
    /// Masked-token accuracy on the held-out sequences.
    #[serde(deserialize_with = "crate::store::checkpoints::f64_or_nan")]
    pub valid_accuracy: f64,
    /// Next-sentence loss on training batches (with `nsp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_train_loss: Option<f64>,
    /// Next-sentence accuracy on training batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_train_accuracy: Option<f64>,
    /// Next-sentence loss on the held-out pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_valid_loss: Option<f64>,
    /// Next-sentence accuracy on the held-out pairs (½ is chance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_valid_accuracy: Option<f64>,
    /// Replaced-token detection loss on training batches (with `electra`; the masked-LM
    /// numbers above are then the generator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_train_loss: Option<f64>,
    /// Share of positions the discriminator classified right on training batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_train_accuracy: Option<f64>,
    /// Replaced-token detection loss on the held-out sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_valid_loss: Option<f64>,
    /// Replaced-token detection accuracy on the held-out sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_valid_accuracy: Option<f64>,
    /// Share of the held-out positions the generator replaced (1 minus it: the accuracy of
    /// calling every position original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_share: Option<f64>,
    /// Seconds since the start of training.
    pub seconds: f64,
}

/// Running numbers of a pre-training loop, saved in its checkpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    log: Vec<PretrainEpoch>,
    rows: Vec<MetricsRow>,
    window: Window,
    loss_sum: f64,
    correct: usize,
    count: usize,
    seen: usize,
    #[serde(default)]
    nsp_loss_sum: f64,
    #[serde(default)]
    nsp_correct: usize,
    #[serde(default)]
    nsp_count: usize,
    #[serde(default)]
    rtd_loss_sum: f64,
    #[serde(default)]
    rtd_correct: usize,
    #[serde(default)]
    rtd_count: usize,
}

impl Logged for LoopState {
    fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }
    fn log(&mut self) -> (&mut Vec<MetricsRow>, &mut Window) {
        (&mut self.rows, &mut self.window)
    }
}

/// Mean masked positions and non-padding positions of a training batch over an epoch. Batches
/// are grouped by length, so a batch of short sequences has few masked positions; its mean loss
/// is scaled by its share (masked positions / this mean) so that every masked piece weighs the
/// same in an epoch, as without grouping. Unscaled, the pieces of short batches weighed more:
/// on the demo corpus (tiny preset, 3 epochs, seeds 42, 1, 2, 3) the held-out masked-LM loss
/// was 0.010–0.017 higher and its accuracy 0.3–0.5 points lower than with the scaling
/// (ungrouped batches, seeds 42 and 1: 0.009 and 0.021 lower still, at 1.6 times the time a step).
#[derive(Debug, Clone, Copy)]
struct PerBatch {
    masked: f64,
    positions: f64,
}

impl PerBatch {
    /// The scales of the masked-LM and detection losses of a batch of `examples`.
    fn scales(&self, examples: &[MlmExample]) -> (f64, f64) {
        let masked: usize = examples.iter().map(|e| e.positions.len()).sum();
        let positions: usize = examples.iter().map(|e| e.input_ids.len()).sum();
        let ratio = |n: usize, mean: f64| if mean > 0.0 { n as f64 / mean } else { 1.0 };
        (ratio(masked, self.masked), ratio(positions, self.positions))
    }
}

/// Pre-training as a [`Task`] of the driver.
struct PretrainTask<'a, D: ?Sized> {
    cfg: &'a Config,
    docs: &'a D,
    tokenizer: &'a WordPieceTokenizer,
    out: &'a Path,
    opts: &'a RunOptions,
    masking: Masking,
    valid: Vec<MlmExample>,
    valid_next: Vec<Option<bool>>,
    steps_per_epoch: usize,
    total: usize,
    per_batch: PerBatch,
    device: Device,
    plain: Device,
}

impl<'a, D: DocumentSource + ?Sized> Task<'a> for PretrainTask<'a, D> {
    type Model = PretrainModel;
    type Batch = Vec<Sequence>;
    type State = LoopState;

    fn epochs(&self) -> usize {
        self.total.div_ceil(self.steps_per_epoch)
    }

    fn batches(&self, epoch: usize, at: &Position<LoopState>) -> Result<(Box<dyn Iterator<Item = Result<Vec<Sequence>>> + 'a>, usize)> {
        let n = self.steps_per_epoch.min(self.total - (at.step - at.batch));
        let pass = Pass::new(self.docs, self.tokenizer, self.cfg)?;
        Ok((Box::new(EpochBatches::new(pass, epoch)), n))
    }

    fn step(&mut self, model: PretrainModel, optim: &mut ModuleOptimizer, batch: Vec<Sequence>, step: usize, lr: f64, s: &mut LoopState) -> Result<PretrainModel> {
        let p = &self.cfg.pretrain;
        let mut rng = StdRng::seed_from_u64(derived_seed(p.optim.seed, streams::MASKING, step as u64));
        let examples: Vec<MlmExample> = batch.iter().map(|q| mask(&self.masking, masks(p), &q.ids, &mut rng)).collect();
        let is_next: Vec<Option<bool>> = batch.iter().map(|q| q.is_next).collect();
        let batch = batch_of(&examples, &is_next, self.tokenizer.specials(), &self.device);
        let out = forward(&model, &batch, p, self.tokenizer.specials(), derived_seed(p.optim.seed, streams::SAMPLES, step as u64));
        let (mlm_scale, rtd_scale) = self.per_batch.scales(&examples);
        let loss = out.loss_scaled(mlm_scale, rtd_scale);
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() {
            return Err(diverged("pre-training", step, loss_value, "pretrain.lr"));
        }
        let (mlm_loss, mlm_correct, mlm_count) = out.mlm.map_or((f64::NAN, 0, 0), TaskOutput::values);
        s.correct += mlm_correct;
        s.count += mlm_count;
        if let Some((l, c, n)) = out.nsp.map(TaskOutput::values) {
            s.nsp_loss_sum += l;
            s.nsp_correct += c;
            s.nsp_count += n;
            s.window.add_nsp(l, c, n);
        }
        if let Some((l, c, n, r)) = out.rtd.map(RtdOutput::values) {
            s.rtd_loss_sum += l * rtd_scale;
            s.rtd_correct += c;
            s.rtd_count += n;
            s.window.add_rtd(l, c, n, r);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(lr, model, grads);
        s.seen += 1;
        // scaled as the loss, the epoch's mean is the mean over its masked pieces
        s.loss_sum += mlm_loss * mlm_scale;
        s.window.add(mlm_loss, mlm_correct, mlm_count, examples.iter().map(|e| e.input_ids.len()).sum(), examples.len());
        Ok(model)
    }

    fn message(&self, s: &LoopState, _batches_done: usize) -> String {
        let mut msg = String::new();
        if s.count > 0 {
            msg += &format!("loss {:.3} acc {:.3}", s.loss_sum / s.seen as f64, s.correct as f64 / s.count as f64);
        }
        if s.nsp_count > 0 {
            msg += &format!(" nsp loss {:.3} acc {:.3}", s.nsp_loss_sum / s.seen as f64, s.nsp_correct as f64 / s.nsp_count as f64);
        }
        if s.rtd_count > 0 {
            msg += &format!(" rtd loss {:.3} acc {:.3}", s.rtd_loss_sum / s.seen as f64, s.rtd_correct as f64 / s.rtd_count as f64);
        }
        msg.trim().to_owned()
    }

    fn end_epoch(&mut self, model: &PretrainModel, at: &mut Position<LoopState>, lr: f64, seconds: f64) -> Result<bool> {
        let (cfg, p, epoch) = (self.cfg, &self.cfg.pretrain, at.epoch);
        // the inference copy scored here is the one saved below
        let trained = model.valid();
        let v = evaluate(&trained, &self.valid, &self.valid_next, self.tokenizer.specials(), p, &self.plain);
        let s = &mut at.state;
        let nsp = s.nsp_count > 0;
        let rtd = s.rtd_count > 0;
        let e = PretrainEpoch {
            epoch,
            steps: at.step,
            train_loss: s.loss_sum / s.seen.max(1) as f64,
            train_accuracy: if s.count > 0 { s.correct as f64 / s.count as f64 } else { f64::NAN },
            valid_loss: v.mlm_loss,
            valid_accuracy: v.mlm_accuracy,
            nsp_train_loss: nsp.then(|| s.nsp_loss_sum / s.seen.max(1) as f64),
            nsp_train_accuracy: nsp.then(|| s.nsp_correct as f64 / s.nsp_count as f64),
            nsp_valid_loss: v.nsp_loss,
            nsp_valid_accuracy: v.nsp_accuracy,
            rtd_train_loss: rtd.then(|| s.rtd_loss_sum / s.seen.max(1) as f64),
            rtd_train_accuracy: rtd.then(|| s.rtd_correct as f64 / s.rtd_count as f64),
            rtd_valid_loss: v.rtd_loss,
            rtd_valid_accuracy: v.rtd_accuracy,
            replaced_share: v.replaced_share,
            seconds,
        };
        let mut human = format!("epoch {epoch}: step {}", e.steps);
        if masks(p) {
            // with electra the masked LM is the generator's
            let name = if p.has(Objective::Electra) { "generator" } else { "mlm" };
            human += &format!(" | {name} train loss {:.4} acc {:.4}, valid loss {:.4} acc {:.4}", e.train_loss, e.train_accuracy, e.valid_loss, e.valid_accuracy);
        }
        if let (Some(tl), Some(ta), Some(vl), Some(va), Some(r)) = (e.rtd_train_loss, e.rtd_train_accuracy, e.rtd_valid_loss, e.rtd_valid_accuracy, e.replaced_share) {
            human += &format!(" | rtd train loss {tl:.4} acc {ta:.4}, valid loss {vl:.4} acc {va:.4} (all-original {:.4})", 1.0 - r);
        }
        if let (Some(tl), Some(ta)) = (e.nsp_train_loss, e.nsp_train_accuracy) {
            human += &format!(" | nsp train loss {tl:.4} acc {ta:.4}, valid loss {:.4} acc {:.4}", v.nsp_loss.unwrap_or(f64::NAN), v.nsp_accuracy.unwrap_or(f64::NAN));
        }
        human += &format!(" | {:.0}s", e.seconds);
        log_epoch(self.opts, "pretrain", &human, &e);
        s.rows.push(MetricsRow {
            step: at.step,
            epoch,
            kind: "valid".into(),
            lr,
            valid_loss: Some(v.mlm_loss).filter(|x| !x.is_nan()),
            valid_accuracy: Some(v.mlm_accuracy).filter(|x| !x.is_nan()),
            nsp_valid_loss: v.nsp_loss,
            nsp_valid_accuracy: v.nsp_accuracy,
            rtd_valid_loss: v.rtd_loss,
            rtd_valid_accuracy: v.rtd_accuracy,
            replaced_share: v.replaced_share,
            seconds: e.seconds,
            ..Default::default()
        });
        s.log.push(e);
        (s.loss_sum, s.correct, s.count, s.seen, s.nsp_loss_sum, s.nsp_correct, s.nsp_count) = (0.0, 0, 0, 0, 0.0, 0, 0);
        (s.rtd_loss_sum, s.rtd_correct, s.rtd_count) = (0.0, 0, 0);
        let meta = ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::to_value(&s.log)?);
        if p.keep_epochs {
            keep_epoch(self.out, epoch, cfg, self.tokenizer, &trained, meta.clone(), None)?;
        }
        ModelDir::write(self.out, cfg, self.tokenizer, &trained, meta, None)?;
        Ok(false)
    }
}

/// Pre-trains a fresh model on `docs`, or the pre-trained model `init` further (or continues
/// the checkpointed run in `out` with `opts.resume`), and writes the model directory's files
/// into `out` after each epoch, with `metrics.csv` and training-state checkpoints. Returns the
/// per-epoch scores.
///
/// The corpus is read once to count and hash the sequences and collect the held-out ones, then
/// once an epoch, [`SHUFFLE_BUFFER`] sequences at a time: memory does not grow with the corpus.
pub fn pretrain<D: DocumentSource + ?Sized>(cfg: &Config, docs: &D, tokenizer: &WordPieceTokenizer, init: Option<&ModelDir>, out: &Path, opts: &RunOptions) -> Result<Vec<PretrainEpoch>> {
    let started = Instant::now();
    let (device, plain) = devices();
    device.seed(cfg.pretrain.optim.seed);
    let p = &cfg.pretrain;
    let _precision = super::precision(&p.optim, "pretrain", opts);
    let whole_words = if p.whole_word_mask {
        let words = if p.word_list.is_empty() {
            Vec::new()
        } else {
            let path = Path::new(&p.word_list);
            crate::text::reader::Lines::open(path)?.map(|l| l.map(|l| l.text)).collect::<Result<Vec<String>>>()?
        };
        Some(std::sync::Arc::new(WordBoundaries::new(tokenizer, words)))
    } else {
        None
    };
    let split = if p.has(Objective::Electra) { MaskSplit::ELECTRA } else { MaskSplit::BERT };
    let masking = Masking { prob: p.mask_prob, max_predictions: p.max_predictions, vocab_size: cfg.model.vocab_size as u32, specials: tokenizer.specials(), whole_words, split };

    // Counting pass: batches an epoch (buffers are cut exactly as in the training passes), the
    // data hash a resumed run must match, and the held-out sequences.
    let (mut held, mut hash) = (Vec::new(), Fnv::default());
    let (mut n_train, mut tokens, mut fill, mut steps_per_epoch, mut n_next, mut masked) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut counting = Pass::new(docs, tokenizer, cfg)?;
    let mut counting_rng = StdRng::seed_from_u64(derived_seed(p.optim.seed, streams::COUNTING, 0));
    while let Some(chunk) = counting.next_chunk()? {
        for s in &chunk.train {
            hash.sequence(&s.ids, s.is_next);
            tokens += s.ids.len();
            n_next += usize::from(s.is_next == Some(true));
            if masks(p) {
                masked += masking.predictions_in(&s.ids, &mut counting_rng);
            }
        }
        n_train += chunk.train.len();
        fill += chunk.train.len();
        if fill >= SHUFFLE_BUFFER {
            steps_per_epoch += bucketed_batch_count(fill, p.optim.batch_size);
            fill = 0;
        }
        let room = MAX_HELD_OUT.saturating_sub(held.len());
        held.extend(chunk.held.into_iter().take(room));
    }
    steps_per_epoch += bucketed_batch_count(fill, p.optim.batch_size);
    let n_docs = counting.index;
    if n_docs == 0 {
        bail!("the corpus has no documents");
    }
    if n_train == 0 {
        bail!("the corpus yields no training sequence (too small?)");
    }
    // The held-out masking is drawn once, so every epoch is scored on the same positions; a
    // small held-out set is masked several ways (see [`held_out_draws`]). The first draw alone
    // enters the data hash, as before there were several.
    let mut vrng = StdRng::seed_from_u64(p.optim.seed.wrapping_add(1));
    let draws = if masks(p) { held_out_draws(held.len()) } else { 1 };
    let (mut valid, mut valid_next): (Vec<MlmExample>, Vec<Option<bool>>) = (Vec::new(), Vec::new());
    for draw in 0..draws {
        for s in &held {
            let e = mask(&masking, masks(p), &s.ids, &mut vrng);
            if draw == 0 {
                hash.sequence(&e.input_ids, s.is_next);
            }
            valid.push(e);
            valid_next.push(s.is_next);
        }
    }
    let n_held = held.len();
    drop(held);
    let hash = hash.hex();
    let tasks: Vec<String> = p.tasks.iter().map(|t| t.to_string()).collect();
    let unit = if p.has(Objective::Nsp) { format!("pairs, {:.1} % IsNext", 100.0 * n_next as f64 / n_train.max(1) as f64) } else { "sequences".into() };
    say(opts, &format!("pretrain ({}): {n_docs} documents, {n_train} training {unit} ({tokens} tokens), {n_held} held out{}, vocab {}", tasks.join("+"), if draws > 1 { format!(" (masked {draws} ways)") } else { String::new() }, cfg.model.vocab_size));

    // A time budget becomes this run's steps and epochs (the model is then drawn afresh from
    // the seed, so the run is the one `--epochs E --max-steps N` gives).
    let budgeted;
    let cfg = if p.time_budget > 0.0 {
        budgeted = fit_budget(cfg, out, opts, &valid, &valid_next, tokenizer.specials(), steps_per_epoch, init.is_some(), started, &device)?;
        device.seed(p.optim.seed);
        &budgeted
    } else {
        cfg
    };
    let p = &cfg.pretrain;

    let mut total = steps_per_epoch * p.optim.epochs.max(1);
    if p.max_steps > 0 {
        total = total.min(p.max_steps);
    }
    let schedule = Schedule::new(p.optim.lr, p.optim.warmup_ratio, total);
    let mut model = PretrainModel::init_for(cfg, &device);
    let mut optim = adamw(p.optim.weight_decay, p.optim.grad_clip);
    let mut at = Position { step: 0, epoch: 1, batch: 0, seconds: 0.0, state: LoopState::default() };
    // a resumed run's checkpoint already holds the continued weights
    if let Some(dir) = init.filter(|_| !opts.resume) {
        model = load_pretrained(model, dir, p, opts)?;
        let v = evaluate(&model.valid(), &valid, &valid_next, tokenizer.specials(), p, &plain);
        say(opts, &format!("pretrain: held out before training: {}", v.describe()));
    }
    if opts.resume {
        let (r, ckpt) = checkpoints::restore_latest(out, cfg, &hash, model, optim)?;
        (model, optim, at) = (r.model, r.optim, r.position);
        say(opts, &format!("pretrain: resumed from {} (step {}, epoch {})", ckpt.display(), at.step, at.epoch));
    }
    let per_batch = PerBatch { masked: masked as f64 / steps_per_epoch as f64, positions: tokens as f64 / steps_per_epoch as f64 };
    let mut task = PretrainTask { cfg, docs, tokenizer, out, opts, masking, valid, valid_next, steps_per_epoch, total, per_batch, device: device.clone(), plain };
    let run = Run { cfg, tokenizer, out: Some(out), opts, hash: &hash, seed: p.optim.seed, schedule: &schedule };
    let (_, at) = drive(&mut task, model, optim, at, &run, &device)?;
    if p.time_budget > 0.0 && !opts.resume {
        say(opts, &format!("pretrain: time budget {}: {:.0} s used", seconds_text(p.time_budget), started.elapsed().as_secs_f64()));
    }
    Ok(at.state.log)
}

/// `model` with the weights of the pre-trained `dir`: the backbone always, and the head of each
/// objective of this run that `dir` was trained on; a head it lacks starts at random, and says so.
fn load_pretrained(model: PretrainModel, dir: &ModelDir, p: &PretrainConfig, opts: &RunOptions) -> Result<PretrainModel> {
    let (w, bytes) = (dir.weights(), dir.meta.weights_bytes);
    let (mut model, mut names) = load_prefix(model, &w, bytes, "backbone.")?;
    let mut fresh = Vec::new();
    let mut kept = Vec::new();
    for (task, prefixes) in [(Objective::Mlm, &["mlm."][..]), (Objective::Nsp, &["nsp."]), (Objective::Electra, &["generator.", "rtd."])] {
        if !p.has_head(task) {
            continue;
        }
        if !p.has(task) {
            kept.push(task.to_string());
        }
        if dir.config.pretrain.has_head(task) {
            if task == Objective::Electra && dir.config.pretrain.generator_size != p.generator_size {
                bail!("{}: its generator is {} of the model's width, this run asks for {} (pretrain.generator_size)", dir.path.display(), dir.config.pretrain.generator_size, p.generator_size);
            }
            for prefix in prefixes {
                let (m, head) = load_prefix(model, &w, bytes, prefix)?;
                model = m;
                names.extend(head);
            }
        } else {
            fresh.push(task.to_string());
        }
    }
    let fresh = if fresh.is_empty() { String::new() } else { format!("; {} head starts at random (not in that model)", fresh.join(", ")) };
    let kept = if kept.is_empty() { String::new() } else { format!("; {} head kept as it is (not trained by this run)", kept.join(", ")) };
    say(opts, &format!("pretrain: loaded {} pre-trained tensors from {}{fresh}{kept}", names.len(), dir.path.display()));
    Ok(model)
}

/// Whether the objectives need masked positions (the masked LM, or ELECTRA's generator).
fn masks(p: &PretrainConfig) -> bool {
    p.has(Objective::Mlm) || p.has(Objective::Electra)
}

/// One forward pass of the objectives `p` trains; `sample_seed` seeds ELECTRA's sampling.
pub(super) fn forward(model: &PretrainModel, batch: &PretrainBatch, p: &PretrainConfig, specials: SpecialIds, sample_seed: u64) -> PretrainOutput {
    if p.has(Objective::Electra) {
        model.forward_electra(batch, specials, p.rtd_weight, &mut StdRng::seed_from_u64(sample_seed))
    } else {
        model.forward(batch)
    }
}

/// The masked example of a sequence when `masked` (see [`masks`]), the sequence untouched without.
fn mask<R: rand::Rng>(masking: &Masking, masked: bool, ids: &[u32], rng: &mut R) -> MlmExample {
    if masked {
        masking.apply(ids, rng)
    } else {
        MlmExample { input_ids: ids.to_vec(), positions: Vec::new(), targets: Vec::new() }
    }
}

/// A batch of masked examples, with next-sentence targets when every example is a pair.
pub(super) fn batch_of(examples: &[MlmExample], is_next: &[Option<bool>], specials: SpecialIds, device: &Device) -> PretrainBatch {
    let batch = PretrainBatch::new(examples, specials, device);
    match is_next.iter().copied().collect::<Option<Vec<bool>>>() {
        Some(targets) => batch.with_is_next(&targets),
        None => batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_loss_is_scaled_by_its_share_of_masked_and_real_positions() {
        let example = |len: usize, masked: usize| MlmExample { input_ids: vec![7; len], positions: (1..=masked).collect(), targets: vec![7; masked] };
        let per_batch = PerBatch { masked: 4.0, positions: 20.0 };
        // 3 + 3 masked of 4 on average, 12 + 18 positions of 20
        assert_eq!(per_batch.scales(&[example(12, 3), example(18, 3)]), (1.5, 1.5));
        assert_eq!(per_batch.scales(&[example(5, 1)]), (0.25, 0.25));
        // without masked positions (next-sentence prediction alone) nothing is scaled
        assert_eq!(PerBatch { masked: 0.0, positions: 20.0 }.scales(&[example(10, 0)]), (1.0, 0.5));
    }
}
