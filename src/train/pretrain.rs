//! Masked-LM pre-training on a raw corpus.

use super::metrics_log::{write_csv, MetricsRow, Window, LOG_EVERY, METRICS_FILE};
use super::optim::{adamw, Schedule};
use super::resume::{self, Checkpoints, Fnv, Position};
use super::{derived_seed, devices, log_epoch, progress, say, streams, RunOptions};
use crate::batch::{bucketed_batch_count, bucketed_batches, MlmBatch};
use crate::checkpoint::{ModelDir, ModelKind, ModelMeta};
use crate::config::Config;
use crate::model::PretrainModel;
use crate::tasks::mlm::{chunk_document, Masking, MlmExample, WordBoundaries};
use crate::text::corpus::DocumentSource;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

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
    #[serde(deserialize_with = "super::resume::f64_or_nan")]
    pub valid_loss: f64,
    /// Masked-token accuracy on the held-out sequences.
    #[serde(deserialize_with = "super::resume::f64_or_nan")]
    pub valid_accuracy: f64,
    /// Seconds since the start of training.
    pub seconds: f64,
}

/// Documents tokenized together.
const CHUNK: usize = 2048;
/// Training sequences shuffled (and grouped by length) together: what a pass holds in memory —
/// about 10 MB of ids at Debtags' 76 pieces a sequence — however large the corpus.
pub const SHUFFLE_BUFFER: usize = 32_768;
/// Held-out sequences kept at most (the validation set of a huge corpus stays small).
pub const MAX_HELD_OUT: usize = 2_000;

/// Whether document `i` (0-based, file order) is held out: the second, then one every
/// `1 / valid_fraction` documents — the same split for every seed and every pass.
pub fn is_held_out(i: usize, valid_fraction: f64) -> bool {
    if valid_fraction <= 0.0 {
        return false;
    }
    let period = ((1.0 / valid_fraction).round() as usize).max(2);
    i % period == 1
}

/// One pass over the corpus, tokenizing a chunk of documents at a time: each chunk's training
/// sequences go to `on_train` (with `last` set once, after the final chunk, with no sequences);
/// it returns false to end the pass early. Held-out sequences go to `held` when given.
/// Returns the number of documents read.
fn pass<D: DocumentSource + ?Sized>(docs: &D, tokenizer: &WordPieceTokenizer, cfg: &Config, mut held: Option<&mut Vec<Vec<u32>>>, mut on_train: impl FnMut(Vec<Vec<u32>>, bool) -> Result<bool>) -> Result<usize> {
    let mut it = docs.documents()?;
    let mut index = 0usize;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for d in it.by_ref().take(CHUNK) {
            chunk.push(d?);
        }
        if chunk.is_empty() {
            on_train(Vec::new(), true)?;
            return Ok(index);
        }
        let mut train = Vec::new();
        for ids in tokenizer.encode_batch(&chunk) {
            // Sequences with no word piece (empty documents) teach nothing.
            let seqs = chunk_document(&ids, cfg.model.max_len).into_iter().filter(|s| s.len() > 2);
            if is_held_out(index, cfg.pretrain.valid_fraction) {
                if let Some(h) = held.as_deref_mut() {
                    h.extend(seqs.take(MAX_HELD_OUT.saturating_sub(h.len())));
                }
            } else {
                train.extend(seqs);
            }
            index += 1;
        }
        if !on_train(train, false)? {
            return Ok(index);
        }
    }
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
}

/// Pre-trains a fresh model on `docs` (or continues the checkpointed run in `out` with
/// `opts.resume`) and writes the model directory's files into `out` after each epoch, with
/// `metrics.csv` and training-state checkpoints. Returns the per-epoch scores.
///
/// The corpus is read once to count and hash the sequences and collect the held-out ones, then
/// once an epoch, [`SHUFFLE_BUFFER`] sequences at a time: memory does not grow with the corpus.
pub fn pretrain<D: DocumentSource + ?Sized>(cfg: &Config, docs: &D, tokenizer: &WordPieceTokenizer, out: &Path, opts: &RunOptions) -> Result<Vec<PretrainEpoch>> {
    let (device, plain) = devices();
    device.seed(cfg.pretrain.seed);
    let p = &cfg.pretrain;
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
    let masking = Masking { prob: p.mask_prob, max_predictions: p.max_predictions, vocab_size: cfg.model.vocab_size as u32, whole_words };

    // Counting pass: batches an epoch (buffers are cut exactly as in the training passes), the
    // data hash a resumed run must match, and the held-out sequences.
    let (mut held, mut hash) = (Vec::new(), Fnv::default());
    let (mut n_train, mut tokens, mut fill, mut steps_per_epoch) = (0usize, 0usize, 0usize, 0usize);
    let n_docs = pass(docs, tokenizer, cfg, Some(&mut held), |seqs, last| {
        for s in &seqs {
            hash.ids(s);
            tokens += s.len();
        }
        n_train += seqs.len();
        fill += seqs.len();
        if fill >= SHUFFLE_BUFFER || last {
            steps_per_epoch += bucketed_batch_count(fill, p.batch_size);
            fill = 0;
        }
        Ok(true)
    })?;
    if n_docs == 0 {
        bail!("the corpus has no documents");
    }
    if n_train == 0 {
        bail!("the corpus yields no training sequence (too small?)");
    }
    // The held-out masking is drawn once, so every epoch is scored on the same positions.
    let mut vrng = StdRng::seed_from_u64(p.seed.wrapping_add(1));
    let valid: Vec<MlmExample> = held.iter().map(|s| masking.apply(s, &mut vrng)).collect();
    drop(held);
    for e in &valid {
        hash.ids(&e.input_ids);
    }
    let hash = hash.hex();
    say(opts, &format!("pretrain: {n_docs} documents, {n_train} training sequences ({tokens} tokens), {} held out, vocab {}", valid.len(), cfg.model.vocab_size));

    let mut total = steps_per_epoch * p.epochs.max(1);
    if p.max_steps > 0 {
        total = total.min(p.max_steps);
    }
    let epochs = total.div_ceil(steps_per_epoch);
    let schedule = Schedule::new(p.lr, p.warmup_ratio, total);
    let checkpoints = Checkpoints::new(out, opts.checkpoints);
    let mut model = PretrainModel::init(&cfg.model, &device);
    let mut optim = adamw(p.weight_decay, p.grad_clip);
    let mut at = Position { step: 0, epoch: 1, batch: 0, seconds: 0.0, state: LoopState::default() };
    if opts.resume {
        let (r, ckpt) = resume::restore_latest(out, cfg, &hash, model, optim)?;
        (model, optim, at) = (r.model, r.optim, r.position);
        say(opts, &format!("pretrain: resumed from {} (step {}, epoch {})", ckpt.display(), at.step, at.epoch));
    }
    let start = Instant::now();
    let offset = at.seconds;
    let elapsed = || offset + start.elapsed().as_secs_f64();
    let metrics_path = out.join(METRICS_FILE);
    while at.epoch <= epochs {
        let epoch = at.epoch;
        let n = steps_per_epoch.min(total - (at.step - at.batch));
        let mut pb = progress::Progress::new((n - at.batch.min(n)) as u64, &format!("epoch {epoch}/{epochs}"), opts.no_bars());
        let (mut buffer, mut buffer_no, mut index) = (Vec::<Vec<u32>>::new(), 0u64, 0usize);
        let mut slot = Some(model);
        pass(docs, tokenizer, cfg, None, |seqs, last| {
            buffer.extend(seqs);
            if buffer.len() < SHUFFLE_BUFFER && !last {
                return Ok(true);
            }
            let lengths: Vec<usize> = buffer.iter().map(|s| s.len()).collect();
            let order_seed = derived_seed(p.seed, streams::ORDER, ((epoch as u64) << 32) | buffer_no);
            buffer_no += 1;
            for idx in bucketed_batches(&lengths, p.batch_size, &mut StdRng::seed_from_u64(order_seed)) {
                if index >= n {
                    return Ok(false);
                }
                index += 1;
                if index <= at.batch {
                    continue; // done before the run was resumed
                }
                let step = at.step;
                let mut rng = StdRng::seed_from_u64(derived_seed(p.seed, streams::MASKING, step as u64));
                super::seed_step(&device, p.seed, step);
                let examples: Vec<MlmExample> = idx.iter().map(|&i| masking.apply(&buffer[i], &mut rng)).collect();
                let batch = MlmBatch::new(&examples, &device);
                let model = slot.as_ref().expect("model present between steps");
                let out = model.forward(&batch);
                let loss_value: f32 = out.loss.clone().into_scalar();
                if !loss_value.is_finite() {
                    bail!("pre-training diverged at step {} (loss {loss_value}); lower pretrain.lr", step + 1);
                }
                let correct = out.correct.into_scalar::<i64>() as usize;
                let s = &mut at.state;
                s.correct += correct;
                s.count += out.count;
                let grads = GradientsParams::from_grads(out.loss.backward(), model);
                // The step consumes the model: take it out of the Option the closure borrows.
                let current = slot.take().expect("model present between steps");
                slot = Some(optim.step(schedule.lr(step), current, grads));
                at.step += 1;
                at.batch += 1;
                s.seen += 1;
                s.loss_sum += loss_value as f64;
                s.window.add(loss_value as f64, correct, out.count, examples.iter().map(|e| e.input_ids.len()).sum(), examples.len());
                pb.inc();
                if s.seen % 10 == 0 || at.batch == n {
                    pb.set_message(format!("loss {:.3} acc {:.3}", s.loss_sum / s.seen as f64, s.correct as f64 / s.count.max(1) as f64));
                }
                if at.step % LOG_EVERY == 0 {
                    let row = s.window.row(at.step, epoch, schedule.lr(step), elapsed());
                    s.rows.push(row);
                }
                at.seconds = elapsed();
                checkpoints.after_step(cfg, tokenizer, slot.as_ref().expect("model"), &optim, &at, &hash, &at.state.rows)?;
            }
            buffer.clear();
            Ok(index < n)
        })?;
        model = slot.expect("model present after the pass");
        pb.finish();
        let (valid_loss, valid_accuracy) = evaluate_mlm(&model.valid(), &valid, p.batch_size, &plain);
        let s = &mut at.state;
        let e = PretrainEpoch {
            epoch,
            steps: at.step,
            train_loss: s.loss_sum / s.seen.max(1) as f64,
            train_accuracy: s.correct as f64 / s.count.max(1) as f64,
            valid_loss,
            valid_accuracy,
            seconds: elapsed(),
        };
        let human = format!(
            "epoch {epoch}: step {} train loss {:.4} acc {:.4} | valid loss {:.4} acc {:.4} | {:.0}s",
            e.steps, e.train_loss, e.train_accuracy, e.valid_loss, e.valid_accuracy, e.seconds
        );
        log_epoch(opts, "pretrain", &human, &e);
        s.rows.push(MetricsRow { step: at.step, epoch, kind: "valid".into(), lr: schedule.lr(at.step - 1), valid_loss: Some(valid_loss), valid_accuracy: Some(valid_accuracy), seconds: e.seconds, ..Default::default() });
        s.log.push(e);
        (s.loss_sum, s.correct, s.count, s.seen) = (0.0, 0, 0, 0);
        let meta = ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::to_value(&s.log)?);
        ModelDir::write(out, cfg, tokenizer, &model.valid(), meta, None)?;
        write_csv(&s.rows, &metrics_path)?;
        at.epoch += 1;
        at.batch = 0;
        at.seconds = elapsed();
        if at.epoch <= epochs {
            checkpoints.save(cfg, tokenizer, &model, &optim, &at, &hash)?;
        }
    }
    resume::remove_all(out)?;
    Ok(at.state.log)
}

/// Mean loss and accuracy over held-out masked sequences (NaN when there are none).
pub fn evaluate_mlm(model: &PretrainModel, examples: &[MlmExample], batch_size: usize, device: &Device) -> (f64, f64) {
    let (mut loss, mut correct, mut count) = (0.0, 0usize, 0usize);
    for chunk in examples.chunks(batch_size) {
        let out = model.forward(&MlmBatch::new(chunk, device));
        loss += out.loss.into_scalar::<f32>() as f64 * out.count as f64;
        correct += out.correct.into_scalar::<i64>() as usize;
        count += out.count;
    }
    if count == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (loss / count as f64, correct as f64 / count as f64)
    }
}
