//! `bertlu compare`: pre-trained vs from-scratch fine-tuning, per backbone, as tables and plots.

use super::{CommonTrain, StepArgs};
use anyhow::{bail, Result};
use bertlu::apps::compare::CompareJob;
use bertlu::config::BackboneKind;
use bertlu::data::classify::Problem;
use bertlu::store::layout::COMPARE_TABLE_FILE;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Arguments of `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Raw corpus for pre-training.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Labelled training file(s); several, comma-separated, are read as one training set.
    #[arg(long, value_delimiter = ',', required = true)]
    pub train: Vec<PathBuf>,
    /// Labelled validation file (learning-rate choice, best epoch).
    #[arg(long)]
    pub valid: PathBuf,
    /// Labelled test file, scored once with each arm's chosen model.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Output directory: compare.md, epochs.csv, compare.json, plot-BACKBONE.svg, the models.
    #[arg(long)]
    pub out: PathBuf,
    /// Fine-tuning learning rates each arm tries (comma-separated); the best on validation is kept.
    #[arg(long, value_delimiter = ',', default_value = "1e-4,3e-4,1e-3")]
    pub lr_grid: Vec<f64>,
    /// Pre-training epochs over the corpus (default: the config's).
    #[arg(long)]
    pub pretrain_epochs: Option<usize>,
    /// Stop pre-training after this many steps.
    #[arg(long)]
    pub pretrain_max_steps: Option<usize>,
    /// Wall-clock budget of each pre-training (`30m`, `2h`): every pre-trained arm gets the same
    /// time, not the same steps (see `pretrain --time-budget`).
    #[arg(long, value_parser = super::parse_duration)]
    pub pretrain_time_budget: Option<f64>,
    /// Pre-training peak learning rate (default: the config's).
    #[arg(long)]
    pub pretrain_lr: Option<f64>,
    /// Pre-training objectives, comma-separated: mlm, nsp, electra (default: the config's, mlm).
    #[arg(long, value_delimiter = ',', conflicts_with = "pretrain_arms")]
    pub pretrain_tasks: Option<Vec<bertlu::config::Objective>>,
    /// Several pre-trained arms a backbone, one an objective set, comma-separated, objectives
    /// of a set joined by '+': `mlm,electra` compares scratch, MLM and ELECTRA pre-training.
    #[arg(long, value_delimiter = ',', value_parser = parse_objectives)]
    pub pretrain_arms: Vec<Vec<bertlu::config::Objective>>,
    /// Reuse a pre-trained checkpoint instead of pre-training: BACKBONE=DIR (repeatable; several
    /// for one backbone are one pre-trained arm each).
    #[arg(long, value_parser = parse_reuse)]
    pub pretrained: Vec<(BackboneKind, PathBuf)>,
    /// Tokenizer to share (a tokenizer.json or a directory with one); trained on the corpus if absent.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Vocabulary size when one is trained.
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    /// Force the problem type (default: inferred from the training file).
    #[arg(long, value_enum)]
    pub problem: Option<Problem>,
    /// Fine-tuning epochs (every arm runs them all) and batch size; --lr is not taken (see --lr-grid).
    #[command(flatten)]
    pub steps: StepArgs,
    /// Shared training settings (--backbone takes a list here, default transformer,textcnn).
    #[command(flatten)]
    pub common: CommonTrain,
}

fn parse_objectives(s: &str) -> Result<Vec<bertlu::config::Objective>, String> {
    s.split('+').map(|t| bertlu::config::Objective::from_str(t.trim(), true).map_err(|_| format!("unknown objective '{t}' (mlm, nsp, electra)"))).collect()
}

fn parse_reuse(s: &str) -> Result<(BackboneKind, PathBuf), String> {
    let (b, dir) = s.split_once('=').ok_or_else(|| format!("expected BACKBONE=DIR, got '{s}'"))?;
    let kind = BackboneKind::from_str(b, true).map_err(|_| format!("unknown backbone '{b}' (transformer or textcnn)"))?;
    Ok((kind, PathBuf::from(dir)))
}

/// Runs `compare`.
pub fn run(a: CompareArgs) -> Result<()> {
    if a.steps.lr.is_some() {
        bail!("compare chooses each arm's learning rate from --lr-grid; --lr does not apply");
    }
    if a.lr_grid.iter().any(|&lr| !(lr > 0.0 && lr.is_finite())) {
        bail!("--lr-grid values must be positive");
    }
    // --backbone is a list here: each arm's backbone is set (and checked) below
    let mut base = a.common.preset_and_file()?;
    {
        // --lr is refused above: each arm's rate comes from --lr-grid
        a.steps.apply(&mut base.finetune.optim, &a.common);
        if let Some(s) = a.common.seed {
            base.pretrain.optim.seed = s;
        }
        // the products' precision holds for the pre-training arms as for the fine-tuning
        if let Some(precision) = a.steps.precision {
            base.pretrain.optim.precision = precision;
        }
        let p = &mut base.pretrain;
        if let Some(v) = a.pretrain_epochs {
            p.optim.epochs = v;
        }
        if let Some(v) = a.pretrain_max_steps {
            p.max_steps = v;
        }
        if let Some(v) = a.pretrain_time_budget {
            p.time_budget = v;
        }
        if let Some(v) = a.pretrain_lr {
            p.optim.lr = v;
        }
        if let Some(tasks) = &a.pretrain_tasks {
            p.set_tasks(tasks);
        }
    }
    a.common.cap(&mut base);
    let job = CompareJob {
        corpus: a.corpus.clone(),
        train: a.train.clone(),
        valid: a.valid.clone(),
        test: a.test.clone(),
        out: a.out.clone(),
        backbones: if a.common.backbone.is_empty() { vec![BackboneKind::Transformer, BackboneKind::TextCnn] } else { a.common.backbone.clone() },
        lr_grid: a.lr_grid.clone(),
        reuse: a.pretrained.clone(),
        objectives: a.pretrain_arms.clone(),
        reused_model: bertlu::apps::setup::ConfigSources { preset: None, backbone: None, file: a.common.config.clone(), settings: a.common.set.clone() },
        vocab: a.vocab.clone(),
        vocab_size: a.vocab_size,
        problem: a.problem,
        bad_lines: a.common.bad_lines(),
        test_mode: a.common.test_mode,
        overwrite: a.common.overwrite,
        options: a.common.run_options(),
    };
    let dir = bertlu::apps::compare::run(base, &job)?;
    println!("\n{}", std::fs::read_to_string(dir.join(COMPARE_TABLE_FILE))?);
    println!("written to {}: {COMPARE_TABLE_FILE}, epochs.csv, compare.json, plot-*.svg, pretrained-*/ and runs/*/ models", dir.display());
    Ok(())
}
