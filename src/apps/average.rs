//! The `average` command's pipeline: the weights of several fine-tuned classifiers of one
//! architecture, vocabulary and label set — typically one run's last epochs (`finetune
//! --keep-epochs`) — averaged into one model. Checkpoint averaging (Polyak averaging after the
//! fact, "model soups" across runs from one start) often scores above every epoch it averages,
//! and unlike an ensemble it predicts at the cost of one model.

use crate::eval::thresholds::{Objective, MIN_SUPPORT};
use crate::infer::classifier::LoadedClassifier;
use crate::model::Classifier;
use crate::store::model_dir::{ModelDir, ModelKind, ModelMeta};
use crate::store::output_dir::OutputDir;
use crate::store::weights::load_weights;
use crate::text::labelled::read_examples;
use crate::train::ema::mean_of;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// What to average and where the result goes.
pub struct AverageSpec {
    /// The models' directories (two or more).
    pub models: Vec<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// Tune the averaged model's thresholds on this labelled (validation) file.
    pub tune_on: Option<PathBuf>,
    /// With `tune_on`: micro-F1 (one shared threshold) or macro-F1 (one a label).
    pub objective: Objective,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Averages the models' weights into `spec.out`; returns its directory and the lines that
/// describe what was done.
pub fn build(spec: &AverageSpec) -> Result<(PathBuf, Vec<String>)> {
    if spec.models.len() < 2 {
        bail!("--model: averaging needs at least two models (got {})", spec.models.len());
    }
    let tune_data = spec.tune_on.as_deref().map(read_examples).transpose()?;
    // the small files of every model first: one that cannot join fails before any weights are read
    let dirs = spec.models.iter().map(|p| open_classifier(p)).collect::<Result<Vec<_>>>()?;
    let first = &dirs[0];
    for d in &dirs[1..] {
        same_shape(first, d)?;
    }
    let device = crate::model::device::default_device();
    let (cfg, labels) = (&first.config, first.labels.as_ref().expect("a classifier has labels"));
    let mut failure = None;
    // loaded one at a time into a running mean: two models in memory, however many are averaged
    let loaded = dirs.iter().map_while(|d| {
        let model = Classifier::init_with_head(&d.config.model, d.config.finetune.head, labels.len(), &device);
        load_weights(model, &d.weights(), d.meta.weights_bytes).map_err(|e| failure = Some(e)).ok()
    });
    let mean = mean_of(loaded);
    if let Some(e) = failure {
        return Err(e);
    }
    let mean = mean.expect("two or more models");
    let mut said = Vec::new();
    if first.meta.label_thresholds.is_some() && tune_data.is_none() {
        said.push(format!("{}'s per-label thresholds are not carried over (tuned for that model); the shared threshold {} is; --tune-on tunes the average's own", first.path.display(), first.meta.threshold));
    }
    let out = OutputDir::create(&spec.out, spec.overwrite)?;
    let info = serde_json::json!({ "averaged": spec.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() });
    let meta = ModelMeta::new(ModelKind::Classifier, first.meta.problem, first.meta.threshold, info);
    ModelDir::write(out.path(), cfg, &first.tokenizer, &mean, meta, Some(labels))?;
    if let Some(examples) = &tune_data {
        let mut clf = LoadedClassifier::open(out.path())?;
        said.push(clf.tune_thresholds_described(examples, spec.objective, MIN_SUPPORT)?);
    }
    Ok((out.commit()?, said))
}

/// The small files of a fine-tuned model directory; anything else is refused by name.
fn open_classifier(path: &Path) -> Result<ModelDir> {
    let meta = ModelMeta::read(path)?;
    match meta.kind {
        ModelKind::Classifier => ModelDir::with_meta(path, meta),
        ModelKind::Pretrained => bail!("{}: a pre-trained model; `bertlu average` averages fine-tuned classifiers", path.display()),
        ModelKind::Ensemble => bail!("{}: an ensemble; average its members' weights only if they are one architecture (give them instead), or keep the ensemble", path.display()),
        ModelKind::Linear => bail!("{}: a `bertlu linear` model has no weights to average with a neural one; `bertlu ensemble` combines them", path.display()),
    }
}

/// Refuses a model whose weights do not correspond one to one with `first`'s: another
/// architecture (naming the first `[model]` key that differs), head, vocabulary, label order or
/// problem.
fn same_shape(first: &ModelDir, other: &ModelDir) -> Result<()> {
    let (name, base) = (other.path.display(), first.path.display());
    let (a, b) = (&first.config.model, &other.config.model);
    if a != b {
        let (ta, tb) = (toml::Table::try_from(a)?, toml::Table::try_from(b)?);
        let key = ta.keys().chain(tb.keys()).find(|k| ta.get(*k) != tb.get(*k)).cloned().unwrap_or_default();
        bail!("{name}: another architecture than {base} (model.{key} differs); only models of one architecture can be averaged");
    }
    if first.config.finetune.head != other.config.finetune.head {
        bail!("{name}: another head than {base} (finetune.head differs)");
    }
    if first.tokenizer.vocab_list() != other.tokenizer.vocab_list() {
        bail!("{name}: another vocabulary than {base}; averaged models must share the tokenizer (e.g. be fine-tuned from one pre-trained model)");
    }
    if first.labels.as_ref().map(|l| l.names()) != other.labels.as_ref().map(|l| l.names()) {
        bail!("{name}: its labels differ from {base}'s (or are ordered otherwise); averaged models must share one output layer's meaning");
    }
    if first.meta.problem != other.meta.problem {
        bail!("{name}: another problem type than {base}");
    }
    Ok(())
}
