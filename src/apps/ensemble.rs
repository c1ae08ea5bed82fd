//! The `ensemble` command's pipeline: several classifiers of one label set copied into one
//! directory whose probabilities are the members' (weighted) mean; optionally the member
//! weights (the linear members' share, or every member's) and the thresholds chosen on a tuning
//! file.

use crate::eval::thresholds::{tune_global, Objective, Thresholds, MIN_SUPPORT};
use crate::infer::classifier::{member_order, mix, score, LoadedClassifier, MemberModel};
use crate::store::atomic::write_atomic;
use crate::store::layout::{CONFIG_FILE, MEMBERS_DIR};
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
    /// The neural members read this many pieces instead of their trained `max_len` (written
    /// into their copied `config.toml`, so the ensemble reads them so whatever command uses it).
    pub max_len: Option<usize>,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Tuning on a labelled (validation) file.
pub struct EnsembleTuning {
    /// The file.
    pub file: PathBuf,
    /// Micro-F1 (one shared threshold) or macro-F1 (one a label).
    pub objective: Objective,
    /// Which member weights to choose first (with the shared threshold, for micro-F1); `None`:
    /// the weights given (or equal).
    pub weights: Option<WeightTuning>,
}

/// Which member weights `--tune-on` chooses before the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightTuning {
    /// The `bertlu linear` members' share of the mean, the fine-tuned members sharing the rest
    /// equally.
    LinearShare,
    /// Every member's weight.
    Every,
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
    let loaded = spec.models.iter().map(|p| LoadedClassifier::open(p)?.with_max_len(spec.max_len)).collect::<Result<Vec<_>>>()?;
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
    for ((path, name), clf) in spec.models.iter().zip(&names).zip(&loaded) {
        copy_model(path, &out.path().join(name))?;
        if let (Some(_), MemberModel::Neural { dir, .. }) = (spec.max_len, &clf.members[0].model) {
            write_atomic(&out.path().join(name).join(CONFIG_FILE), dir.config.to_toml().as_bytes())?;
        }
    }
    write_labels(out.path(), &first.labels)?;
    let threshold = spec.threshold.unwrap_or(first.meta.threshold);
    let mut info = serde_json::json!({ "sources": spec.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() });
    if let Some(n) = spec.max_len {
        info["max_len"] = n.into();
    }
    let mut meta = ModelMeta::new(ModelKind::Ensemble, Some(first.problem), threshold, info);
    meta.members = names;
    meta.member_weights = spec.weights.clone();
    meta.write(out.path())?;
    let mut said = Vec::new();
    if let (Some(t), Some(examples)) = (tuning, &tune_data) {
        // loaded once (members and all) for the share search and the thresholds
        let mut clf = LoadedClassifier::open(out.path())?;
        if let Some(how) = t.weights {
            let (weights, line) = tune_weights(&clf, examples, threshold, how)?;
            said.push(line);
            clf.meta.member_weights = weights;
            clf.meta.write(out.path())?;
        }
        said.push(clf.tune_thresholds_described(examples, t.objective, MIN_SUPPORT)?);
    }
    Ok((out.commit()?, said))
}

/// Member weights chosen for micro-F1 on `examples` (each weight vector scored at its best
/// shared threshold), and a line that says so. `LinearShare`: one share for the linear members,
/// from share 0 (ties: the smaller share). `Every`: each member's share in turn, from equal
/// weights, until a pass changes nothing.
fn tune_weights(clf: &LoadedClassifier, examples: &[Example], fallback: f64, how: WeightTuning) -> Result<(Vec<f64>, String)> {
    let linear: Vec<usize> = (0..clf.members.len()).filter(|&i| clf.members[i].is_linear()).collect();
    let n = clf.members.len();
    if how == WeightTuning::LinearShare && (linear.is_empty() || linear.len() == n) {
        bail!("--tune-linear-share needs both fine-tuned and `bertlu linear` members ({} and {} given)", n - linear.len(), linear.len());
    }
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let gold: Vec<Vec<usize>> = examples.iter().map(|e| clf.labels.indices(&e.labels)).collect();
    let per_member = clf.member_probabilities(&texts, 64);
    let micro = |w: &[f64]| -> (f64, f64) {
        let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        let probs = mix(&per_member, &w);
        let t = tune_global(&probs, &gold, fallback);
        (score(&probs, examples, &gold, &clf.labels, clf.problem, &Thresholds::Global(t)).scores.micro_f1, t)
    };
    Ok(match how {
        WeightTuning::LinearShare => {
            let fine_tuned = (n - linear.len()) as f64;
            let start: Vec<f64> = (0..n).map(|i| if linear.contains(&i) { 0.0 } else { 1.0 / fine_tuned }).collect();
            let found = search_shares(start, &[linear.clone()], 1, micro);
            let share: f64 = linear.iter().map(|&i| found.weights[i]).sum();
            let line = format!("linear members' share {share:.2}: micro-F1 {:.4} on the tuning data at threshold {:.2} ({:.4} without them)", found.micro_f1, found.threshold, found.start_f1);
            (found.weights, line)
        }
        WeightTuning::Every => {
            let groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
            let found = search_shares(vec![1.0 / n as f64; n], &groups, MAX_PASSES, micro);
            let shown: Vec<String> = found.weights.iter().map(|w| format!("{w:.2}")).collect();
            let alone: Vec<String> = (0..n).map(|i| format!("{:.4}", micro(&with_share(&found.weights, &[i], 1.0)).0)).collect();
            let line = format!(
                "member weights {} (in --model order; {} passes): micro-F1 {:.4} on the tuning data at threshold {:.2} ({:.4} with equal weights; each member alone: {})",
                shown.join(", "), found.passes, found.micro_f1, found.threshold, found.start_f1, alone.join(", ")
            );
            (found.weights, line)
        }
    })
}

/// The most passes over the members a weight search makes.
const MAX_PASSES: usize = 10;

/// What a weight search found.
#[derive(Debug, Clone)]
struct Searched {
    /// The member weights, summing to 1.
    weights: Vec<f64>,
    /// Their score and best shared threshold.
    micro_f1: f64,
    threshold: f64,
    /// The starting weights' score.
    start_f1: f64,
    /// The passes made (the last one changed nothing, unless the limit stopped it).
    passes: usize,
}

/// Coordinate search over the shares of `groups` of members: for each group in turn, every share
/// of the mean on the grid 0, 0.05, …, 1, its members keeping their proportions among themselves
/// and the others theirs; a share is kept only when it scores strictly higher than the weights
/// held, so ties keep what is held (the smaller share in a pass's first move from share 0).
/// Repeats until a pass changes nothing, at most `passes` times. `score` gives a weight vector's
/// micro-F1 and its threshold.
fn search_shares(start: Vec<f64>, groups: &[Vec<usize>], passes: usize, score: impl Fn(&[f64]) -> (f64, f64)) -> Searched {
    let (start_f1, start_t) = score(&start);
    let mut best = Searched { weights: start, micro_f1: start_f1, threshold: start_t, start_f1, passes: 0 };
    for _ in 0..passes {
        best.passes += 1;
        let mut moved = false;
        for group in groups {
            let held = best.weights.clone();
            for k in 0..=20 {
                let w = with_share(&held, group, k as f64 / 20.0);
                let (f, t) = score(&w);
                if f > best.micro_f1 + 1e-12 {
                    (best.weights, best.micro_f1, best.threshold, moved) = (w, f, t, true);
                }
            }
        }
        if !moved {
            break;
        }
    }
    best
}

/// `weights` (summing to 1) with `group`'s members holding `share` of the total in their present
/// proportions, the others the rest in theirs (equally where a side held nothing).
fn with_share(weights: &[f64], group: &[usize], share: f64) -> Vec<f64> {
    let inside: f64 = group.iter().map(|&i| weights[i]).sum();
    let outside: f64 = weights.iter().sum::<f64>() - inside;
    let n_out = weights.len() - group.len();
    (0..weights.len())
        .map(|i| {
            if group.contains(&i) {
                if inside > 0.0 { share * weights[i] / inside } else { share / group.len() as f64 }
            } else if outside > 0.0 {
                (1.0 - share) * weights[i] / outside
            } else {
                (1.0 - share) / n_out as f64
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_moves_one_side_keeping_proportions() {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&with_share(&[0.5, 0.3, 0.2], &[0], 0.8), &[0.8, 0.12, 0.08]));
        assert!(close(&with_share(&[0.5, 0.3, 0.2], &[1, 2], 0.5), &[0.5, 0.3, 0.2]));
        // the others held nothing: they share the rest equally
        assert!(close(&with_share(&[1.0, 0.0, 0.0], &[0], 0.4), &[0.4, 0.3, 0.3]));
        // a group that held nothing: its members share equally
        assert!(close(&with_share(&[0.0, 0.0, 1.0], &[0, 1], 0.5), &[0.25, 0.25, 0.5]));
    }

    /// Three members on 30 examples of 3 labels, one gold label each: A and C are unsure (0.4
    /// gold, 0.6 a wrong label) on different thirds and sure and right elsewhere; B is sure and
    /// always wrong. Equal weights follow B's errors; A and C without B are right everywhere.
    #[test]
    fn the_search_drops_a_member_that_only_hurts() {
        let gold: Vec<Vec<usize>> = (0..30).map(|i| vec![i % 3]).collect();
        let member = |unsure: Option<std::ops::Range<usize>>, inverted: bool| -> Vec<Vec<f32>> {
            (0..30)
                .map(|i| {
                    let g = i % 3;
                    (0..3)
                        .map(|j| match (inverted, unsure.as_ref().is_some_and(|r| r.contains(&i))) {
                            (true, _) => if j == g { 0.02 } else { 0.98 },
                            (false, true) => if j == g { 0.4 } else if j == (g + 1) % 3 { 0.6 } else { 0.02 },
                            (false, false) => if j == g { 0.95 } else { 0.02 },
                        })
                        .collect()
                })
                .collect()
        };
        let per_member = vec![member(Some(0..10), false), member(None, true), member(Some(10..20), false)];
        let micro = |w: &[f64]| -> (f64, f64) {
            let probs = mix(&per_member, &w.iter().map(|&x| x as f32).collect::<Vec<_>>());
            let t = tune_global(&probs, &gold, 0.5);
            let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
            for (p, g) in probs.iter().zip(&gold) {
                for (j, &pj) in p.iter().enumerate() {
                    match (pj as f64 >= t, g.contains(&j)) {
                        (true, true) => tp += 1.0,
                        (true, false) => fp += 1.0,
                        (false, true) => fn_ += 1.0,
                        _ => {}
                    }
                }
            }
            (2.0 * tp / (2.0 * tp + fp + fn_), t)
        };
        let found = search_shares(vec![1.0 / 3.0; 3], &[vec![0], vec![1], vec![2]], MAX_PASSES, micro);
        assert!(found.start_f1 < 0.9, "equal weights follow the sure, wrong member: {found:?}");
        assert_eq!(found.weights[1], 0.0, "{found:?}");
        assert!(found.weights[0] > 0.0 && found.weights[2] > 0.0, "{found:?}");
        assert!((found.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{found:?}");
        assert_eq!(found.micro_f1, 1.0, "{found:?}");
        assert_eq!(micro(&found.weights), (found.micro_f1, found.threshold), "the score is the weights' own");
        assert!(found.passes >= 2 && found.passes <= MAX_PASSES, "a pass that changes nothing ends the search: {found:?}");
        // one group from share 0, one pass, as --tune-linear-share: the smallest share of the best
        let single = search_shares(vec![0.5, 0.0, 0.5], &[vec![1]], 1, micro);
        assert_eq!(single.weights[1], 0.0, "{single:?}");
        assert_eq!(single.start_f1, single.micro_f1);
    }
}
