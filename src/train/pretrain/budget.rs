//! `pretrain.time_budget`: the steps and epochs that fit in a wall-clock budget, from training
//! steps timed on held-out batches.

use super::super::{optim::adamw, say, RunOptions};
use super::{batch_of, forward};
use crate::config::Config;
use crate::data::mlm::MlmExample;
use crate::model::PretrainModel;
use crate::store::checkpoints;
use crate::text::tokenizer::SpecialIds;
use anyhow::{bail, Result};
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::path::Path;
use std::time::Instant;

/// Training steps timed to fit a time budget (after two untimed ones), spread over the lengths
/// of the held-out sequences: the mean of steps on short, middling and long batches is the mean
/// step of an epoch, whose batches are grouped by length too.
const BUDGET_PROBE_STEPS: usize = 6;

/// `cfg` with `max_steps` and `epochs` set to what fits in the rest of `pretrain.time_budget`
/// (measured from `started`, the corpus pass included; a `max_steps` already set still caps it): the steps that fit at the step time
/// measured on held-out batches of a fresh model, less the held-out scoring at each epoch's end
/// (and before the first step when `scored_first`: a continued pre-training scores its start).
/// A resumed run takes both from its checkpoint instead, so it continues the same schedule.
#[allow(clippy::too_many_arguments)]
pub(super) fn fit_budget(cfg: &Config, out: &Path, opts: &RunOptions, valid: &[MlmExample], valid_next: &[Option<bool>], specials: SpecialIds, steps_per_epoch: usize, scored_first: bool, started: Instant, device: &Device) -> Result<Config> {
    let mut fitted = cfg.clone();
    if opts.resume {
        if let Some(ckpt) = checkpoints::latest(out)? {
            let saved = Config::load(&ckpt.join(crate::store::layout::CONFIG_FILE))?;
            fitted.pretrain.max_steps = saved.pretrain.max_steps;
            fitted.pretrain.optim.epochs = saved.pretrain.optim.epochs;
        }
        return Ok(fitted);
    }
    let p = &cfg.pretrain;
    if valid.is_empty() {
        bail!("pretrain.time_budget: the corpus has no held-out sequence to measure a step on (too small for pretrain.valid_fraction?)");
    }
    let step = probe_step_seconds(cfg, valid, valid_next, specials, device)?;
    // scoring the held-out sequences: a forward pass, about a third of a training step a batch
    let scoring = valid.len().div_ceil(p.optim.batch_size) as f64 * step / 3.0;
    let left = p.time_budget - started.elapsed().as_secs_f64();
    let mut steps = (left / step).floor().max(0.0) as usize;
    let scorings = steps.div_ceil(steps_per_epoch).max(1) + usize::from(scored_first);
    steps = ((left - scorings as f64 * scoring) / step).floor().max(0.0) as usize;
    if steps == 0 {
        bail!("pretrain.time_budget {}: no time left to train ({:.1} s went to reading the corpus, one step takes {step:.2} s)", seconds_text(p.time_budget), started.elapsed().as_secs_f64());
    }
    if p.max_steps > 0 {
        steps = steps.min(p.max_steps);
    }
    let epochs = steps.div_ceil(steps_per_epoch);
    fitted.pretrain.max_steps = steps;
    fitted.pretrain.optim.epochs = epochs;
    say(opts, &format!("pretrain: time budget {}: {steps} steps fit ({epochs} epoch(s) of {steps_per_epoch}; {step:.3} s a step, measured on held-out batches); without a budget this run is --epochs {epochs} --max-steps {steps}", seconds_text(p.time_budget)));
    Ok(fitted)
}

/// Mean seconds of a training step (forward, backward, AdamW) of a fresh model on
/// [`BUDGET_PROBE_STEPS`] held-out batches taken across the range of lengths.
fn probe_step_seconds(cfg: &Config, valid: &[MlmExample], valid_next: &[Option<bool>], specials: SpecialIds, device: &Device) -> Result<f64> {
    let p = &cfg.pretrain;
    let mut order: Vec<usize> = (0..valid.len()).collect();
    order.sort_by_key(|&i| valid[i].input_ids.len());
    let size = p.optim.batch_size.min(order.len());
    let batch = |k: usize| {
        // the batch around quantile (k + ½) / steps of the lengths
        let start = ((order.len() - size) * (2 * k + 1)) / (2 * BUDGET_PROBE_STEPS);
        let picked = &order[start..start + size];
        let examples: Vec<MlmExample> = picked.iter().map(|&i| valid[i].clone()).collect();
        let next: Vec<Option<bool>> = picked.iter().map(|&i| valid_next[i]).collect();
        batch_of(&examples, &next, specials, device)
    };
    let mut model = PretrainModel::init_for(cfg, device);
    let mut optim = adamw(p.optim.weight_decay, p.optim.grad_clip);
    let mut step = |model: PretrainModel, k: usize| {
        let loss = forward(&model, &batch(k), p, specials, k as u64).loss();
        // read as a real step reads it
        let _: f32 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(p.optim.lr, model, grads)
    };
    for k in [BUDGET_PROBE_STEPS / 2, BUDGET_PROBE_STEPS - 1] {
        model = step(model, k);
    }
    let timer = Instant::now();
    for k in 0..BUDGET_PROBE_STEPS {
        model = step(model, k);
    }
    drop(model);
    Ok(timer.elapsed().as_secs_f64() / BUDGET_PROBE_STEPS as f64)
}

/// A duration for the log: `90 s`, `30 min`, `2 h 15 min`.
pub(super) fn seconds_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}
