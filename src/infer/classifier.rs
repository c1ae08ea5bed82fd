//! Classifier inference: probabilities in batches, decisions, and scoring against gold labels.

use crate::data::batch::{eval_batches, TokenBatch};
use crate::store::weights::load_weights;
use crate::store::model_dir::{read_labels, ModelDir, ModelKind, ModelMeta};
use crate::eval::metrics::{F1Accumulator, Scores};
use crate::infer::linear::LinearClassifier;
use crate::model::backbone::textcnn::FoldedConvs;
use crate::model::flops::Pass;
use crate::model::Classifier;
use crate::data::classify::{LabelSet, Problem};
use crate::text::labelled::Example;
use crate::text::tokenizer::SpecialIds;
use crate::eval::thresholds::{Objective, Thresholds};
use crate::config::Precision;
use anyhow::{bail, Context, Result};
use burn::prelude::*;

/// Label probabilities `[n][labels]` of already-wrapped sequences (padded with `specials.pad`),
/// in input order; a TextCNN's through `folded` when given (see [`Classifier::folded`]).
#[allow(clippy::too_many_arguments)]
pub fn probabilities(model: &Classifier, folded: Option<&FoldedConvs>, seqs: &[Vec<u32>], specials: SpecialIds, problem: Problem, batch_size: usize, device: &Device) -> Vec<Vec<f32>> {
    let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    let mut out = vec![Vec::new(); seqs.len()];
    for idx in eval_batches(&lengths, batch_size) {
        let batch: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].as_slice()).collect();
        let tokens = TokenBatch::new(&batch, specials, device);
        let probs = Classifier::probabilities(model.predict(&tokens, folded), problem);
        let [b, c] = probs.dims();
        let flat: Vec<f32> = probs.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
        for (k, &i) in idx.iter().enumerate().take(b) {
            out[i] = flat[k * c..(k + 1) * c].to_vec();
        }
    }
    out
}

/// Chosen labels with their probabilities, best first. Single-label: the arg-max. Multi-label:
/// every label at or above its threshold. `k` caps the count (and for single-label, `k > 1`
/// returns the top k whatever the threshold, like fastText's `predict k`).
pub fn decide(probs: &[f32], problem: Problem, thresholds: &Thresholds, k: Option<usize>) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let chosen: Vec<(usize, f32)> = match problem {
        Problem::SingleLabel => order.into_iter().take(k.unwrap_or(1).max(1)).map(|i| (i, probs[i])).collect(),
        Problem::MultiLabel => order.into_iter().filter(|&i| probs[i] as f64 >= thresholds.of(i)).map(|i| (i, probs[i])).collect(),
    };
    match k {
        Some(k) => chosen.into_iter().take(k).collect(),
        None => chosen,
    }
}

/// Mean loss computed from probabilities, matching the training losses: cross-entropy of the
/// gold label (single-label) or binary cross-entropy averaged over every label (multi-label).
pub fn loss_from_probs(probs: &[Vec<f32>], gold: &[Vec<usize>], problem: Problem) -> f64 {
    const EPS: f64 = 1e-7;
    let mut total = 0.0;
    let mut count = 0usize;
    for (p, g) in probs.iter().zip(gold) {
        match problem {
            Problem::SingleLabel => {
                if let Some(&t) = g.first() {
                    total -= (p[t] as f64).max(EPS).ln();
                    count += 1;
                }
            }
            Problem::MultiLabel => {
                for (j, &pj) in p.iter().enumerate() {
                    let pj = (pj as f64).clamp(EPS, 1.0 - EPS);
                    total -= if g.contains(&j) { pj.ln() } else { (1.0 - pj).ln() };
                }
                count += p.len();
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// Scores of a set of examples.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Micro/macro scores.
    pub scores: Scores,
    /// Counts per label (for the per-label table).
    pub accumulator: F1Accumulator,
}

/// Scores probabilities against the raw examples; gold labels the model does not know count as
/// misses.
pub fn score(probs: &[Vec<f32>], examples: &[Example], encoded_gold: &[Vec<usize>], labels: &LabelSet, problem: Problem, thresholds: &Thresholds) -> Evaluation {
    let mut acc = F1Accumulator::default();
    for (p, ex) in probs.iter().zip(examples) {
        let predicted: Vec<&str> = decide(p, problem, thresholds, None).into_iter().map(|(i, _)| labels.name(i)).collect();
        let gold: Vec<&str> = ex.labels.iter().map(|s| s.as_str()).collect();
        acc.add(&predicted, &gold);
    }
    Evaluation { loss: loss_from_probs(probs, encoded_gold, problem), scores: acc.scores(), accumulator: acc }
}

/// What computes a member's probabilities.
pub enum MemberModel {
    /// A fine-tuned backbone + head, with its directory's tokenizer and config.
    Neural {
        /// Its directory's small files (tokenizer, config).
        dir: Box<ModelDir>,
        /// The model on the plain device.
        model: Classifier,
        /// A TextCNN's convolutions folded into its embeddings, for prediction (see
        /// [`Classifier::folded`]).
        folded: Option<FoldedConvs>,
    },
    /// A TF-IDF + linear SVM classifier.
    Linear(LinearClassifier),
}

/// One model of a [`LoadedClassifier`].
pub struct Member {
    /// The directory it was loaded from.
    pub path: std::path::PathBuf,
    /// Its `model.json`.
    pub meta: ModelMeta,
    /// Its labels, in its own output order.
    pub labels: LabelSet,
    /// The model.
    pub model: MemberModel,
    /// In an ensemble whose labels this member orders otherwise: for each of the ensemble's
    /// labels, the member's output unit. `None`: the same order.
    pub order: Option<Vec<usize>>,
}

impl Member {
    fn open(path: &std::path::Path, device: &Device) -> Result<Self> {
        Self::load(path, ModelMeta::read(path)?, device)
    }

    fn load(path: &std::path::Path, meta: ModelMeta, device: &Device) -> Result<Self> {
        match meta.kind {
            ModelKind::Classifier => {
                let dir = ModelDir::with_meta(path, meta)?;
                let labels = dir.labels.clone().expect("classifier has labels");
                let model = Classifier::init_with_head(&dir.config.model, dir.config.finetune.head, labels.len(), device);
                let model = load_weights(model, &dir.weights(), dir.meta.weights_bytes)?;
                let folded = model.folded();
                Ok(Self { path: path.to_path_buf(), meta: dir.meta.clone(), labels, model: MemberModel::Neural { dir: Box::new(dir), model, folded }, order: None })
            }
            ModelKind::Linear => {
                let labels = read_labels(path)?;
                meta.check_thresholds(path, labels.len())?;
                let model = LinearClassifier::load(path, &labels, meta.weights_bytes)?;
                Ok(Self { path: path.to_path_buf(), meta, labels, model: MemberModel::Linear(model), order: None })
            }
            _ => bail!("{}: this is a pre-trained model, not a classifier (fine-tune it first with `bertlu finetune --init`)", path.display()),
        }
    }

    /// Whether it is a `bertlu linear` model.
    pub fn is_linear(&self) -> bool {
        matches!(self.model, MemberModel::Linear(_))
    }

    /// Its problem type.
    pub fn problem(&self) -> Problem {
        self.meta.problem.unwrap_or(Problem::MultiLabel)
    }

    /// Model inputs of texts (a TAB makes a text a sentence pair) with this member's
    /// tokenizer; `None` for a linear member, which reads words, not pieces.
    pub fn encode(&self, texts: &[String]) -> Option<Vec<Vec<u32>>> {
        match &self.model {
            MemberModel::Neural { dir, .. } => Some(crate::data::classify::encode_texts(texts, &dir.tokenizer, dir.config.model.max_len)),
            MemberModel::Linear(_) => None,
        }
    }

    /// FLOPs of its forward pass over each text as prediction runs it now (`model::flops`);
    /// `None` for a linear member.
    pub fn forward_flops(&self, texts: &[String]) -> Option<Vec<f64>> {
        let MemberModel::Neural { dir, folded, .. } = &self.model else { return None };
        let config = &dir.config;
        // folded only once a table is built (before, prediction multiplies)
        let pass = if folded.as_ref().is_some_and(|f| f.tables_built() > 0) { Pass::Folded } else { Pass::Prediction };
        Some(self.encode(texts)?.iter().map(|s| crate::model::flops::classifier_forward(&config.model, s.len(), self.labels.len(), config.finetune.head, pass)).collect())
    }

    /// Its label probabilities of texts, in its own label order.
    pub fn probabilities(&self, texts: &[String], problem: Problem, batch_size: usize, device: &Device) -> Vec<Vec<f32>> {
        self.outputs(texts, problem, batch_size, device).0
    }

    /// Its label probabilities of texts, in its own label order, and whether each text was cut
    /// to its `max_len` (never, for a linear member).
    fn outputs(&self, texts: &[String], problem: Problem, batch_size: usize, device: &Device) -> (Vec<Vec<f32>>, Vec<bool>) {
        match &self.model {
            MemberModel::Neural { dir, model, folded } => {
                let (seqs, cut) = crate::data::classify::encode_texts_flagged(texts, &dir.tokenizer, dir.config.model.max_len);
                (probabilities(model, folded.as_ref(), &seqs, dir.tokenizer.specials(), problem, batch_size, device), cut)
            }
            MemberModel::Linear(m) => (m.probabilities(texts, problem), vec![false; texts.len()]),
        }
    }
}

/// What a classifier says of some texts.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// Label probabilities, `[texts][labels]`.
    pub probs: Vec<Vec<f32>>,
    /// Whether a text was cut to fit a member's `max_len`.
    pub truncated: Vec<bool>,
}

/// A classifier loaded for inference: one fine-tuned model, or an ensemble whose members'
/// probabilities are averaged.
pub struct LoadedClassifier {
    /// The directory it was loaded from (its `model.json` holds the decision thresholds).
    pub path: std::path::PathBuf,
    /// That `model.json`; for one model the same as its member's, and the copy that
    /// `tune_thresholds` updates.
    pub meta: ModelMeta,
    /// The models: one, or an ensemble's members (same labels, in their own order: see
    /// [`Member::order`]; same problem).
    pub members: Vec<Member>,
    /// Its labels.
    pub labels: LabelSet,
    /// Its problem type.
    pub problem: Problem,
    /// The device it runs on.
    pub device: Device,
    /// Number format of its products' inputs: f32 (as loaded), or bf16 (see
    /// [`LoadedClassifier::with_precision`]).
    pub precision: Precision,
}

impl LoadedClassifier {
    /// Loads a fine-tuned model directory or an ensemble directory.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let device = crate::model::device::default_device();
        let meta = ModelMeta::read(path)?;
        if meta.kind != ModelKind::Ensemble {
            let member = Member::load(path, meta, &device)?;
            let (labels, problem) = (member.labels.clone(), member.problem());
            return Ok(Self { path: path.to_path_buf(), meta: member.meta.clone(), members: vec![member], labels, problem, device, precision: Precision::F32 });
        }
        let labels = read_labels(path)?;
        let problem = meta.problem.unwrap_or(Problem::MultiLabel);
        meta.check_thresholds(path, labels.len())?;
        if meta.members.is_empty() {
            bail!("{}: an ensemble without members", path.join(crate::store::layout::META_FILE).display());
        }
        if !crate::store::model_dir::member_weights_fit(&meta.member_weights, meta.members.len()) {
            bail!("{}: member_weights must hold {} non-negative values, not all zero", path.join(crate::store::layout::META_FILE).display(), meta.members.len());
        }
        let mut members = meta.members.iter().map(|m| Member::open(&path.join(m), &device)).collect::<Result<Vec<_>>>()?;
        for m in &mut members {
            m.order = member_order(m, &labels, problem)?;
        }
        Ok(Self { path: path.to_path_buf(), meta, members, labels, problem, device, precision: Precision::F32 })
    }

    /// The same classifier predicting with `precision`: with bf16 the neural members' linear
    /// layers and convolutions take bf16 inputs and sum in f32 (AVX-512 BF16 CPUs; elsewhere f32,
    /// see [`crate::model::kernels::bf16::supported`]) — faster, and the probabilities move by
    /// bf16's rounding (about 1e-3), so a label near its threshold can change. A TextCNN whose
    /// convolutions are folded into its embeddings ([`Classifier::folded`]) computes them in f32
    /// either way: it reads them from its table.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The same classifier cutting texts at `max_len` pieces instead of the `max_len` it was
    /// trained with (e.g. longer, where training cut many texts and the position table has the
    /// rows; see [`crate::config::ModelConfig::reading`]). Linear members read whole texts either
    /// way. `None`: as trained.
    pub fn with_max_len(mut self, max_len: Option<usize>) -> Result<Self> {
        let Some(max_len) = max_len else { return Ok(self) };
        for m in &mut self.members {
            if let MemberModel::Neural { dir, .. } = &mut m.model {
                dir.config.model = dir.config.model.reading(max_len).with_context(|| format!("--max-len {max_len}: {}", m.path.display()))?;
            }
        }
        Ok(self)
    }

    /// Model inputs of texts as the first neural member reads them (`None` when every member
    /// is linear).
    pub fn encode(&self, texts: &[String]) -> Option<Vec<Vec<u32>>> {
        self.members.iter().find_map(|m| m.encode(texts))
    }

    /// FLOPs of the neural members' forward passes over each text (`None` when every member is linear).
    pub fn forward_flops(&self, texts: &[String]) -> Option<Vec<f64>> {
        self.members.iter().filter_map(|m| m.forward_flops(texts)).reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect())
    }

    /// Probabilities of texts: the members', averaged (weighted by the ensemble's member
    /// weights when it has them).
    pub fn probabilities(&self, texts: &[String], batch_size: usize) -> Vec<Vec<f32>> {
        self.predict(texts, batch_size).probs
    }

    /// [`LoadedClassifier::probabilities`], and which texts were cut to a member's `max_len`.
    pub fn predict(&self, texts: &[String], batch_size: usize) -> Predictions {
        let (per_member, cuts): (Vec<_>, Vec<_>) = self.member_outputs(texts, batch_size).into_iter().unzip();
        let truncated = (0..texts.len()).map(|i| cuts.iter().any(|c: &Vec<bool>| c[i])).collect();
        Predictions { probs: mix(&per_member, &self.member_weights()), truncated }
    }

    /// Each member's probabilities of texts, in the ensemble's label order.
    pub fn member_probabilities(&self, texts: &[String], batch_size: usize) -> Vec<Vec<Vec<f32>>> {
        self.member_outputs(texts, batch_size).into_iter().map(|(p, _)| p).collect()
    }

    fn member_outputs(&self, texts: &[String], batch_size: usize) -> Vec<(Vec<Vec<f32>>, Vec<bool>)> {
        let _precision = crate::model::kernels::prediction_precision_scope(self.precision);
        self.members
            .iter()
            .map(|m| {
                let (p, cut) = m.outputs(texts, self.problem, batch_size, &self.device);
                let p = match &m.order {
                    Some(order) => p.into_iter().map(|row| order.iter().map(|&j| row[j]).collect()).collect(),
                    None => p,
                };
                (p, cut)
            })
            .collect()
    }

    /// Each member's share of the probabilities (summing to one).
    pub fn member_weights(&self) -> Vec<f32> {
        let raw: Vec<f64> = if self.meta.member_weights.len() == self.members.len() { self.meta.member_weights.clone() } else { vec![1.0; self.members.len()] };
        let total: f64 = raw.iter().sum();
        raw.iter().map(|w| (w / total) as f32).collect()
    }

    /// The stored thresholds, or one global `threshold` that replaces them.
    pub fn thresholds(&self, threshold: Option<f64>) -> Thresholds {
        match threshold {
            Some(t) => Thresholds::Global(t),
            None => self.meta.thresholds(),
        }
    }

    /// Probabilities and gold label indices of labelled examples.
    pub fn probabilities_and_gold(&self, examples: &[Example], batch_size: usize) -> (Vec<Vec<f32>>, Vec<Vec<usize>>) {
        let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
        let gold = examples.iter().map(|e| self.labels.indices(&e.labels)).collect();
        (self.probabilities(&texts, batch_size), gold)
    }

    /// Tunes thresholds on `examples` for `objective` (macro: one a label, labels with fewer than
    /// `min_support` positives keeping the global one; micro: one global threshold), stores them
    /// in `model.json` and returns the scores before (stored thresholds) and after.
    pub fn tune_thresholds(&mut self, examples: &[Example], objective: Objective, min_support: usize, batch_size: usize) -> Result<(Scores, Scores)> {
        if self.problem != Problem::MultiLabel {
            bail!("{}: per-label thresholds apply to multi-label classifiers only", self.path.display());
        }
        let (probs, gold) = self.probabilities_and_gold(examples, batch_size);
        let before = score(&probs, examples, &gold, &self.labels, self.problem, &self.thresholds(None)).scores;
        let fallback = self.meta.threshold;
        let tuned = match objective {
            Objective::Macro => Thresholds::PerLabel(crate::eval::thresholds::tune(&probs, &gold, self.labels.len(), fallback, min_support)),
            Objective::Micro => Thresholds::Global(crate::eval::thresholds::tune_global(&probs, &gold, fallback)),
        };
        let after = score(&probs, examples, &gold, &self.labels, self.problem, &tuned).scores;
        self.meta.set_thresholds(tuned, self.labels.len(), &self.path)?;
        Ok((before, after))
    }

    /// The labels chosen from one text's probabilities, fastText style: `__label__a __label__b`,
    /// each followed by its probability with `with_probs`; at most `k` labels.
    pub fn prediction_line(&self, probs: &[f32], thresholds: &Thresholds, k: Option<usize>, with_probs: bool) -> String {
        let prefix = crate::text::labelled::LABEL_PREFIX;
        let words: Vec<String> = decide(probs, self.problem, thresholds, k)
            .into_iter()
            .map(|(i, p)| if with_probs { format!("{prefix}{} {p:.5}", self.labels.name(i)) } else { format!("{prefix}{}", self.labels.name(i)) })
            .collect();
        words.join(" ")
    }

    /// [`LoadedClassifier::tune_thresholds`] (batches of 64), and the change in one line.
    pub fn tune_thresholds_described(&mut self, examples: &[Example], objective: Objective, min_support: usize) -> Result<String> {
        let (before, after) = self.tune_thresholds(examples, objective, min_support, 64)?;
        let what = match &self.meta.label_thresholds {
            Some(tuned) => {
                let moved = tuned.iter().filter(|&&t| (t - self.meta.threshold).abs() > 1e-9).count();
                format!("{moved} of {} labels tuned away from {}", tuned.len(), self.meta.threshold)
            }
            None => format!("one threshold for every label: {}", self.meta.threshold),
        };
        Ok(format!(
            "thresholds ({objective:?}-F1): {what}, on {} examples; micro-F1 {:.4} → {:.4}, macro-F1 {:.4} → {:.4} (on the tuning data)",
            examples.len(), before.micro_f1, after.micro_f1, before.macro_f1, after.macro_f1
        ))
    }

    /// Scores labelled examples with the stored thresholds, or one global `threshold` instead.
    pub fn evaluate(&self, examples: &[Example], threshold: Option<f64>, batch_size: usize) -> Evaluation {
        let (probs, gold) = self.probabilities_and_gold(examples, batch_size);
        score(&probs, examples, &gold, &self.labels, self.problem, &self.thresholds(threshold))
    }
}

/// The weighted sum of several members' probabilities (`weights` summing to one).
pub fn mix(per_member: &[Vec<Vec<f32>>], weights: &[f32]) -> Vec<Vec<f32>> {
    let mut sum: Vec<Vec<f32>> = per_member.first().map(|p| p.iter().map(|row| vec![0.0; row.len()]).collect()).unwrap_or_default();
    for (p, &w) in per_member.iter().zip(weights) {
        for (s, q) in sum.iter_mut().zip(p) {
            s.iter_mut().zip(q).for_each(|(a, b)| *a += w * b);
        }
    }
    sum
}

/// Where each of the ensemble's labels sits among a member's outputs: `None` when the member
/// orders them the same way (training files with other label frequencies order them otherwise).
/// Refuses a member with another label set or problem type: averaging would mix different outputs.
pub fn member_order(m: &Member, labels: &LabelSet, problem: Problem) -> Result<Option<Vec<usize>>> {
    let own = &m.labels;
    let own_problem = m.problem();
    if own_problem != problem {
        bail!("{}: a {own_problem:?} classifier, the ensemble is {problem:?}", m.path.display());
    }
    if own == labels {
        return Ok(None);
    }
    let differ = |what: String| anyhow::anyhow!("{}: its labels differ from the ensemble's ({} vs {} labels, {what}): members must be trained on the same label set", m.path.display(), own.len(), labels.len());
    let order = labels
        .names()
        .iter()
        .map(|n| own.get(n).ok_or_else(|| differ(format!("`{n}` is not among its labels"))))
        .collect::<Result<Vec<_>>>()?;
    if let Some(extra) = own.names().iter().find(|n| labels.get(n).is_none()) {
        return Err(differ(format!("`{extra}` is not among the ensemble's")));
    }
    Ok(Some(order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let p = [0.2, 0.9, 0.55, 0.6];
        assert_eq!(decide(&p, Problem::MultiLabel, &Thresholds::Global(0.5), None), vec![(1, 0.9), (3, 0.6), (2, 0.55)]);
        assert_eq!(decide(&p, Problem::MultiLabel, &Thresholds::Global(0.5), Some(2)), vec![(1, 0.9), (3, 0.6)]);
        assert!(decide(&p, Problem::MultiLabel, &Thresholds::Global(0.95), None).is_empty());
        assert_eq!(decide(&p, Problem::SingleLabel, &Thresholds::Global(0.5), None), vec![(1, 0.9)]);
        assert_eq!(decide(&p, Problem::SingleLabel, &Thresholds::Global(0.99), Some(2)), vec![(1, 0.9), (3, 0.6)]);
        // per-label thresholds: label 0 at 0.1 is chosen, label 1 at 0.95 is not
        let per = Thresholds::PerLabel(vec![0.1, 0.95, 0.5, 0.5]);
        assert_eq!(decide(&p, Problem::MultiLabel, &per, None), vec![(3, 0.6), (2, 0.55), (0, 0.2)]);
    }

    #[test]
    fn losses_match_hand_computation() {
        let probs = vec![vec![0.8f32, 0.1], vec![0.3, 0.6]];
        let gold = vec![vec![0], vec![1]];
        let ce = -((0.8f64).ln() + (0.6f64).ln()) / 2.0;
        assert!((loss_from_probs(&probs, &gold, Problem::SingleLabel) - ce).abs() < 1e-6);
        let bce = -((0.8f64).ln() + (0.9f64).ln() + (0.7f64).ln() + (0.6f64).ln()) / 4.0;
        assert!((loss_from_probs(&probs, &gold, Problem::MultiLabel) - bce).abs() < 1e-6);
    }
}
