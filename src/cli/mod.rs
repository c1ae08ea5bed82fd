//! The command line: one file per subcommand, each thin (parse, call the library, print).

pub mod demo;
pub mod eval;
pub mod finetune;
pub mod predict;
pub mod pretrain;
pub mod toy;
pub mod vocab;

use anyhow::{bail, Result};
use bertlu::config::{BackboneKind, Config, Preset};
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
    /// Score a classifier on a labelled file.
    Eval(eval::EvalArgs),
    /// Predict labels for text lines, in fastText's __label__ format.
    Predict(predict::PredictArgs),
    /// Pre-train and fine-tune a tiny model on the embedded Debtags slice; compare with scratch.
    Demo(demo::DemoArgs),
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

/// Settings every training subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct CommonTrain {
    /// Model size preset (default: small; with `finetune --init`, the pre-trained model's).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Backbone architecture (default: the config's, transformer; with `finetune --init`, the pre-trained model's).
    #[arg(long, value_enum)]
    pub backbone: Option<BackboneKind>,
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
}

impl CommonTrain {
    /// The preset with the TOML file applied.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = Config::from_preset_and_file(self.preset.unwrap_or(Preset::Small), self.config.as_deref())?;
        if let Some(b) = self.backbone {
            cfg.model.backbone = b;
        }
        cfg.validate()?;
        Ok(cfg)
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

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Vocab(a) => vocab::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Toy(a) => toy::run(a),
    }
}
