//! What every training command settles before it trains, in one place: the config (a preset, a
//! TOML file and `--set` overrides, or a pre-trained model's), the training files, the tokenizer
//! and the output directory.

use crate::config::{BackboneKind, Config, Preset};
use crate::data::classify::{check_problem, Problem};
use crate::store::checkpoints;
use crate::store::layout::TOKENIZER_FILE;
use crate::store::model_dir::ModelDir;
use crate::store::output_dir::OutputDir;
use crate::text::labelled::{read_examples_with, Example};
use crate::text::reader::BadLines;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `--test-mode` keeps: enough to try an idea in minutes.
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

    /// Keeps the first `n` of `items` when test mode is `on`.
    pub fn cut<T>(on: bool, items: &mut Vec<T>, n: usize) {
        if on {
            items.truncate(n);
        }
    }

    /// Caps pre-training steps and fine-tuning epochs; call after every other override.
    pub fn cap(cfg: &mut crate::config::Config) {
        let p = &mut cfg.pretrain;
        p.max_steps = if p.max_steps == 0 { PRETRAIN_STEPS } else { p.max_steps.min(PRETRAIN_STEPS) };
        cfg.finetune.optim.epochs = cfg.finetune.optim.epochs.min(EPOCHS);
        eprintln!("test mode: at most {DOCS} documents, {TRAIN} training / {EVAL} validation examples, {} pre-training steps, {} epochs", cfg.pretrain.max_steps, cfg.finetune.optim.epochs);
    }
}

/// Where a run's settings come from, beside the subcommand's own flags.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// `--preset` (default small).
    pub preset: Option<Preset>,
    /// `--backbone`, when one was given.
    pub backbone: Option<BackboneKind>,
    /// `--config FILE.toml`.
    pub file: Option<PathBuf>,
    /// `--set section.key=value`, applied after the file.
    pub settings: Vec<String>,
}

impl ConfigSources {
    /// The preset with the TOML file and the settings over it, before any backbone is chosen.
    pub fn preset_and_file(&self) -> Result<Config> {
        let cfg = Config::from_preset_and_file(self.preset.unwrap_or(Preset::Small), self.file.as_deref())?;
        if self.settings.is_empty() {
            return Ok(cfg);
        }
        let cfg = cfg.with_settings(&self.settings)?;
        cfg.validate().context("--set")?;
        Ok(cfg)
    }

    /// The config of a run from scratch: [`ConfigSources::preset_and_file`] with the backbone.
    pub fn fresh(&self) -> Result<Config> {
        let mut cfg = self.preset_and_file()?;
        if let Some(b) = self.backbone {
            cfg.model.backbone = b;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config of a run that starts from the model in `dir`: that model's, with the TOML
    /// file's and the settings' [pretrain] / [finetune] values over it. The shape comes from the
    /// weights being loaded, so `--preset`, another `--backbone` or a [model] change other than
    /// dropout, pooling and a `max_len` within the position table is refused.
    pub fn from_model(&self, dir: &ModelDir) -> Result<Config> {
        if self.preset.is_some() {
            bail!("--preset does not apply with --init: the model comes from {}", dir.path.display());
        }
        if self.backbone.is_some_and(|b| b != dir.config.model.backbone) {
            bail!("--backbone differs from the pre-trained model's ({}) in {}", dir.config.model.backbone, dir.path.display());
        }
        let mut cfg = dir.config.clone();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
            cfg = cfg.merged(&text).with_context(|| format!("{}", path.display()))?;
            check_same_shape(&mut cfg, dir).with_context(|| format!("{}", path.display()))?;
        }
        if !self.settings.is_empty() {
            cfg = cfg.with_settings(&self.settings)?;
            check_same_shape(&mut cfg, dir).context("--set")?;
        }
        Ok(cfg)
    }
}

/// Refuses a [model] that differs from the pre-trained model's in anything but the dropout rates,
/// pooling and `max_len`, which shape no weight (a shorter or equal `max_len` than the position table
/// keeps the table: `max_positions` is set to its size).
fn check_same_shape(cfg: &mut Config, dir: &ModelDir) -> Result<()> {
    let old = &dir.config.model;
    if cfg.model.max_len != old.max_len {
        if cfg.model.max_len > old.positions() {
            bail!("model.max_len {} exceeds the pre-trained model's position table ({} rows) in {}", cfg.model.max_len, old.positions(), dir.path.display());
        }
        cfg.model.max_positions = old.positions();
    }
    let mut shape = cfg.model.clone();
    shape.dropout = old.dropout;
    shape.transformer.activation_dropout = old.transformer.activation_dropout;
    shape.transformer.pooling = old.transformer.pooling;
    shape.max_len = old.max_len;
    shape.max_positions = old.max_positions;
    if shape != *old {
        bail!("[model] differs from the pre-trained model in {} (only dropout, activation_dropout, pooling and max_len may change)", dir.path.display());
    }
    cfg.validate()
}

/// The labelled `paths` read as one training set (`cut` applied to the whole), with the problem
/// type given or inferred; each file is checked against it on its own, so an error names the file.
pub fn read_training_files(paths: &[PathBuf], policy: BadLines, problem: Option<Problem>, cut: impl FnOnce(&mut Vec<Example>)) -> Result<(Vec<Example>, Problem)> {
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

/// Loads a tokenizer from a `tokenizer.json` or a directory that holds one.
pub fn load_tokenizer(path: &Path) -> Result<WordPieceTokenizer> {
    let file = if path.is_dir() { path.join(TOKENIZER_FILE) } else { path.to_path_buf() };
    if !file.exists() {
        bail!("{}: no tokenizer here (expected {TOKENIZER_FILE})", path.display());
    }
    WordPieceTokenizer::load(&file)
}

/// The tokenizer of a training run, by precedence: the pre-trained model's (`init`); with
/// `resume`, the one the interrupted run in `out` saved with its newest checkpoint; the file or
/// directory `vocab`; else one trained by `train`.
pub fn choose_tokenizer(init: Option<&ModelDir>, resume: bool, out: &OutputDir, vocab: Option<&Path>, train: impl FnOnce() -> Result<WordPieceTokenizer>) -> Result<WordPieceTokenizer> {
    if let Some(dir) = init {
        return Ok(dir.tokenizer.clone());
    }
    if resume {
        return match checkpoints::latest(out.path())? {
            Some(ckpt) => checkpoints::checkpoint_tokenizer(&ckpt),
            None => bail!("{}: no checkpoint to resume from", out.path().display()),
        };
    }
    match vocab {
        Some(path) => load_tokenizer(path),
        None => train(),
    }
}

/// The output directory of a run: a fresh one, or with `resume` the interrupted run's.
pub fn output_dir(target: &Path, resume: bool, overwrite: bool) -> Result<OutputDir> {
    if resume {
        OutputDir::resume(target)
    } else {
        OutputDir::create(target, overwrite)
    }
}

/// Refuses a `--threshold` outside [0, 1]: no probability compares with it meaningfully.
pub fn check_threshold(threshold: Option<f64>) -> Result<()> {
    match threshold {
        Some(t) if !(0.0..=1.0).contains(&t) => bail!("--threshold must be in [0, 1] (got {t})"),
        _ => Ok(()),
    }
}

/// How a training call ended, for `run.json`.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "finished".into(),
        Err(e) => format!("{e:#}"),
    }
}
