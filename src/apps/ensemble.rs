//! The `ensemble` command's pipeline: several classifiers of one label set copied into one
//! directory whose probabilities are the members' (weighted) mean; optionally the linear
//! members' share and the thresholds chosen on a tuning file.

use crate::eval::thresholds::{tune_global, Objective, Thresholds, MIN_SUPPORT};
use crate::infer::classifier::{member_order, mix, score, LoadedClassifier};
use crate::store::layout::MEMBERS_DIR;
use crate::store::model_dir::{member_weights_fit, write_labels, ModelKind, ModelMeta};
use crate::store::output_dir::OutputDir;
use crate::text::labelled::{read_examples, Example};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What an ensemble is made of.
pub struct EnsembleSpec {
    /// The members' model directories (two or more).
    pub models: Vec<PathBuf>,
    /// Relative member weights in `models` order (empty: equal).
    pub weights: Vec<f64>,
    /// Output directory.
    pub out: PathBuf,
    /// Multi-label decision threshold (default: the first member's global threshold).
    pub threshold: Option<f64>,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Tuning on a labelled (validation) file.
pub struct EnsembleTuning {
    /// The file.
    pub file: PathBuf,
    /// Micro-F1 (one shared threshold) or macro-F1 (one a label).
    pub objective: Objective,
    /// Choose the linear members' share first (with the shared threshold, for micro-F1).
    pub linear_share: bool,
}

/// Builds the ensemble; returns its directory and, with tuning, the lines that describe it.
pub fn build(spec: &EnsembleSpec, tuning: Option<&EnsembleTuning>) -> Result<(PathBuf, Vec<String>)> {
    if spec.models.len() < 2 {
        bail!("--model: an ensemble needs at least two models (got {})", spec.models.len());
    }
    super::setup::check_threshold(spec.threshold)?;
    if !member_weights_fit(&spec.weights, spec.models.len()) {
        bail!("--weights: one non-negative weight a model ({} models, {} weights), not all zero", spec.models.len(), spec.weights.len());
    }
    let tune_data = tuning.map(|t| read_examples(&t.file)).transpose()?;
    // every member is loaded here, so a broken one fails before anything is written
    let loaded = spec.models.iter().map(|p| LoadedClassifier::open(p)).collect::<Result<Vec<_>>>()?;
    let first = &loaded[0];
    let mut names = Vec::new();
    for (i, (path, clf)) in spec.models.iter().zip(&loaded).enumerate() {
        if clf.members.len() != 1 {
            bail!("{}: an ensemble; give its member models instead", path.display());
        }
        // refuses another label set or problem type; the order itself is found again on loading
        member_order(&clf.members[0], &first.labels, first.problem)?;
        let base = path.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        names.push(format!("{MEMBERS_DIR}/{i:02}-{base}"));
    }
    let out = OutputDir::create(&spec.out, spec.overwrite)?;
    for (path, name) in spec.models.iter().zip(&names) {
        copy_model(path, &out.path().join(name))?;
    }
    write_labels(out.path(), &first.labels)?;
    let threshold = spec.threshold.unwrap_or(first.meta.threshold);
    let info = serde_json::json!({ "sources": spec.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() });
    let mut meta = ModelMeta::new(ModelKind::Ensemble, Some(first.problem), threshold, info);
    meta.members = names;
    meta.member_weights = spec.weights.clone();
    meta.write(out.path())?;
    let mut said = Vec::new();
    if let (Some(t), Some(examples)) = (tuning, &tune_data) {
        // loaded once (members and all) for the share search and the thresholds
        let mut clf = LoadedClassifier::open(out.path())?;
        if t.linear_share {
            let (weights, line) = tune_linear_share(&clf, examples, threshold)?;
            said.push(line);
            clf.meta.member_weights = weights;
            clf.meta.write(out.path())?;
        }
        said.push(clf.tune_thresholds_described(examples, t.objective, MIN_SUPPORT)?);
    }
    Ok((out.commit()?, said))
}

/// Member weights giving the linear members the share (on a 0.05 grid) that, with its best
/// shared threshold, scores the highest micro-F1 on `examples` (ties: the smaller share), and a
/// line that says so.
fn tune_linear_share(clf: &LoadedClassifier, examples: &[Example], fallback: f64) -> Result<(Vec<f64>, String)> {
    let linear: Vec<bool> = clf.members.iter().map(|m| m.is_linear()).collect();
    let nl = linear.iter().filter(|&&l| l).count() as f64;
    let nn = linear.len() as f64 - nl;
    if nl == 0.0 || nn == 0.0 {
        bail!("--tune-linear-share needs both fine-tuned and `bertlu linear` members ({nn} and {nl} given)");
    }
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let gold: Vec<Vec<usize>> = examples.iter().map(|e| clf.labels.indices(&e.labels)).collect();
    let per_member = clf.member_probabilities(&texts, 64);
    let weights = |share: f64| -> Vec<f64> { linear.iter().map(|&l| if l { share / nl } else { (1.0 - share) / nn }).collect() };
    let (mut best, mut without) = ((f64::NEG_INFINITY, 0.0, fallback), 0.0);
    for k in 0..=20 {
        let share = k as f64 / 20.0;
        let w: Vec<f32> = weights(share).iter().map(|&x| x as f32).collect();
        let probs = mix(&per_member, &w);
        let t = tune_global(&probs, &gold, fallback);
        let f = score(&probs, examples, &gold, &clf.labels, clf.problem, &Thresholds::Global(t)).scores.micro_f1;
        if k == 0 {
            without = f;
        }
        if f > best.0 + 1e-12 {
            best = (f, share, t);
        }
    }
    let line = format!("linear members' share {:.2}: micro-F1 {:.4} on the tuning data at threshold {:.2} ({without:.4} without them)", best.1, best.0, best.2);
    Ok((weights(best.1), line))
}

/// Copies the files of a model directory (not its subdirectories: checkpoints are not part of a
/// finished model) into `to`.
fn copy_model(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("{}: cannot create", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("{}: cannot read", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target).with_context(|| format!("{}: cannot copy to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}
