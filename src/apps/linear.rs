//! The `linear` command's pipeline: TF-IDF features and one linear SVM a label trained on the
//! labelled files, calibrated on the validation file, saved as a model directory that eval,
//! predict and ensemble load like a fine-tuned one.

use super::setup::read_training_files;
use crate::data::classify::{LabelSet, Problem};
use crate::eval::thresholds::{Objective, MIN_SUPPORT};
use crate::infer::classifier::LoadedClassifier;
use crate::infer::linear::svm::SvmOptions;
use crate::infer::linear::{FeatureOptions, LinearClassifier};
use crate::store::model_dir::{write_labels, ModelKind, ModelMeta};
use crate::store::output_dir::OutputDir;
use crate::text::labelled::read_examples_with;
use crate::text::reader::BadLines;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;

/// A linear model's training run.
pub struct LinearJob {
    /// Labelled training files, read as one set.
    pub train: Vec<PathBuf>,
    /// Labelled validation file (calibration, thresholds).
    pub valid: PathBuf,
    /// Output model directory.
    pub out: PathBuf,
    /// Features.
    pub features: FeatureOptions,
    /// SVM cost and seed.
    pub svm: SvmOptions,
    /// Weights below this magnitude are dropped.
    pub prune: f32,
    /// Force the problem type.
    pub problem: Option<Problem>,
    /// Tune the thresholds on the validation file.
    pub tune_thresholds: Option<Objective>,
    /// What readers do with bad lines.
    pub bad_lines: BadLines,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Parses `--chars`: `MIN-MAX` (1 ≤ MIN ≤ MAX) or `none`.
pub fn parse_char_range(range: &str) -> Result<Option<(usize, usize)>> {
    if range == "none" {
        return Ok(None);
    }
    match range.split_once('-').map(|(lo, hi)| (lo.parse::<usize>(), hi.parse::<usize>())) {
        Some((Ok(lo), Ok(hi))) if 1 <= lo && lo <= hi => Ok(Some((lo, hi))),
        _ => bail!("--chars: expected MIN-MAX (e.g. 2-5, 1 ≤ MIN ≤ MAX) or none, got `{range}`"),
    }
}

/// Trains, calibrates and saves the model; returns its directory and the lines that describe
/// the run (features and weights, thresholds, validation scores).
pub fn run(job: &LinearJob) -> Result<(PathBuf, Vec<String>)> {
    if !(job.svm.c > 0.0 && job.svm.c.is_finite()) || job.features.ngrams == 0 || job.features.min_df == 0 || !(job.prune >= 0.0 && job.prune.is_finite()) {
        bail!("--c must be positive, --ngrams and --min-df at least 1, --prune non-negative");
    }
    let (all, problem) = read_training_files(&job.train, job.bad_lines, job.problem, |_| {})?;
    if job.tune_thresholds.is_some() && problem != Problem::MultiLabel {
        bail!("--tune-thresholds applies to multi-label problems only");
    }
    let valid = read_examples_with(&job.valid, job.bad_lines)?;
    let out = OutputDir::create(&job.out, job.overwrite)?;
    let labels = LabelSet::from_examples(&all);
    let texts: Vec<&str> = all.iter().map(|e| e.text.as_str()).collect();
    let gold: Vec<Vec<usize>> = all.iter().map(|e| labels.indices(&e.labels)).collect();
    let start = Instant::now();
    let mut model = LinearClassifier::train(&texts, &gold, labels.len(), &job.features, &job.svm, job.prune)?;
    let trained = start.elapsed().as_secs_f64();
    let vtexts: Vec<&str> = valid.iter().map(|e| e.text.as_str()).collect();
    let vgold: Vec<Vec<usize>> = valid.iter().map(|e| labels.indices(&e.labels)).collect();
    model.calibrate(&vtexts, &vgold);
    let mut said = vec![format!(
        "{} examples, {} labels, {} features ({}; each seen in ≥ {} texts); {} SVMs trained in {trained:.1} s, {} weights kept (|w| ≥ {}); probability = sigmoid({:.3} · margin + {:.3}) (fitted on {} validation examples)",
        all.len(), labels.len(), model.num_features(), model.params.blocks.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "), job.features.min_df, labels.len(), model.params.weights, job.prune, model.params.slope, model.params.intercept, valid.len()
    )];
    let info = serde_json::json!({ "train_examples": all.len(), "features": model.num_features(), "train_seconds": trained });
    let mut meta = ModelMeta::new(ModelKind::Linear, Some(problem), 0.5, info);
    write_labels(out.path(), &labels)?;
    meta.weights_bytes = model.save(out.path())?;
    meta.write(out.path())?;
    let mut clf = LoadedClassifier::open(out.path())?;
    if let Some(objective) = job.tune_thresholds {
        said.push(clf.tune_thresholds_described(&valid, objective, MIN_SUPPORT)?);
    }
    let s = clf.evaluate(&valid, None, 256).scores;
    let dir = out.commit()?;
    said.push(format!("validation: micro-F1 {:.4} macro-F1 {:.4}; written to {}", s.micro_f1, s.macro_f1, dir.display()));
    Ok((dir, said))
}
