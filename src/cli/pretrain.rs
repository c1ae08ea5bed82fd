//! `bertlu pretrain`: pre-training (masked LM, next-sentence prediction).

use super::{CommonTrain, StepArgs};
use anyhow::{Context, Result};
use bertlu::apps::pretrain::{open_pretrained, PretrainJob};
use bertlu::apps::setup::test_mode;
use bertlu::config::{Config, Objective};
use bertlu::store::model_dir::ModelDir;
use bertlu::text::tokenizer::VocabOptions;
use bertlu::train::pretrain::PretrainEpoch;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `pretrain`.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Raw corpus (.txt or .txt.gz), one document a line or blank-line-separated documents.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Tokenizer to use (a tokenizer.json or a directory with one); trained on the corpus if absent.
    #[arg(long, conflicts_with = "init")]
    pub vocab: Option<PathBuf>,
    /// Continue pre-training a pre-trained model (e.g. on a corpus of your own domain): its
    /// weights, vocabulary and config are the start; the optimiser and the learning-rate
    /// schedule (warmup, decay over this run's steps) start afresh.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Size of the vocabulary trained when --vocab is absent.
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    /// Keep case when training the vocabulary (default: lower-case).
    #[arg(long)]
    pub cased: bool,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Wall-clock budget of the whole run (`30m`, `2h`, `900` seconds): the steps that fit are
    /// measured before training (a few steps on held-out batches) and replace --epochs
    /// (--max-steps still caps them); warm-up and decay span the budget. The log gives the equivalent
    /// `--epochs E --max-steps N`, which repeats the run exactly.
    #[arg(long, value_parser = super::parse_duration)]
    pub time_budget: Option<f64>,
    /// Keep the model of every epoch as `epochs/epoch-N/` in the output directory, not only the last.
    #[arg(long)]
    pub keep_epochs: bool,
    /// Whole-word masking: mask all word pieces of a chosen word together.
    #[arg(long)]
    pub whole_word_mask: bool,
    /// With --whole-word-mask: words (one a line, e.g. Chinese) whose characters are masked together.
    #[arg(long, requires = "whole_word_mask")]
    pub word_list: Option<PathBuf>,
    /// Objectives trained together, comma-separated: mlm, nsp, electra (default: the config's,
    /// mlm). nsp splits documents into sentences (at `. ! ?` and `。！？`, or one sentence a line
    /// in the blank-line-separated layout) and trains on sentence pairs. electra (instead of
    /// mlm) trains a small generator as the masked LM and the model to spot the word pieces the
    /// generator put in, at every position: more signal a step than mlm, but its gains need long
    /// pre-training (at the CPU budgets measured, up to 30 minutes on 2 cores, mlm gained more;
    /// see docs/results.md).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<Objective>>,
    /// With nsp: share of pairs built shorter than max_len (default 0.1).
    #[arg(long)]
    pub short_seq_prob: Option<f64>,
    /// With electra: the generator's width as a share of the model's (default 0.25).
    #[arg(long)]
    pub generator_size: Option<f64>,
    /// With electra: weight of the replaced-token loss against the generator's loss (default 50).
    #[arg(long)]
    pub rtd_weight: Option<f64>,
    /// Epochs, learning rate, batch size.
    #[command(flatten)]
    pub steps: StepArgs,
    /// Shared training settings.
    #[command(flatten)]
    pub common: CommonTrain,
}

/// Applies the command-line overrides to a config.
fn configure(a: &PretrainArgs, base: Option<&ModelDir>) -> Result<Config> {
    let mut cfg = a.common.config(base)?;
    let p = &mut cfg.pretrain;
    a.steps.apply(&mut p.optim, &a.common);
    if let Some(v) = a.max_steps {
        p.max_steps = v;
    }
    if let Some(v) = a.time_budget {
        p.time_budget = v;
    }
    if a.whole_word_mask {
        p.whole_word_mask = true;
    }
    if a.keep_epochs {
        p.keep_epochs = true;
    }
    if let Some(tasks) = &a.tasks {
        p.set_tasks(tasks);
    }
    // a continued model keeps the heads this run does not train (a fresh one has none)
    match base {
        Some(init) => p.keep_heads_of(&init.config.pretrain),
        None => p.kept_heads.clear(),
    }
    if let Some(v) = a.short_seq_prob {
        p.short_seq_prob = v;
    }
    if let Some(v) = a.generator_size {
        p.generator_size = v;
    }
    if let Some(v) = a.rtd_weight {
        p.rtd_weight = v;
    }
    if let Some(w) = &a.word_list {
        p.word_list = std::fs::canonicalize(w).with_context(|| format!("{}: cannot open the word list", w.display()))?.display().to_string();
    }
    a.common.cap(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `pretrain`.
pub fn run(a: PretrainArgs) -> Result<()> {
    let init = a.init.as_deref().map(open_pretrained).transpose().context("--init")?;
    let cfg = configure(&a, init.as_ref())?;
    let job = PretrainJob {
        corpus: a.corpus.clone(),
        out: a.out.clone(),
        init,
        vocab: a.vocab.clone(),
        vocab_options: VocabOptions { size: a.vocab_size, lowercase: !a.cased, ..Default::default() },
        bad_lines: a.common.bad_lines(),
        max_docs: a.common.test_mode.then_some(test_mode::DOCS),
        overwrite: a.common.overwrite,
        options: a.common.run_options(),
    };
    let (log, dir) = bertlu::apps::pretrain::run(cfg, &job)?;
    print_summary(&log, &dir, a.common.json_logs);
    Ok(())
}

fn print_summary(log: &[PretrainEpoch], dir: &std::path::Path, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "event": "done", "dir": dir, "epochs": log }));
    } else if let Some(e) = log.last() {
        let mut scores = Vec::new();
        if !e.valid_accuracy.is_nan() {
            scores.push(format!("valid loss {:.4}, masked-token accuracy {:.4}", e.valid_loss, e.valid_accuracy));
        }
        if let (Some(l), Some(acc)) = (e.nsp_valid_loss, e.nsp_valid_accuracy) {
            scores.push(format!("next-sentence loss {l:.4}, accuracy {acc:.4}"));
        }
        println!("pre-trained model written to {} ({} steps, {}, {:.0}s)", dir.display(), e.steps, scores.join(", "), e.seconds);
    }
}
