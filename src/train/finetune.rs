//! Fine-tuning a classifier, from a pre-trained backbone or from scratch.

use super::optim::{adamw, Schedule};
use super::{devices, progress, say, RunOptions};
use crate::batch::{bucketed_batches, TokenBatch};
use crate::checkpoint::{load_prefix, ModelDir, ModelKind, ModelMeta};
use crate::config::Config;
use crate::inference::{probabilities, score, Evaluation};
use crate::model::Classifier;
use crate::tasks::classify::{encode_examples, LabelSet, Problem};
use crate::text::labelled::Example;
use crate::text::tokenizer::WordPieceTokenizer;
use crate::thresholds::Thresholds;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Labels with fewer training examples than this get a warning: too rare to learn.
pub const RARE_LABEL: usize = 5;

/// Scores after one fine-tuning epoch.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
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
}

/// What a fine-tuning run produced.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// Validation loss of the model before any step (the "loss at start").
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
}

/// Fine-tunes on `train`, selects by validation micro-F1, writes the best model into `out` (when given).
#[allow(clippy::too_many_arguments)]
pub fn finetune(cfg: &Config, init: Init, tokenizer: &WordPieceTokenizer, train: &[Example], valid: &[Example], problem: Problem, out: Option<&Path>, opts: &RunOptions) -> Result<FinetuneReport> {
    let (device, plain) = devices();
    let f = &cfg.finetune;
    device.seed(f.seed);
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
    let mut model = Classifier::init(&cfg.model, labels.len(), &device).with_prior_bias(&frequencies, problem);
    let mut loaded_tensors = Vec::new();
    if let Init::Pretrained(dir) = init {
        let (m, names) = load_prefix(model, &dir.weights(), dir.meta.weights_bytes, "backbone.")?;
        model = m;
        say(opts, &format!("finetune: loaded {} pre-trained tensors from {}", names.len(), dir.path.display()));
        loaded_tensors = names;
    }
    let evaluate = |m: &Classifier| -> Evaluation {
        let probs = probabilities(&m.valid(), &valid_seqs, problem, 64, &plain);
        score(&probs, valid, &valid_gold, &labels, problem, &Thresholds::Global(f.threshold))
    };
    let initial_valid_loss = evaluate(&model).loss;

    let steps_per_epoch = enc_train.len().div_ceil(f.batch_size);
    let total = steps_per_epoch * f.epochs.max(1);
    let schedule = Schedule::new(f.lr, f.warmup_ratio, total);
    let mut optim = adamw(f.weight_decay, f.grad_clip);
    let mut rng = StdRng::seed_from_u64(f.seed);
    let lengths: Vec<usize> = enc_train.iter().map(|e| e.input_ids.len()).collect();
    let start = Instant::now();
    let (mut step, mut best, mut best_epoch, mut since_best) = (0usize, f64::NEG_INFINITY, 0usize, 0usize);
    let mut epochs = Vec::new();
    for epoch in 1..=f.epochs.max(1) {
        let batches = bucketed_batches(&lengths, f.batch_size, &mut rng);
        let mut pb = progress::Progress::new(batches.len() as u64, &format!("epoch {epoch}/{}", f.epochs), opts.quiet);
        let mut loss_sum = 0.0;
        for (i, idx) in batches.iter().enumerate() {
            let seqs: Vec<&[u32]> = idx.iter().map(|&k| enc_train[k].input_ids.as_slice()).collect();
            let gold: Vec<Vec<usize>> = idx.iter().map(|&k| enc_train[k].labels.clone()).collect();
            let logits = model.forward(&TokenBatch::new(&seqs, &device));
            let loss = Classifier::loss(logits, &gold, problem);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                bail!("fine-tuning diverged at step {} (loss {value}); lower finetune.lr", step + 1);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(schedule.lr(step), model, grads);
            step += 1;
            loss_sum += value as f64;
            pb.inc();
            if (i + 1) % 10 == 0 {
                pb.set_message(format!("loss {:.4}", loss_sum / (i + 1) as f64));
            }
        }
        pb.finish();
        let ev = evaluate(&model);
        let s = &ev.scores;
        let e = FinetuneEpoch {
            epoch,
            train_loss: loss_sum / batches.len().max(1) as f64,
            valid_loss: ev.loss,
            micro_f1: s.micro_f1,
            macro_f1: s.macro_f1,
            precision: s.micro_precision,
            recall: s.micro_recall,
            seconds: start.elapsed().as_secs_f64(),
        };
        let improved = e.micro_f1 > best;
        say(opts, &format!(
            "epoch {epoch}: train loss {:.4} | valid loss {:.4} micro-F1 {:.4} macro-F1 {:.4} P {:.4} R {:.4} | {:.0}s{}",
            e.train_loss, e.valid_loss, e.micro_f1, e.macro_f1, e.precision, e.recall, e.seconds, if improved { " *" } else { "" }
        ));
        epochs.push(e);
        if improved {
            best = epochs.last().unwrap().micro_f1;
            best_epoch = epoch;
            since_best = 0;
            if let Some(out) = out {
                let info = serde_json::json!({ "best_epoch": epoch, "epochs": &epochs, "initial_valid_loss": initial_valid_loss });
                let meta = ModelMeta::new(ModelKind::Classifier, Some(problem), f.threshold, info);
                ModelDir::write(out, cfg, tokenizer, &model.valid(), meta, Some(&labels))?;
            }
        } else {
            since_best += 1;
            if f.patience > 0 && since_best >= f.patience {
                say(opts, &format!("early stop: no micro-F1 gain for {} epochs; keeping epoch {best_epoch}", f.patience));
                break;
            }
        }
    }
    Ok(FinetuneReport { initial_valid_loss, epochs, best_epoch, loaded_tensors })
}
