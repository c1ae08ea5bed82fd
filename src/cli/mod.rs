//! The command line: one file per subcommand, each thin (parse, call the library, print).

pub mod compare;
pub mod demo;
pub mod embed;
pub mod export_hf;
pub mod ensemble;
pub mod average;
pub mod eval;
pub mod finetune;
pub mod import_hf;
pub mod linear;
pub mod predict;
pub mod pretrain;
pub mod pseudo_label;
pub mod toy;
pub mod bench;
pub mod report;
pub mod serve;
pub mod tune;
pub mod vocab;

use anyhow::{bail, Result};
use bertlu::apps::setup::{self, test_mode, ConfigSources};
use bertlu::config::{BackboneKind, Config, OptimConfig, Preset};
use bertlu::data::classify::Problem;
use bertlu::store::checkpoints::CheckpointPolicy;
use bertlu::store::model_dir::ModelDir;
use bertlu::text::labelled::Example;
use bertlu::text::reader::BadLines;
use bertlu::train::RunOptions;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Pre-train on a raw corpus: masked LM or ELECTRA, optionally next-sentence prediction.
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune a classifier (from a pre-trained model with --init, else from scratch).
    Finetune(finetune::FinetuneArgs),
    /// Write a Transformer (pre-trained or classifier) as a HuggingFace BERT checkpoint.
    ExportHf(export_hf::ExportHfArgs),
    /// One vector a text line (pooled backbone states), as JSON lines or .npy.
    Embed(embed::EmbedArgs),
    /// Import a HuggingFace BERT checkpoint (config.json, model.safetensors, tokenizer) as a pre-trained model.
    ImportHf(import_hf::ImportHfArgs),
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
    /// Average the weights of several fine-tuned classifiers of one architecture (e.g. a run's last epochs): one model.
    Average(average::AverageArgs),
    /// Label the unlabelled documents of a corpus with a classifier (or ensemble): a labelled file to fine-tune on (self-training).
    PseudoLabel(pseudo_label::PseudoLabelArgs),
    /// Serve a model over HTTP: /v1/predict, /v1/embed, /v1/model, /health, /metrics (dynamic batching).
    Serve(serve::ServeArgs),
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
    /// Number format of the matrix products' inputs: f32, or bf16 (mixed precision, AVX-512 BF16 CPUs).
    #[arg(long, value_enum)]
    pub precision: Option<bertlu::config::Precision>,
}

/// A wall-clock duration on the command line: seconds, or a number with `s`, `m`/`min` or
/// `h` (`90`, `45s`, `30m`, `1.5h`).
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown unit '{u}' (use s, m or h, e.g. 30m)")),
    };
    match number.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x * scale),
        _ => Err(format!("'{text}' is not a positive duration (e.g. 90s, 30m, 2h)")),
    }
}

impl StepArgs {
    /// Writes the given values (and `--seed`) over a config section's optimiser settings.
    pub fn apply(&self, optim: &mut OptimConfig, common: &CommonTrain) {
        if let Some(v) = self.epochs {
            optim.epochs = v;
        }
        if let Some(v) = self.lr {
            optim.lr = v;
        }
        if let Some(v) = self.batch_size {
            optim.batch_size = v;
        }
        if let Some(v) = self.precision {
            optim.precision = v;
        }
        if let Some(v) = common.seed {
            optim.seed = v;
        }
    }
}

/// The files of a classifier's training run (`finetune`, `linear`).
/// How prediction reads texts and runs its products (`predict`, `eval`, `embed`, `serve`).
#[derive(Args, Debug, Clone, Copy)]
pub struct PredictionOptions {
    /// Number format of the matrix products' inputs: f32, or bf16 (f32 sums; faster on CPUs with
    /// AVX-512 BF16; probabilities move by bf16's rounding, about 1e-3, so a label near its
    /// threshold can change).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: bertlu::config::Precision,
    /// Cut texts at this many pieces instead of the model's `max_len` (up to a Transformer's
    /// position table: 512 for an imported BERT; e.g. to read whole the texts training cut).
    #[arg(long)]
    pub max_len: Option<usize>,
}

impl PredictionOptions {
    /// The precision asked for; says on stderr when bf16 was asked of a CPU without the
    /// instructions (it then predicts in f32).
    pub fn checked(self, task: &str) -> bertlu::config::Precision {
        if let Some(note) = bertlu::model::kernels::bf16_unavailable(self.precision, task, "predicting") {
            eprintln!("{note}");
        }
        self.precision
    }
}

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
    /// One setting over the preset and the --config file, as SECTION.KEY=VALUE (repeatable),
    /// e.g. `--set model.dropout=0.2 --set finetune.asl_gamma_neg=2`.
    #[arg(long, value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
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

impl CommonTrain {
    /// What readers do with bad lines.
    pub fn bad_lines(&self) -> BadLines {
        if self.skip_bad_lines {
            BadLines::Skip
        } else {
            BadLines::Fail
        }
    }

    /// The loop options these flags ask for.
    pub fn run_options(&self) -> RunOptions {
        RunOptions { quiet: self.quiet, checkpoints: CheckpointPolicy { every: self.checkpoint_every, keep: self.keep_checkpoints.max(1) }, resume: self.resume, json_logs: self.json_logs }
    }

    /// The one backbone a pretrain/finetune run takes (None: the config's).
    pub fn single_backbone(&self) -> Result<Option<BackboneKind>> {
        match self.backbone.as_slice() {
            [] => Ok(None),
            [b] => Ok(Some(*b)),
            _ => bail!("--backbone takes one value here (a list is for `compare`)"),
        }
    }

    /// Where the config comes from (`compare` sets each arm's backbone itself).
    pub fn sources(&self) -> Result<ConfigSources> {
        Ok(ConfigSources { preset: self.preset, backbone: self.single_backbone()?, file: self.config.clone(), settings: self.set.clone() })
    }

    /// The preset with the --config file and --set over it, before any backbone is chosen
    /// (`compare` takes a list of backbones and sets each arm's).
    pub fn preset_and_file(&self) -> Result<Config> {
        ConfigSources { preset: self.preset, backbone: None, file: self.config.clone(), settings: self.set.clone() }.preset_and_file()
    }

    /// Keeps the first `n` items under `--test-mode`.
    pub fn cut<T>(&self, items: &mut Vec<T>, n: usize) {
        test_mode::cut(self.test_mode, items, n);
    }

    /// Caps steps and epochs under `--test-mode`; call after every other override.
    pub fn cap(&self, cfg: &mut Config) {
        if self.test_mode {
            test_mode::cap(cfg);
        }
    }

    /// The config of a run from scratch (`init` None) or from the model in `init`.
    pub fn config(&self, init: Option<&ModelDir>) -> Result<Config> {
        match init {
            None => self.sources()?.fresh(),
            Some(dir) => self.sources()?.from_model(dir),
        }
    }
}

/// The `--train` files of a fine-tuning run, read as one training set (cut under `--test-mode`),
/// with the problem type given or inferred.
pub fn read_training(paths: &[PathBuf], common: &CommonTrain, problem: Option<Problem>) -> Result<(Vec<Example>, Problem)> {
    setup::read_training_files(paths, common.bad_lines(), problem, |train| common.cut(train, test_mode::TRAIN))
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Vocab(a) => vocab::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::ImportHf(a) => import_hf::run(a),
        Command::Embed(a) => embed::run(a),
        Command::ExportHf(a) => export_hf::run(a),
        Command::Linear(a) => linear::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Toy(a) => toy::run(a),
        Command::TuneThresholds(a) => tune::run(a),
        Command::Ensemble(a) => ensemble::run(a),
        Command::Average(a) => average::run(a),
        Command::PseudoLabel(a) => pseudo_label::run(a),
        Command::Report(a) => report::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_in_seconds() {
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("45s"), Ok(45.0));
        assert_eq!(parse_duration("30m"), Ok(1800.0));
        assert_eq!(parse_duration("2 min"), Ok(120.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-3m").is_err());
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit 'd'"));
        assert!(parse_duration("m").is_err());
    }
}
