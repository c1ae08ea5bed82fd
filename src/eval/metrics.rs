//! Classification metrics over label sets: micro and macro precision/recall/F1, exact match,
//! and a per-label table.

use serde::Serialize;
use std::collections::BTreeMap;

/// Counts of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LabelCounts {
    /// Predicted and gold.
    pub tp: usize,
    /// Predicted, not gold.
    pub fp: usize,
    /// Gold, not predicted.
    pub fn_: usize,
}

impl LabelCounts {
    /// Precision, 0 when nothing was predicted.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// Recall, 0 when there is no gold example.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// F1 = 2tp / (2tp + fp + fn), 0 when all counts are 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
    /// Gold examples of this label.
    pub fn support(&self) -> usize {
        self.tp + self.fn_
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Accumulates predictions against gold label sets.
#[derive(Debug, Clone, Default)]
pub struct F1Accumulator {
    per_label: BTreeMap<String, LabelCounts>,
    examples: usize,
    exact: usize,
}

/// Summary scores.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scores {
    /// Examples scored.
    pub examples: usize,
    /// Micro-averaged precision (pooled counts).
    pub micro_precision: f64,
    /// Micro-averaged recall.
    pub micro_recall: f64,
    /// Micro-averaged F1.
    pub micro_f1: f64,
    /// Mean of per-label precision.
    pub macro_precision: f64,
    /// Mean of per-label recall.
    pub macro_recall: f64,
    /// Mean of per-label F1, over labels that occur in gold or predictions.
    pub macro_f1: f64,
    /// Share of examples whose predicted set equals the gold set.
    pub exact_match: f64,
}

impl F1Accumulator {
    /// Adds one example.
    pub fn add<S: AsRef<str>>(&mut self, predicted: &[S], gold: &[S]) {
        self.examples += 1;
        let is_in = |xs: &[S], x: &str| xs.iter().any(|y| y.as_ref() == x);
        for p in predicted {
            let c = self.per_label.entry(p.as_ref().to_owned()).or_default();
            if is_in(gold, p.as_ref()) {
                c.tp += 1;
            } else {
                c.fp += 1;
            }
        }
        for g in gold {
            if !is_in(predicted, g.as_ref()) {
                self.per_label.entry(g.as_ref().to_owned()).or_default().fn_ += 1;
            }
        }
        let same = predicted.len() == gold.len() && predicted.iter().all(|p| is_in(gold, p.as_ref()));
        if same {
            self.exact += 1;
        }
    }

    /// Per-label counts, by label name.
    pub fn per_label(&self) -> &BTreeMap<String, LabelCounts> {
        &self.per_label
    }

    /// Micro and macro scores.
    pub fn scores(&self) -> Scores {
        let mut total = LabelCounts::default();
        let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
        for c in self.per_label.values() {
            total.tp += c.tp;
            total.fp += c.fp;
            total.fn_ += c.fn_;
            p += c.precision();
            r += c.recall();
            f += c.f1();
        }
        let n = self.per_label.len().max(1) as f64;
        Scores {
            examples: self.examples,
            micro_precision: total.precision(),
            micro_recall: total.recall(),
            micro_f1: total.f1(),
            macro_precision: p / n,
            macro_recall: r / n,
            macro_f1: f / n,
            exact_match: ratio(self.exact, self.examples),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        let mut acc = F1Accumulator::default();
        // ex1: gold {a,b}, pred {a}    -> a tp, b fn
        // ex2: gold {b},   pred {b,c}  -> b tp, c fp
        // ex3: gold {c},   pred {c}    -> c tp (exact)
        // ex4: gold {a},   pred {}     -> a fn
        // ex5: gold {c},   pred {c}    -> c tp (exact)
        acc.add(&["a"], &["a", "b"]);
        acc.add(&["b", "c"], &["b"]);
        acc.add(&["c"], &["c"]);
        acc.add::<&str>(&[], &["a"]);
        acc.add(&["c"], &["c"]);
        let s = acc.scores();
        // pooled: tp 4, fp 1, fn 2 -> P 4/5, R 4/6, F1 8/11
        assert!((s.micro_precision - 0.8).abs() < 1e-12);
        assert!((s.micro_recall - 4.0 / 6.0).abs() < 1e-12);
        assert!((s.micro_f1 - 8.0 / 11.0).abs() < 1e-12);
        // a: tp1 fn1 -> F1 2/3; b: tp1 fn1 -> 2/3; c: tp2 fp1 -> 4/5
        let macro_f1 = (2.0 / 3.0 + 2.0 / 3.0 + 0.8) / 3.0;
        assert!((s.macro_f1 - macro_f1).abs() < 1e-12);
        assert!((s.exact_match - 0.4).abs() < 1e-12);
        assert_eq!(acc.per_label()["c"], LabelCounts { tp: 2, fp: 1, fn_: 0 });
        assert_eq!(s.examples, 5);
    }

    #[test]
    fn empty_is_zero_not_nan() {
        let s = F1Accumulator::default().scores();
        assert_eq!(s.micro_f1, 0.0);
        assert_eq!(s.macro_f1, 0.0);
    }
}
