//! Model directories: `config.toml`, `tokenizer.json`, `model.safetensors`, `model.json`
//! (kind, problem, thresholds, weight-file length) and, for classifiers, `labels.txt`; each file
//! written atomically.

use super::atomic::{write_atomic, write_via_tmp};
use super::layout::{CONFIG_FILE, EPOCHS_DIR, LABELS_FILE, META_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use super::weights::save_weights;
use crate::config::Config;
use crate::data::classify::{LabelSet, Problem};
use crate::eval::thresholds::Thresholds;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Context, Result};
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Version of this layout; a different one is refused on load.
pub const FORMAT_VERSION: u32 = 1;

/// What a model directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Backbone + masked-LM head, from `pretrain`.
    Pretrained,
    /// Backbone + classification head, from `finetune`.
    Classifier,
    /// TF-IDF features and one linear SVM a label, from `linear`: no backbone, no tokenizer.
    Linear,
    /// Several classifiers of one label set whose probabilities are averaged, from `ensemble`:
    /// no weights of its own, the members' directories under `members/`.
    Ensemble,
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Layout version.
    pub format: u32,
    /// Program version that wrote it.
    pub bertlu_version: String,
    /// Pre-trained or classifier.
    pub kind: ModelKind,
    /// The problem type of a classifier.
    pub problem: Option<Problem>,
    /// Decision threshold of a multi-label classifier.
    pub threshold: f64,
    /// Per-label thresholds tuned on validation data (in `labels.txt` order); they replace
    /// `threshold` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_thresholds: Option<Vec<f64>>,
    /// Size of `model.safetensors` in bytes, checked on load to catch truncation.
    pub weights_bytes: u64,
    /// Free-form facts about the training run (epoch, scores).
    #[serde(default)]
    pub info: serde_json::Value,
    /// An ensemble's member directories, relative to its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// An ensemble's relative member weights, in `members` order (empty: equal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_weights: Vec<f64>,
}

/// Whether `weights` can weigh an ensemble of `members` members: empty (equal weights), or
/// one finite non-negative weight a member, not all zero.
pub fn member_weights_fit(weights: &[f64], members: usize) -> bool {
    weights.is_empty() || (weights.len() == members && weights.iter().all(|w| w.is_finite() && *w >= 0.0) && weights.iter().sum::<f64>() > 0.0)
}

/// Everything of a model directory except the weights.
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
    /// Its config.
    pub config: Config,
    /// Its tokenizer.
    pub tokenizer: WordPieceTokenizer,
    /// Its description.
    pub meta: ModelMeta,
    /// Its labels (classifiers only).
    pub labels: Option<LabelSet>,
}

impl ModelDir {
    /// Reads and cross-checks the small files of a model directory.
    pub fn open(path: &Path) -> Result<Self> {
        Self::with_meta(path, ModelMeta::read(path)?)
    }

    /// [`ModelDir::open`] for a directory whose `model.json` has already been read.
    pub fn with_meta(path: &Path, meta: ModelMeta) -> Result<Self> {
        if meta.kind == ModelKind::Ensemble {
            bail!("{}: an ensemble of classifiers (usable by eval, predict, tune-thresholds and bench), not one model", path.display());
        }
        if meta.kind == ModelKind::Linear {
            bail!("{}: a TF-IDF linear classifier (usable by eval, predict, tune-thresholds, ensemble and bench), not a neural model", path.display());
        }
        let config = Config::load(&path.join(CONFIG_FILE))?;
        let tokenizer = WordPieceTokenizer::load(&path.join(TOKENIZER_FILE))?;
        if tokenizer.vocab_size() != config.model.vocab_size {
            bail!("{}: tokenizer has {} entries but the config says vocab_size = {}", path.display(), tokenizer.vocab_size(), config.model.vocab_size);
        }
        let labels = if meta.kind == ModelKind::Classifier { Some(read_labels(path)?) } else { None };
        meta.check_thresholds(path, labels.as_ref().map_or(0, |l| l.len()))?;
        Ok(Self { path: path.to_path_buf(), config, tokenizer, meta, labels })
    }

    /// Path of the weights file.
    pub fn weights(&self) -> PathBuf {
        self.path.join(WEIGHTS_FILE)
    }

    /// Writes a complete model directory's files into `dir` (which must exist).
    pub fn write<M: Module>(dir: &Path, config: &Config, tokenizer: &WordPieceTokenizer, model: &M, mut meta: ModelMeta, labels: Option<&LabelSet>) -> Result<()> {
        write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        write_via_tmp(&dir.join(TOKENIZER_FILE), |tmp| tokenizer.save(tmp))?;
        if let Some(labels) = labels {
            write_labels(dir, labels)?;
        }
        meta.weights_bytes = save_weights(model, &dir.join(WEIGHTS_FILE))?;
        meta.write(dir)
    }
}

/// Writes an epoch's model to `out/epochs/epoch-N/` (`keep_epochs`): under a temporary name, then
/// renamed, so a kept epoch is whole or absent (a resumed run that ends the same epoch again
/// replaces it).
pub fn keep_epoch<M: Module>(out: &Path, epoch: usize, cfg: &Config, tokenizer: &WordPieceTokenizer, model: &M, meta: ModelMeta, labels: Option<&LabelSet>) -> Result<()> {
    let root = out.join(EPOCHS_DIR);
    let (dir, tmp) = (root.join(format!("epoch-{epoch}")), root.join(format!(".epoch-{epoch}.tmp")));
    let write = || -> Result<()> {
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        ModelDir::write(&tmp, cfg, tokenizer, model, meta, labels)?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&tmp, &dir)?;
        Ok(())
    };
    write().with_context(|| format!("{}: cannot keep the epoch's model", dir.display()))
}

/// Writes `labels.txt`: the label names in output order, one a line.
pub fn write_labels(dir: &Path, labels: &LabelSet) -> Result<()> {
    let mut text = labels.names().join("\n");
    text.push('\n');
    write_atomic(&dir.join(LABELS_FILE), text.as_bytes())
}

/// Reads the `labels.txt` of a classifier or ensemble directory.
pub fn read_labels(dir: &Path) -> Result<LabelSet> {
    let p = dir.join(LABELS_FILE);
    let text = fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    let names: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(|l| l.to_owned()).collect();
    if names.is_empty() {
        bail!("{}: no labels", p.display());
    }
    Ok(LabelSet::from_names(names))
}

impl ModelMeta {
    /// Reads and version-checks the `model.json` of a model directory.
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a model directory (missing or not a directory)", dir.display());
        }
        let meta_path = dir.join(META_FILE);
        let meta_text = fs::read_to_string(&meta_path).with_context(|| format!("{}: cannot read (not a bertlu model directory?)", meta_path.display()))?;
        let meta: ModelMeta = serde_json::from_str(&meta_text).with_context(|| format!("{}: invalid model description", meta_path.display()))?;
        if meta.format != FORMAT_VERSION {
            bail!("{}: model format {} is not supported (this bertlu reads format {FORMAT_VERSION})", meta_path.display(), meta.format);
        }
        Ok(meta)
    }

    /// Writes it as `dir/model.json`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(META_FILE), serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// Refuses per-label thresholds that do not fit `labels` labels or lie outside [0, 1].
    pub fn check_thresholds(&self, dir: &Path, labels: usize) -> Result<()> {
        if let Some(t) = &self.label_thresholds {
            if t.len() != labels || t.iter().any(|x| !(0.0..=1.0).contains(x)) {
                bail!("{}: label_thresholds must hold {labels} values in [0, 1] (one a label), found {}", dir.join(META_FILE).display(), t.len());
            }
        }
        Ok(())
    }

    /// Replaces the decision thresholds of a model of `labels` labels and rewrites
    /// `dir/model.json` (atomically); weights are untouched.
    pub fn set_thresholds(&mut self, thresholds: Thresholds, labels: usize, dir: &Path) -> Result<()> {
        match thresholds {
            Thresholds::Global(t) => {
                self.threshold = t;
                self.label_thresholds = None;
            }
            Thresholds::PerLabel(v) => {
                if v.len() != labels {
                    bail!("{}: {} thresholds for {labels} labels", dir.display(), v.len());
                }
                self.label_thresholds = Some(v);
            }
        }
        self.write(dir)
    }

    /// The decision thresholds: tuned per label when present, else the global one.
    pub fn thresholds(&self) -> Thresholds {
        match &self.label_thresholds {
            Some(v) => Thresholds::PerLabel(v.clone()),
            None => Thresholds::Global(self.threshold),
        }
    }

    /// A description for a fresh save (the weight length is filled in by [`ModelDir::write`]).
    pub fn new(kind: ModelKind, problem: Option<Problem>, threshold: f64, info: serde_json::Value) -> Self {
        Self { format: FORMAT_VERSION, bertlu_version: env!("CARGO_PKG_VERSION").to_owned(), kind, problem, threshold, label_thresholds: None, weights_bytes: 0, info, members: Vec::new(), member_weights: Vec::new() }
    }
}
