//! Model directories and how they are written: `config.toml`, `tokenizer.json`,
//! `model.safetensors`, `model.json` (kind, problem, threshold, weight-file length) and, for
//! classifiers, `labels.txt`. Every file is written to a temporary name and renamed; a run
//! builds its whole output in a hidden `.NAME.partial` directory renamed into place at the end.

use crate::config::Config;
use crate::tasks::classify::{LabelSet, Problem};
use crate::text::tokenizer::{WordPieceTokenizer, TOKENIZER_FILE};
use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::store::{ModuleSnapshot, PathFilter, SafetensorsStore};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Saved config.
pub const CONFIG_FILE: &str = "config.toml";
/// Saved weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Saved description of the model.
pub const META_FILE: &str = "model.json";
/// Saved label order of a classifier.
pub const LABELS_FILE: &str = "labels.txt";
/// Where an ensemble keeps its members' directories.
pub const MEMBERS_DIR: &str = "members";
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

/// Writes `path` through a temporary file and a rename, so readers never see half a file:
/// `write` fills the temporary path; on failure it is removed and the old `path` stays.
pub fn write_via_tmp(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let res = write(&tmp).and_then(|()| fs::rename(&tmp, path).map_err(anyhow::Error::from));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_tmp(path, |tmp| {
        let mut f = fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })
}

/// Saves a module's weights as safetensors (atomically); returns the file length.
pub fn save_weights<M: Module>(model: &M, path: &Path) -> Result<u64> {
    write_via_tmp(path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp).overwrite(true);
        model.save_into(&mut store).map_err(|e| anyhow::anyhow!("weights: {e}"))
    })?;
    Ok(fs::metadata(path)?.len())
}

/// Loads every weight of `model` from a safetensors file; any missing, extra or mis-shaped
/// tensor is an error.
pub fn load_weights<M: Module>(model: M, path: &Path, expected_bytes: u64) -> Result<M> {
    check_length(path, expected_bytes)?;
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path);
    let result = model.load_from(&mut store).map_err(|e| store_error(path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        bail!("{}: weights do not fit the model: {}", path.display(), summarize(&result));
    }
    Ok(model)
}

/// Loads exactly the tensors under `prefix` (e.g. `backbone.`) into `model` and returns their
/// names. Fails unless every such tensor of the model was found with the same shape.
pub fn load_prefix<M: Module>(model: M, path: &Path, expected_bytes: u64, prefix: &str) -> Result<(M, Vec<String>)> {
    load_mapped(model, path, expected_bytes, prefix, prefix)
}

/// Loads the file's tensors under `from` into the model's tensors under `to` (e.g. a
/// pre-trained `nsp.dense.` pooler into a classifier's `head.dense.`) and returns the model's
/// names. Fails unless every model tensor under `to` was found with the same shape.
pub fn load_mapped<M: Module>(model: M, path: &Path, expected_bytes: u64, from: &str, to: &str) -> Result<(M, Vec<String>)> {
    check_length(path, expected_bytes)?;
    let mut model = model;
    let pattern = format!("^{}", regex_escape(to));
    let wanted: Vec<String> = model.collect(Some(PathFilter::new().with_regex(&pattern)), None, false).into_iter().map(|t| t.name.clone()).collect();
    let mut store = SafetensorsStore::from_file(path).with_regex(&pattern).allow_partial(true);
    if from != to {
        store = store.with_key_remapping(format!("^{}", regex_escape(from)), to);
    }
    let result = model.load_from(&mut store).map_err(|e| store_error(path, e))?;
    if !result.errors.is_empty() {
        bail!("{}: pre-trained weights do not fit: {}", path.display(), summarize(&result));
    }
    let mut applied = result.applied.clone();
    applied.sort();
    let mut want = wanted.clone();
    want.sort();
    if applied != want {
        let missing: Vec<&String> = want.iter().filter(|w| !applied.contains(w)).collect();
        bail!("{}: pre-trained weights lack {} of the {} tensors under {from} (first: {})", path.display(), missing.len(), want.len(), missing.first().map(|s| s.as_str()).unwrap_or("?"));
    }
    Ok((model, applied))
}

/// A store failure as one readable line; validation failures (shape mismatches) say so first.
fn store_error(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    let text = e.to_string().replace('\n', " ");
    let short: String = text.chars().take(300).collect();
    let more = if short.len() < text.len() { "…" } else { "" };
    if text.contains("Mismatch") || text.contains("Validation") {
        anyhow::anyhow!("{}: weights do not fit the model: {short}{more}", path.display())
    } else {
        anyhow::anyhow!("{}: cannot read weights: {short}{more}", path.display())
    }
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || c == '_' { c.to_string() } else { format!("\\{c}") }).collect()
}

fn summarize(r: &burn::store::ApplyResult) -> String {
    let mut parts = Vec::new();
    if let Some(e) = r.errors.first() {
        parts.push(format!("{} error(s), first: {e:?}", r.errors.len()));
    }
    if let Some((m, _)) = r.missing.first() {
        parts.push(format!("{} missing, first: {m}", r.missing.len()));
    }
    if let Some(u) = r.unused.first() {
        parts.push(format!("{} unexpected, first: {u}", r.unused.len()));
    }
    parts.join("; ").replace('\n', " ")
}

/// Checks a file's length against the one recorded when it was written (catches truncation).
pub fn check_length(path: &Path, expected: u64) -> Result<()> {
    let len = fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?.len();
    if len != expected {
        bail!("{}: truncated or altered checkpoint ({len} bytes, expected {expected})", path.display());
    }
    Ok(())
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
    pub fn set_thresholds(&mut self, thresholds: crate::thresholds::Thresholds, labels: usize, dir: &Path) -> Result<()> {
        match thresholds {
            crate::thresholds::Thresholds::Global(t) => {
                self.threshold = t;
                self.label_thresholds = None;
            }
            crate::thresholds::Thresholds::PerLabel(v) => {
                if v.len() != labels {
                    bail!("{}: {} thresholds for {labels} labels", dir.display(), v.len());
                }
                self.label_thresholds = Some(v);
            }
        }
        self.write(dir)
    }

    /// The decision thresholds: tuned per label when present, else the global one.
    pub fn thresholds(&self) -> crate::thresholds::Thresholds {
        match &self.label_thresholds {
            Some(v) => crate::thresholds::Thresholds::PerLabel(v.clone()),
            None => crate::thresholds::Thresholds::Global(self.threshold),
        }
    }

    /// A description for a fresh save (the weight length is filled in by [`ModelDir::write`]).
    pub fn new(kind: ModelKind, problem: Option<Problem>, threshold: f64, info: serde_json::Value) -> Self {
        Self { format: FORMAT_VERSION, bertlu_version: env!("CARGO_PKG_VERSION").to_owned(), kind, problem, threshold, label_thresholds: None, weights_bytes: 0, info, members: Vec::new(), member_weights: Vec::new() }
    }
}

/// An output directory built under a hidden temporary name and renamed into place only when
/// the run succeeds; dropped without [`OutputDir::commit`], it is removed.
pub struct OutputDir {
    target: PathBuf,
    work: PathBuf,
    committed: bool,
}

impl OutputDir {
    /// Prepares `target`. An existing non-empty `target` is an error unless `overwrite`.
    pub fn create(target: &Path, overwrite: bool) -> Result<Self> {
        if target.exists() {
            let non_empty = fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(true);
            if non_empty && !overwrite {
                bail!("{}: output directory exists and is not empty (pass --overwrite to replace it)", target.display());
            }
        }
        let work = Self::work_dir(target);
        let parent = work.parent().expect("work dir has a parent");
        fs::create_dir_all(parent).with_context(|| format!("{}: cannot create directory", parent.display()))?;
        if work.exists() && crate::train::resume::has_checkpoint(&work) && !overwrite {
            bail!("{}: an interrupted run left checkpoints here; add --resume to continue it, or --overwrite to start again", work.display());
        }
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("{}: cannot remove stale partial output", work.display()))?;
        }
        fs::create_dir(&work).with_context(|| format!("{}: cannot create output directory", work.display()))?;
        Ok(Self { target: target.to_path_buf(), work, committed: false })
    }

    /// The hidden `.NAME.partial` directory beside `target` where a run writes until it succeeds.
    pub fn work_dir(target: &Path) -> PathBuf {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        parent.join(format!(".{name}.partial"))
    }

    /// Reopens the hidden work directory of an interrupted run into `target`, to continue it.
    pub fn resume(target: &Path) -> Result<Self> {
        let work = Self::work_dir(target);
        if !crate::train::resume::has_checkpoint(&work) {
            if target.exists() {
                bail!("{}: this run finished; there is nothing to resume", target.display());
            }
            bail!("{}: no interrupted run to resume (no checkpoint in {})", target.display(), work.display());
        }
        Ok(Self { target: target.to_path_buf(), work, committed: false })
    }

    /// Where files go while the run is under way.
    pub fn path(&self) -> &Path {
        &self.work
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished output into place, replacing an old one only now.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            let old = self.work.with_extension("old");
            let _ = fs::remove_dir_all(&old);
            fs::rename(&self.target, &old).with_context(|| format!("{}: cannot replace", self.target.display()))?;
            fs::rename(&self.work, &self.target).with_context(|| format!("{}: cannot move output into place", self.target.display()))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.work, &self.target).with_context(|| format!("{}: cannot move output into place", self.target.display()))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        // A run that wrote a checkpoint keeps its work directory for --resume.
        if !self.committed && !crate::train::resume::has_checkpoint(&self.work) {
            let _ = fs::remove_dir_all(&self.work);
        }
    }
}
