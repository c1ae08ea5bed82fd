//! `bertlu ensemble`: several fine-tuned classifiers of one label set as one model whose
//! probabilities are the members' mean (or a weighted mean). Models trained with other seeds, losses or backbones
//! make different errors; their average scores higher than any of them.

use anyhow::{bail, Context, Result};
use bertlu::checkpoint::{write_labels, ModelKind, ModelMeta, OutputDir, MEMBERS_DIR};
use bertlu::inference::LoadedClassifier;
use bertlu::text::labelled::read_examples;
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `ensemble`.
#[derive(Args, Debug)]
pub struct EnsembleArgs {
    /// Fine-tuned model directories (two or more, comma-separated or repeated), trained on the same label set (in any order).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Relative weight of each member's probabilities, in --model order (default: equal);
    /// e.g. a linear model's share of an ensemble of fine-tuned ones.
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<f64>,
    /// Output directory; the members are copied into it, so it stands alone.
    #[arg(long)]
    pub out: PathBuf,
    /// Multi-label decision threshold (default: the first member's global threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Tune the ensemble's thresholds on this labelled (validation) file.
    #[arg(long)]
    pub tune_on: Option<PathBuf>,
    /// With --tune-on: micro-F1 (one shared threshold) or macro-F1 (one a label).
    #[arg(long, value_enum, default_value_t = bertlu::thresholds::Objective::Micro)]
    pub objective: bertlu::thresholds::Objective,
    /// With --tune-on: choose the `bertlu linear` members' share of the mean (0, 0.05, …, 1)
    /// together with the shared threshold, for micro-F1; the fine-tuned members share the rest
    /// equally.
    #[arg(long, requires = "tune_on", conflicts_with = "weights")]
    pub tune_linear_share: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `ensemble`.
pub fn run(a: EnsembleArgs) -> Result<()> {
    if a.model.len() < 2 {
        bail!("--model: an ensemble needs at least two models (got {})", a.model.len());
    }
    super::check_threshold(a.threshold)?;
    if !bertlu::checkpoint::member_weights_fit(&a.weights, a.model.len()) {
        bail!("--weights: one non-negative weight a model ({} models, {} weights), not all zero", a.model.len(), a.weights.len());
    }
    let tune_data = a.tune_on.as_deref().map(read_examples).transpose()?;
    // every member is loaded here, so a broken one fails before anything is written
    let loaded = a.model.iter().map(|p| LoadedClassifier::open(p)).collect::<Result<Vec<_>>>()?;
    let first = &loaded[0];
    let mut names = Vec::new();
    for (i, (path, clf)) in a.model.iter().zip(&loaded).enumerate() {
        if clf.members.len() != 1 {
            bail!("{}: an ensemble; give its member models instead", path.display());
        }
        // refuses another label set or problem type; the order itself is found again on loading
        bertlu::inference::member_order(&clf.members[0], &first.labels, first.problem)?;
        let base = path.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        names.push(format!("{MEMBERS_DIR}/{i:02}-{base}"));
    }
    let out = OutputDir::create(&a.out, a.overwrite)?;
    for (path, name) in a.model.iter().zip(&names) {
        copy_model(path, &out.path().join(name))?;
    }
    write_labels(out.path(), &first.labels)?;
    let threshold = a.threshold.unwrap_or(first.meta.threshold);
    let info = serde_json::json!({ "sources": a.model.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() });
    let mut meta = ModelMeta::new(ModelKind::Ensemble, Some(first.problem), threshold, info);
    meta.members = names;
    meta.member_weights = a.weights.clone();
    meta.write(out.path())?;
    if let Some(examples) = &tune_data {
        // loaded once (members and all) for the share search and the thresholds
        let mut clf = LoadedClassifier::open(out.path())?;
        if a.tune_linear_share {
            clf.meta.member_weights = tune_linear_share(&clf, examples, threshold)?;
            clf.meta.write(out.path())?;
        }
        super::tune::tune_and_report(&mut clf, examples, a.objective, bertlu::thresholds::MIN_SUPPORT)?;
    }
    let dir = out.commit()?;
    println!("ensemble of {} models written to {}", a.model.len(), dir.display());
    Ok(())
}

/// Member weights giving the linear members the share (on a 0.05 grid) that, with its best
/// shared threshold, scores the highest micro-F1 on `examples` (ties: the smaller share).
fn tune_linear_share(clf: &LoadedClassifier, examples: &[bertlu::text::labelled::Example], fallback: f64) -> Result<Vec<f64>> {
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
        let probs = bertlu::inference::mix(&per_member, &w);
        let t = bertlu::thresholds::tune_global(&probs, &gold, fallback);
        let f = bertlu::inference::score(&probs, examples, &gold, &clf.labels, clf.problem, &bertlu::thresholds::Thresholds::Global(t)).scores.micro_f1;
        if k == 0 {
            without = f;
        }
        if f > best.0 + 1e-12 {
            best = (f, share, t);
        }
    }
    println!("linear members' share {:.2}: micro-F1 {:.4} on the tuning data at threshold {:.2} ({without:.4} without them)", best.1, best.0, best.2);
    Ok(weights(best.1))
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
