//! Masked-LM pre-training on a raw corpus.

use super::optim::{adamw, Schedule};
use super::{devices, progress, say, RunOptions};
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
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Scores of one pre-training epoch.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub steps: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Masked-token accuracy on training batches.
    pub train_accuracy: f64,
    /// Loss on the held-out sequences.
    pub valid_loss: f64,
    /// Masked-token accuracy on the held-out sequences.
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

/// Pre-trains a fresh model on `docs` and writes the model directory's files into `out` after
/// each epoch. Returns the per-epoch scores.
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
    let mut model = PretrainModel::init(&cfg.model, &device);
    let mut optim = adamw(p.weight_decay, p.grad_clip);
    let mut rng = StdRng::seed_from_u64(p.seed);
    let lengths: Vec<usize> = train.iter().map(|s| s.len()).collect();
    let start = Instant::now();
    let mut step = 0usize;
    let mut log = Vec::new();
    for epoch in 1..=epochs {
        let batches = bucketed_batches(&lengths, p.batch_size, &mut rng);
        let n = batches.len().min(total - step);
        let mut pb = progress::Progress::new(n as u64, &format!("epoch {epoch}/{epochs}"), opts.quiet);
        let (mut loss_sum, mut correct, mut count, mut seen) = (0.0, 0usize, 0usize, 0usize);
        for idx in batches.into_iter().take(n) {
            let examples: Vec<MlmExample> = idx.iter().map(|&i| masking.apply(&train[i], &mut rng)).collect();
            let batch = MlmBatch::new(&examples, &device);
            let out = model.forward(&batch);
            let loss_value: f32 = out.loss.clone().into_scalar();
            if !loss_value.is_finite() {
                bail!("pre-training diverged at step {} (loss {loss_value}); lower pretrain.lr", step + 1);
            }
            correct += out.correct.into_scalar::<i64>() as usize;
            count += out.count;
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(schedule.lr(step), model, grads);
            step += 1;
            seen += 1;
            loss_sum += loss_value as f64;
            pb.inc();
            if seen % 10 == 0 || seen == n {
                pb.set_message(format!("loss {:.3} acc {:.3}", loss_sum / seen as f64, correct as f64 / count.max(1) as f64));
            }
        }
        pb.finish();
        let (valid_loss, valid_accuracy) = evaluate_mlm(&model.valid(), &valid, p.batch_size, &plain);
        let e = PretrainEpoch {
            epoch,
            steps: step,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / count.max(1) as f64,
            valid_loss,
            valid_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        say(opts, &format!(
            "epoch {epoch}: step {} train loss {:.4} acc {:.4} | valid loss {:.4} acc {:.4} | {:.0}s",
            e.steps, e.train_loss, e.train_accuracy, e.valid_loss, e.valid_accuracy, e.seconds
        ));
        log.push(e);
        let meta = ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::to_value(&log)?);
        ModelDir::write(out, cfg, tokenizer, &model.valid(), meta, None)?;
    }
    Ok(log)
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
