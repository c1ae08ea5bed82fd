//! Decision thresholds of multi-label classifiers: one for all labels, or one a label tuned on
//! validation data (rare labels usually need a lower threshold than 0.5 to be predicted at all).

use serde::{Deserialize, Serialize};

/// Where each label's probability must reach for the label to be predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Thresholds {
    /// The same threshold for every label.
    Global(f64),
    /// One threshold a label, in label-index order.
    PerLabel(Vec<f64>),
}

impl Thresholds {
    /// The threshold of label `i`.
    pub fn of(&self, i: usize) -> f64 {
        match self {
            Thresholds::Global(t) => *t,
            Thresholds::PerLabel(v) => v[i],
        }
    }
}

/// Candidate thresholds: 0.05, 0.10, …, 0.95.
pub fn grid() -> impl Iterator<Item = f64> {
    (1..20).map(|i| i as f64 / 20.0)
}

/// What tuning maximises on the validation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Objective {
    /// Micro-F1: one threshold shared by every label.
    Micro,
    /// Macro-F1: one threshold a label, each maximising that label's F1.
    Macro,
}

/// Labels with fewer positive examples than this keep the shared threshold when tuning one a
/// label (the default of `tune-thresholds --min-support` and of `finetune --tune-thresholds`).
pub const MIN_SUPPORT: usize = 3;

/// The grid threshold with the highest `f1` (ties: the one nearest `fallback`).
fn best_on_grid(fallback: f64, f1: impl Fn(f64) -> f64) -> f64 {
    let mut best = (f64::NEG_INFINITY, f64::INFINITY, fallback);
    for t in grid() {
        let score = f1(t);
        let distance = (t - fallback).abs();
        if score > best.0 + 1e-12 || ((score - best.0).abs() <= 1e-12 && distance < best.1) {
            best = (score, distance, t);
        }
    }
    best.2
}

/// The grid threshold, shared by all labels, with the best micro-F1 (ties: nearest `fallback`).
pub fn tune_global(probs: &[Vec<f32>], gold: &[Vec<usize>], fallback: f64) -> f64 {
    let positives: usize = gold.iter().map(|g| g.len()).sum();
    best_on_grid(fallback, |t| {
        let (mut tp, mut fp) = (0usize, 0usize);
        for (p, g) in probs.iter().zip(gold) {
            for (j, &pj) in p.iter().enumerate() {
                if pj as f64 >= t {
                    if g.contains(&j) {
                        tp += 1;
                    } else {
                        fp += 1;
                    }
                }
            }
        }
        if tp == 0 { 0.0 } else { 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64 }
    })
}

/// For every label, the grid threshold that maximises the label's F1 on `probs` against `gold`
/// (ties go to the candidate nearest `fallback`). Labels with fewer than `min_support` positive
/// examples keep `fallback`: a threshold fitted to one or two examples is noise.
pub fn tune(probs: &[Vec<f32>], gold: &[Vec<usize>], num_labels: usize, fallback: f64, min_support: usize) -> Vec<f64> {
    let mut out = vec![fallback; num_labels];
    let mut positives = vec![Vec::new(); num_labels];
    let mut negatives = vec![Vec::new(); num_labels];
    for (p, g) in probs.iter().zip(gold) {
        for (j, &pj) in p.iter().enumerate() {
            if g.contains(&j) {
                positives[j].push(pj as f64);
            } else {
                negatives[j].push(pj as f64);
            }
        }
    }
    for j in 0..num_labels {
        if positives[j].len() < min_support.max(1) {
            continue;
        }
        out[j] = best_on_grid(fallback, |t| {
            let tp = positives[j].iter().filter(|&&p| p >= t).count() as f64;
            let fp = negatives[j].iter().filter(|&&p| p >= t).count() as f64;
            let fn_ = positives[j].len() as f64 - tp;
            if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fn_) }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuned_thresholds_separate_each_label() {
        // label 0: positives score 0.3–0.4, negatives ≤ 0.2 → any threshold in (0.2, 0.3] is perfect;
        // the one nearest 0.5 is 0.30. Label 1: one positive only → keeps the fallback.
        let probs = vec![vec![0.30f32, 0.9], vec![0.40, 0.1], vec![0.20, 0.1], vec![0.10, 0.2], vec![0.35, 0.1]];
        let gold = vec![vec![0, 1], vec![0], vec![], vec![], vec![0]];
        let t = tune(&probs, &gold, 2, 0.5, 2);
        assert!((t[0] - 0.30).abs() < 1e-9, "{t:?}");
        assert_eq!(t[1], 0.5);
        let th = Thresholds::PerLabel(t);
        assert!((th.of(0) - 0.3).abs() < 1e-9);
        assert_eq!(Thresholds::Global(0.4).of(7), 0.4);
        // one shared threshold: 0.25 and 0.30 both give micro-F1 1 on label 0 … but label 1's
        // negatives at 0.2 are then predicted; 0.30 keeps every decision right
        assert!((tune_global(&probs, &gold, 0.5) - 0.30).abs() < 1e-9);
        // with min_support 1 label 1 is tuned too: 0.9 positive vs 0.2 negatives → (0.2, 0.9], nearest 0.5
        assert_eq!(tune(&probs, &gold, 2, 0.5, 1)[1], 0.5);
    }
}
