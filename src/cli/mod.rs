//! The command line: one file per subcommand, each thin (parse, call the library, print).

pub mod compare;
pub mod demo;
pub mod ensemble;
pub mod eval;
pub mod finetune;
pub mod linear;
pub mod predict;
pub mod pretrain;
pub mod pseudo_label;
pub mod toy;
pub mod bench;
pub mod report;
pub mod tune;
pub mod vocab;

use anyhow::{bail, Context, Result};
use bertlu::config::{BackboneKind, Config, Preset};
use bertlu::tasks::classify::{check_problem, Problem};
use bertlu::text::labelled::{read_examples_with, Example};
use bertlu::text::tokenizer::{WordPieceTokenizer, TOKENIZER_FILE};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

/// Pre-train a text encoder on raw text, fine-tune it into text classifiers.
#[derive(Parser, Debug)]
#[command(name = "bertlu", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a WordPiece vocabulary on a corpus.
    Vocab(vocab::VocabArgs),
    /// Masked-LM pre-training on a raw corpus.
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune a classifier (from a pre-trained model with --init, else from scratch).
    Finetune(finetune::FinetuneArgs),
    /// Train the TF-IDF + linear SVM classifier (a bag-of-words baseline and ensemble member).
    Linear(linear::LinearArgs),
    /// Score a classifier on a labelled file.
    Eval(eval::EvalArgs),
    /// Predict labels for text lines, in fastText's __label__ format.
    Predict(predict::PredictArgs),
    /// Per backbone: pre-train, fine-tune from scratch and from the pre-trained weights, tabulate and plot.
    Compare(compare::CompareArgs),
    /// Pre-train and fine-tune a tiny model on the embedded Debtags slice; compare with scratch.
    Demo(demo::DemoArgs),
    /// Average the probabilities of several fine-tuned classifiers of one label set: one model.
    Ensemble(ensemble::EnsembleArgs),
    /// Label the unlabelled documents of a corpus with a classifier (or ensemble): a labelled file to fine-tune on (self-training).
    PseudoLabel(pseudo_label::PseudoLabelArgs),
    /// Tune the decision thresholds (one shared, or one a label) on validation data and store them with the model.
    TuneThresholds(tune::TuneArgs),
    /// Curves (report.svg) and a Markdown summary (report.md) of a pretrain or finetune run.
    Report(report::ReportArgs),
    /// Speed (median, range) and peak memory of training steps and inference on synthetic batches.
    Bench(bench::BenchArgs),
    /// The digit-sum sanity task: proves a backbone and the training loop learn.
    Toy(toy::ToyArgs),
}

/// Step settings both training loops take; each overrides the config's value when given.
#[derive(Args, Debug, Clone)]
pub struct StepArgs {
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Examples (sequences) a batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

impl StepArgs {
    /// Writes the given values over a config section's.
    pub fn apply(&self, epochs: &mut usize, lr: &mut f64, batch_size: &mut usize, seed: &mut u64, common: &CommonTrain) {
        if let Some(v) = self.epochs {
            *epochs = v;
        }
        if let Some(v) = self.lr {
            *lr = v;
        }
        if let Some(v) = self.batch_size {
            *batch_size = v;
        }
        if let Some(v) = common.seed {
            *seed = v;
        }
    }
}

/// The files of a classifier's training run (`finetune`, `linear`).
#[derive(Args, Debug, Clone)]
pub struct ClassifierFiles {
    /// Labelled training file(s) (.txt or .txt.gz): `text __label__a __label__b`; several,
    /// comma-separated, are read as one training set (e.g. real and pseudo-labelled examples).
    #[arg(long, value_delimiter = ',', required = true)]
    pub train: Vec<PathBuf>,
    /// Labelled validation file: model selection and early stopping (`finetune`), the margin →
    /// probability curve (`linear`), and the thresholds with --tune-thresholds.
    #[arg(long)]
    pub valid: PathBuf,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Settings every training subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct CommonTrain {
    /// Model size preset (default: small; with `finetune --init`, the pre-trained model's).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Backbone architecture (default: the config's, transformer; with `finetune --init`, the
    /// pre-trained model's). `compare` takes a comma-separated list.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backbone: Vec<BackboneKind>,
    /// TOML file overriding preset values ([model], [pretrain], [finetune] sections).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Random seed (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replace an existing output directory (only once the run has succeeded).
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Try ideas fast: a small slice of the data (2,000 documents, 1,000 training and 300
    /// validation/test examples), at most 100 pre-training steps and 2 fine-tuning epochs.
    #[arg(long)]
    pub test_mode: bool,
    /// Skip unusable lines of the input files (invalid UTF-8, NUL bytes, no label, no text) with a
    /// warning that counts them, instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// One JSON object a line on stdout (events "message", "epoch", "done") instead of text; no progress bars.
    #[arg(long)]
    pub json_logs: bool,
    /// Continue the interrupted run (killed, crashed or stopped with Ctrl-C) whose output is
    /// --out, from its newest checkpoint; give the same command and files as the first time.
    #[arg(long)]
    pub resume: bool,
    /// Write a training-state checkpoint every N optimiser steps (also at each epoch end; 0: epoch ends only).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// How many checkpoints to keep (the newest).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
}

/// What `--test-mode` keeps.
pub mod test_mode {
    /// Corpus documents.
    pub const DOCS: usize = 2000;
    /// Training examples.
    pub const TRAIN: usize = 1000;
    /// Validation and test examples.
    pub const EVAL: usize = 300;
    /// Pre-training steps.
    pub const PRETRAIN_STEPS: usize = 100;
    /// Fine-tuning epochs.
    pub const EPOCHS: usize = 2;
}

impl CommonTrain {
    /// What readers do with bad lines.
    pub fn bad_lines(&self) -> bertlu::text::reader::BadLines {
        if self.skip_bad_lines {
            bertlu::text::reader::BadLines::Skip
        } else {
            bertlu::text::reader::BadLines::Fail
        }
    }

    /// The loop options these flags ask for.
    pub fn run_options(&self) -> bertlu::train::RunOptions {
        bertlu::train::RunOptions {
            quiet: self.quiet,
            checkpoints: bertlu::train::resume::CheckpointPolicy { every: self.checkpoint_every, keep: self.keep_checkpoints.max(1) },
            resume: self.resume,
            json_logs: self.json_logs,
        }
    }

    /// The output directory: a fresh one, or with --resume the interrupted run's.
    pub fn output(&self, out: &std::path::Path) -> Result<bertlu::checkpoint::OutputDir> {
        if self.resume {
            bertlu::checkpoint::OutputDir::resume(out)
        } else {
            bertlu::checkpoint::OutputDir::create(out, self.overwrite)
        }
    }

    /// The one backbone a pretrain/finetune run takes (None: the config's).
    pub fn single_backbone(&self) -> Result<Option<BackboneKind>> {
        match self.backbone.as_slice() {
            [] => Ok(None),
            [b] => Ok(Some(*b)),
            _ => bail!("--backbone takes one value here (a list is for `compare`)"),
        }
    }

    /// Keeps the first `n` items under `--test-mode`.
    pub fn cut<T>(&self, items: &mut Vec<T>, n: usize) {
        if self.test_mode {
            items.truncate(n);
        }
    }

    /// Caps steps and epochs under `--test-mode`; call after every other override.
    pub fn cap(&self, cfg: &mut Config) {
        if self.test_mode {
            let p = &mut cfg.pretrain;
            p.max_steps = if p.max_steps == 0 { test_mode::PRETRAIN_STEPS } else { p.max_steps.min(test_mode::PRETRAIN_STEPS) };
            cfg.finetune.epochs = cfg.finetune.epochs.min(test_mode::EPOCHS);
            eprintln!("test mode: at most {} documents, {} training / {} validation examples, {} pre-training steps, {} epochs", test_mode::DOCS, test_mode::TRAIN, test_mode::EVAL, cfg.pretrain.max_steps, cfg.finetune.epochs);
        }
    }

    /// The config of a run that starts from the model in `dir`: that model's, with the TOML
    /// file's [pretrain] / [finetune] settings over it. The shape comes from the weights being
    /// loaded, so `--preset`, another `--backbone` or a [model] change other than dropout is refused.
    pub fn config_from(&self, dir: &bertlu::checkpoint::ModelDir) -> Result<Config> {
        if self.preset.is_some() {
            bail!("--preset does not apply with --init: the model comes from {}", dir.path.display());
        }
        if self.single_backbone()?.is_some_and(|b| b != dir.config.model.backbone) {
            bail!("--backbone differs from the pre-trained model's ({}) in {}", dir.config.model.backbone, dir.path.display());
        }
        let mut cfg = dir.config.clone();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
            cfg = cfg.merged(&text).with_context(|| format!("{}", path.display()))?;
            // Dropout and pooling shape no weight, so they may differ from the pre-trained model's.
            let mut shape = cfg.model.clone();
            shape.dropout = dir.config.model.dropout;
            shape.pooling = dir.config.model.pooling;
            if shape != dir.config.model {
                bail!("{}: [model] differs from the pre-trained model in {} (only dropout and pooling may change)", path.display(), dir.path.display());
            }
        }
        Ok(cfg)
    }

    /// The preset with the --config file over it, before any backbone is chosen.
    pub fn preset_and_file(&self) -> Result<Config> {
        Config::from_preset_and_file(self.preset.unwrap_or(Preset::Small), self.config.as_deref())
    }

    /// The preset with the TOML file applied.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = self.preset_and_file()?;
        if let Some(b) = self.single_backbone()? {
            cfg.model.backbone = b;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The `--train` files of a fine-tuning run, read as one training set (cut under `--test-mode`),
/// with the problem type given or inferred; each file is checked against it on its own, so an
/// error names the file.
pub fn read_training(paths: &[PathBuf], common: &CommonTrain, problem: Option<Problem>) -> Result<(Vec<Example>, Problem)> {
    read_training_files(paths, common.bad_lines(), problem, |train| common.cut(train, test_mode::TRAIN))
}

/// [`read_training`] with the bad-line policy given and `cut` applied to the whole set.
pub fn read_training_files(paths: &[PathBuf], policy: bertlu::text::reader::BadLines, problem: Option<Problem>, cut: impl FnOnce(&mut Vec<Example>)) -> Result<(Vec<Example>, Problem)> {
    let (mut train, mut ends) = (Vec::new(), Vec::new());
    for path in paths {
        train.extend(read_examples_with(path, policy)?);
        ends.push(train.len());
    }
    cut(&mut train);
    let problem = problem.unwrap_or_else(|| Problem::infer(&train));
    let mut start = 0;
    for (path, &end) in paths.iter().zip(&ends) {
        let end = end.min(train.len());
        check_problem(problem, &train[start..end], &path.display().to_string())?;
        start = end;
    }
    Ok((train, problem))
}

/// Refuses a `--threshold` outside [0, 1]: no probability compares with it meaningfully.
pub fn check_threshold(threshold: Option<f64>) -> Result<()> {
    match threshold {
        Some(t) if !(0.0..=1.0).contains(&t) => bail!("--threshold must be in [0, 1] (got {t})"),
        _ => Ok(()),
    }
}

/// Loads a tokenizer from a `tokenizer.json` or a directory that holds one.
pub fn load_tokenizer(path: &Path) -> Result<WordPieceTokenizer> {
    let file = if path.is_dir() { path.join(TOKENIZER_FILE) } else { path.to_path_buf() };
    if !file.exists() {
        bail!("{}: no tokenizer here (expected {TOKENIZER_FILE})", path.display());
    }
    WordPieceTokenizer::load(&file)
}

/// With --resume, the tokenizer the interrupted run saved with its newest checkpoint.
pub fn resumed_tokenizer(common: &CommonTrain, out: &bertlu::checkpoint::OutputDir) -> Result<Option<WordPieceTokenizer>> {
    if !common.resume {
        return Ok(None);
    }
    match bertlu::train::resume::latest(out.path())? {
        Some(ckpt) => Ok(Some(bertlu::train::resume::checkpoint_tokenizer(&ckpt)?)),
        None => bail!("{}: no checkpoint to resume from", out.path().display()),
    }
}

/// How a training call ended, for run.json.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "finished".into(),
        Err(e) => format!("{e:#}"),
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Vocab(a) => vocab::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Linear(a) => linear::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Toy(a) => toy::run(a),
        Command::TuneThresholds(a) => tune::run(a),
        Command::Ensemble(a) => ensemble::run(a),
        Command::PseudoLabel(a) => pseudo_label::run(a),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
