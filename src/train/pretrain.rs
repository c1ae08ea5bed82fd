//! Masked-LM pre-training on a raw corpus.

use super::metrics_log::{write_csv, MetricsRow, Window, LOG_EVERY, METRICS_FILE};
use super::optim::{adamw, Schedule};
use super::resume::{self, Checkpoints, Fnv, Interrupted, Position};
use super::{derived_seed, devices, log_epoch, progress, say, streams, RunOptions};
use crate::batch::{bucketed_batches, MlmBatch};
use crate::checkpoint::{ModelDir, ModelKind, ModelMeta};
use crate::config::Config;
use crate::model::PretrainModel;
use crate::tasks::mlm::{chunk_document, Masking, MlmExample};
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
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

/// Cuts every document into sequences and splits them, by document, into train and held-out sets.
pub fn prepare_sequences(docs: &[String], tokenizer: &WordPieceTokenizer, cfg: &Config) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(cfg.pretrain.seed ^ 0x5eed));
    let n_valid = if docs.len() < 2 || cfg.pretrain.valid_fraction == 0.0 { 0 } else { ((docs.len() as f64 * cfg.pretrain.valid_fraction).ceil() as usize).clamp(1, docs.len() / 2) };
    let held: std::collections::HashSet<usize> = order[..n_valid].iter().copied().collect();
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    const CHUNK: usize = 2048;
    for (c, chunk) in docs.chunks(CHUNK).enumerate() {
        for (k, ids) in tokenizer.encode_batch(chunk).into_iter().enumerate() {
            let seqs = chunk_document(&ids, cfg.model.max_len);
            if held.contains(&(c * CHUNK + k)) {
                valid.extend(seqs);
            } else {
                train.extend(seqs);
            }
        }
    }
    // Sequences with no word piece (empty documents) teach nothing.
    train.retain(|s| s.len() > 2);
    valid.retain(|s| s.len() > 2);
    (train, valid)
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

/// Hash of the training sequences and the held-out masking: what a resumed run must see again.
fn data_hash(train: &[Vec<u32>], valid: &[MlmExample]) -> String {
    let mut h = Fnv::default();
    for s in train {
        h.ids(s);
    }
    for e in valid {
        h.ids(&e.input_ids);
    }
    h.hex()
}

/// Pre-trains a fresh model on `docs` (or continues the checkpointed run in `out` with
/// `opts.resume`) and writes the model directory's files into `out` after each epoch, with
/// `metrics.csv` and training-state checkpoints. Returns the per-epoch scores.
pub fn pretrain(cfg: &Config, docs: &[String], tokenizer: &WordPieceTokenizer, out: &Path, opts: &RunOptions) -> Result<Vec<PretrainEpoch>> {
    let (device, plain) = devices();
    device.seed(cfg.pretrain.seed);
    let p = &cfg.pretrain;
    let (train, valid) = prepare_sequences(docs, tokenizer, cfg);
    if train.is_empty() {
        bail!("the corpus yields no training sequence (too small?)");
    }
    let masking = Masking { prob: p.mask_prob, max_predictions: p.max_predictions, vocab_size: cfg.model.vocab_size as u32 };
    // The held-out masking is drawn once, so every epoch is scored on the same positions.
    let mut vrng = StdRng::seed_from_u64(p.seed.wrapping_add(1));
    let valid: Vec<MlmExample> = valid.iter().map(|s| masking.apply(s, &mut vrng)).collect();
    let tokens: usize = train.iter().map(|s| s.len()).sum();
    say(opts, &format!("pretrain: {} training sequences ({tokens} tokens), {} held out, vocab {}", train.len(), valid.len(), cfg.model.vocab_size));

    let steps_per_epoch = train.len().div_ceil(p.batch_size);
    let mut total = steps_per_epoch * p.epochs.max(1);
    if p.max_steps > 0 {
        total = total.min(p.max_steps);
    }
    let epochs = total.div_ceil(steps_per_epoch);
    let schedule = Schedule::new(p.lr, p.warmup_ratio, total);
    let hash = data_hash(&train, &valid);
    let checkpoints = Checkpoints::new(out, opts.checkpoints);
    let mut model = PretrainModel::init(&cfg.model, &device);
    let mut optim = adamw(p.weight_decay, p.grad_clip);
    let mut at = Position { step: 0, epoch: 1, batch: 0, seconds: 0.0, state: LoopState::default() };
    if opts.resume {
        let ckpt = resume::latest(out)?.ok_or_else(|| anyhow::anyhow!("{}: no checkpoint to resume from", out.display()))?;
        let r = resume::restore(&ckpt, cfg, &hash, model, optim)?;
        (model, optim, at) = (r.model, r.optim, r.position);
        say(opts, &format!("pretrain: resumed from {} (step {}, epoch {})", ckpt.display(), at.step, at.epoch));
    }
    let lengths: Vec<usize> = train.iter().map(|s| s.len()).collect();
    let start = Instant::now();
    let elapsed = |offset: f64| offset + start.elapsed().as_secs_f64();
    let offset = at.seconds;
    let metrics_path = out.join(METRICS_FILE);
    while at.epoch <= epochs {
        let epoch = at.epoch;
        let batches = bucketed_batches(&lengths, p.batch_size, &mut StdRng::seed_from_u64(derived_seed(p.seed, streams::ORDER, epoch as u64)));
        let n = batches.len().min(total - (at.step - at.batch));
        let mut pb = progress::Progress::new((n - at.batch.min(n)) as u64, &format!("epoch {epoch}/{epochs}"), opts.no_bars());
        for idx in batches.into_iter().take(n).skip(at.batch) {
            let step = at.step;
            let mut rng = StdRng::seed_from_u64(derived_seed(p.seed, streams::MASKING, step as u64));
            device.seed(derived_seed(p.seed, streams::DROPOUT, step as u64));
            let examples: Vec<MlmExample> = idx.iter().map(|&i| masking.apply(&train[i], &mut rng)).collect();
            let batch = MlmBatch::new(&examples, &device);
            let out = model.forward(&batch);
            let loss_value: f32 = out.loss.clone().into_scalar();
            if !loss_value.is_finite() {
                bail!("pre-training diverged at step {} (loss {loss_value}); lower pretrain.lr", step + 1);
            }
            let correct = out.correct.into_scalar::<i64>() as usize;
            let s = &mut at.state;
            s.correct += correct;
            s.count += out.count;
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(schedule.lr(step), model, grads);
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
                let row = s.window.row(at.step, epoch, schedule.lr(step), elapsed(offset));
                s.rows.push(row);
            }
            if checkpoints.due(at.step) || resume::interrupted() {
                at.seconds = elapsed(offset);
                let dir = checkpoints.save(cfg, tokenizer, &model, &optim, &at, &hash)?;
                write_csv(&at.state.rows, &metrics_path)?;
                if resume::interrupted() {
                    pb.finish();
                    return Err(Interrupted { step: at.step, dir }.into());
                }
            }
        }
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
            seconds: elapsed(offset),
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
        at.seconds = elapsed(offset);
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
