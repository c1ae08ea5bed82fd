//! The TF-IDF + linear SVM classifier: the bag-of-words model people use today, built in so it
//! can be measured beside the fine-tuned models on the same files and averaged with them in an
//! ensemble (its errors differ from theirs). One SVM a label on word and character n-gram
//! TF-IDF vectors; margins become probabilities through one logistic curve fitted on
//! validation data.

pub mod calibration;
pub mod features;
pub mod svm;

use crate::store::weights::check_length;

use crate::store::atomic::{write_atomic, write_via_tmp};

use crate::store::layout::LABELS_FILE;
use crate::data::classify::{LabelSet, Problem};
use anyhow::{bail, Context, Result};
use features::{Analyzer, FeatureSpace, Sparse, TfIdf};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use crate::store::layout::{LINEAR_FILE, LINEAR_WEIGHTS_FILE, TERMS_FILE};


/// What the features are made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureOptions {
    /// Longest word n-gram.
    pub ngrams: usize,
    /// Character n-gram lengths inside words, `(min, max)`; `None`: no character block.
    pub chars: Option<(usize, usize)>,
    /// At most this many character n-grams (the most frequent; 0: no cap).
    pub max_char_features: usize,
    /// Least number of training texts a term is found in.
    pub min_df: usize,
}

impl FeatureOptions {
    fn analyzers(&self) -> Vec<(Analyzer, usize)> {
        let mut v = vec![(Analyzer::Words(self.ngrams), 0)];
        if let Some((lo, hi)) = self.chars {
            v.push((Analyzer::Chars(lo, hi), self.max_char_features));
        }
        v
    }
}

/// How a linear classifier was built and how its margins map to probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// Features.
    pub features: FeatureOptions,
    /// SVM inverse regularisation strength.
    pub c: f64,
    /// Weights smaller than this in magnitude were dropped after training.
    pub prune: f32,
    /// Probability = sigmoid(slope · margin + intercept).
    pub slope: f64,
    /// See `slope`.
    pub intercept: f64,
    /// Each block's analyzer and term count, in feature order.
    pub blocks: Vec<(String, usize)>,
    /// Number of stored weights.
    pub weights: usize,
    /// Length of the terms file in bytes, checked on load to catch truncation.
    pub terms_bytes: u64,
}

/// A trained linear classifier.
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    /// Its features.
    pub space: FeatureSpace,
    /// Settings and calibration.
    pub params: LinearParams,
    /// Feature `j`'s weights are `labels[starts[j]..starts[j + 1]]` with `values[…]`: the
    /// non-zero weights, feature by feature, so scoring a sparse text touches only its features.
    starts: Vec<u32>,
    labels: Vec<u16>,
    values: Vec<f32>,
    /// One bias a label.
    pub biases: Vec<f32>,
}

impl LinearClassifier {
    /// Fits the features on `texts` and one SVM a label (rayon-parallel over labels), dropping
    /// weights below `prune` in magnitude; `gold[i]` lists the label indices of text `i` among
    /// `num_labels`. Uncalibrated (slope 1, intercept 0) until [`LinearClassifier::calibrate`].
    pub fn train<S: AsRef<str> + Sync>(texts: &[S], gold: &[Vec<usize>], num_labels: usize, features: &FeatureOptions, options: &svm::SvmOptions, prune: f32) -> Result<Self> {
        if num_labels > u16::MAX as usize {
            bail!("the linear classifier takes at most {} labels ({num_labels} given)", u16::MAX);
        }
        let words: Vec<Vec<String>> = texts.par_iter().map(|t| features::words(t.as_ref())).collect();
        let space = FeatureSpace::fit(&words, &features.analyzers(), features.min_df);
        let x: Vec<Sparse> = words.par_iter().map(|w| space.transform_words(w)).collect();
        let dim = space.len();
        let models: Vec<(Sparse, f32)> = (0..num_labels)
            .into_par_iter()
            .map(|j| {
                let y: Vec<bool> = gold.iter().map(|g| g.contains(&j)).collect();
                let m = svm::train(&x, &y, dim, &svm::SvmOptions { seed: options.seed.wrapping_add(j as u64), ..*options });
                let kept = m.w.iter().enumerate().filter(|(_, v)| v.abs() >= prune && **v != 0.0).map(|(i, &v)| (i as u32, v)).collect();
                (kept, m.b)
            })
            .collect();
        let mut counts = vec![0u32; dim + 1];
        models.iter().flat_map(|(w, _)| w).for_each(|&(i, _)| counts[i as usize + 1] += 1);
        let starts: Vec<u32> = counts.iter().scan(0u32, |acc, &c| { *acc += c; Some(*acc) }).collect();
        let nnz = *starts.last().unwrap_or(&0) as usize;
        let (mut labels, mut values, mut fill) = (vec![0u16; nnz], vec![0f32; nnz], starts.clone());
        for (j, (w, _)) in models.iter().enumerate() {
            for &(i, v) in w {
                let at = fill[i as usize] as usize;
                labels[at] = j as u16;
                values[at] = v;
                fill[i as usize] += 1;
            }
        }
        let biases = models.iter().map(|m| m.1).collect();
        let blocks = space.blocks.iter().map(|b| (b.analyzer.tag(), b.terms.len())).collect();
        let params = LinearParams { features: features.clone(), c: options.c, prune, slope: 1.0, intercept: 0.0, blocks, weights: nnz, terms_bytes: 0 };
        Ok(Self { space, params, starts, labels, values, biases })
    }

    /// Margins `[text][label]`.
    pub fn margins<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<f32>> {
        texts
            .par_iter()
            .map(|t| {
                let mut m = self.biases.clone();
                for (j, v) in self.space.transform(t.as_ref()) {
                    let (a, b) = (self.starts[j as usize] as usize, self.starts[j as usize + 1] as usize);
                    for (&l, &w) in self.labels[a..b].iter().zip(&self.values[a..b]) {
                        m[l as usize] += v * w;
                    }
                }
                m
            })
            .collect()
    }

    /// Fits the margin → probability curve on labelled texts (validation data, not the
    /// training texts, whose margins the SVM has already pushed past ±1).
    pub fn calibrate<S: AsRef<str> + Sync>(&mut self, texts: &[S], gold: &[Vec<usize>]) {
        let m = self.margins(texts);
        let (slope, intercept) = calibration::fit(&m, gold);
        self.params.slope = slope;
        self.params.intercept = intercept;
    }

    /// Label probabilities `[text][label]`: calibrated sigmoids (multi-label), or the same
    /// scaled to sum to one (single-label).
    pub fn probabilities<S: AsRef<str> + Sync>(&self, texts: &[S], problem: Problem) -> Vec<Vec<f32>> {
        let (a, b) = (self.params.slope, self.params.intercept);
        self.margins(texts)
            .into_iter()
            .map(|row| {
                let mut p: Vec<f32> = row.into_iter().map(|m| calibration::sigmoid(a * m as f64 + b) as f32).collect();
                if problem == Problem::SingleLabel {
                    let s: f32 = p.iter().sum();
                    if s > 0.0 {
                        p.iter_mut().for_each(|v| *v /= s);
                    }
                }
                p
            })
            .collect()
    }

    /// Number of features.
    pub fn num_features(&self) -> usize {
        self.space.len()
    }

    /// Writes the terms, weights and settings into `dir`; returns the weight file's length
    /// (for `model.json`). `linear.bin`, little-endian: `starts` (u32, features + 1), `labels`
    /// (u16, one a weight), `values` (f32, one a weight), `biases` (f32, one a label). Labels
    /// are written by the caller, as for every classifier.
    pub fn save(&self, dir: &Path) -> Result<u64> {
        let mut terms = String::new();
        for b in &self.space.blocks {
            for (t, idf) in b.terms.iter().zip(&b.idf) {
                terms.push_str(&format!("{idf}\t{t}\n"));
            }
        }
        let terms_path = dir.join(TERMS_FILE);
        write_atomic(&terms_path, terms.as_bytes())?;
        let mut bytes = Vec::with_capacity(self.weights_bytes());
        self.starts.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.labels.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.biases.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        write_atomic(&dir.join(LINEAR_WEIGHTS_FILE), &bytes)?;
        let params = LinearParams { terms_bytes: std::fs::metadata(&terms_path)?.len(), ..self.params.clone() };
        write_via_tmp(&dir.join(LINEAR_FILE), |tmp| Ok(std::fs::write(tmp, serde_json::to_string_pretty(&params)?)?))?;
        Ok(bytes.len() as u64)
    }

    fn weights_bytes(&self) -> usize {
        4 * self.starts.len() + 6 * self.values.len() + 4 * self.biases.len()
    }

    /// Reads a model written by [`LinearClassifier::save`] for `labels` labels.
    pub fn load(dir: &Path, labels: &LabelSet, weights_bytes: u64) -> Result<Self> {
        let p = dir.join(LINEAR_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let params: LinearParams = serde_json::from_str(&text).with_context(|| format!("{}: invalid linear model settings", p.display()))?;
        let terms_path = dir.join(TERMS_FILE);
        check_length(&terms_path, params.terms_bytes)?;
        let text = std::fs::read_to_string(&terms_path).with_context(|| format!("{}: cannot read", terms_path.display()))?;
        let mut lines = text.lines().enumerate();
        let mut blocks = Vec::new();
        for (tag, count) in &params.blocks {
            let analyzer = Analyzer::parse(tag).with_context(|| format!("{}: unknown feature block `{tag}`", p.display()))?;
            let (mut terms, mut idf) = (Vec::with_capacity(*count), Vec::with_capacity(*count));
            for _ in 0..*count {
                let (n, line) = lines.next().with_context(|| format!("{}: fewer terms than {} lists", terms_path.display(), LINEAR_FILE))?;
                let bad = || anyhow::anyhow!("{}:{}: expected `idf<TAB>term`", terms_path.display(), n + 1);
                let (v, t) = line.split_once('\t').ok_or_else(bad)?;
                idf.push(v.parse::<f32>().map_err(|_| bad())?);
                terms.push(t.to_owned());
            }
            blocks.push(TfIdf::from_parts(analyzer, terms, idf));
        }
        if lines.next().is_some() {
            bail!("{}: more terms than {} lists", terms_path.display(), LINEAR_FILE);
        }
        let space = FeatureSpace { blocks };
        let (k, d, nnz) = (labels.len(), space.len(), params.weights);
        let expected = (4 * (d + 1) + 6 * nnz + 4 * k) as u64;
        if weights_bytes != expected {
            bail!("{}: {k} labels ({}), {d} features and {nnz} weights need {expected} bytes of weights, model.json says {weights_bytes}", dir.display(), LABELS_FILE);
        }
        let weights_path = dir.join(LINEAR_WEIGHTS_FILE);
        check_length(&weights_path, expected)?;
        let bytes = std::fs::read(&weights_path).with_context(|| format!("{}: cannot read", weights_path.display()))?;
        let (s, rest) = bytes.split_at(4 * (d + 1));
        let (l, rest) = rest.split_at(2 * nnz);
        let (v, b) = rest.split_at(4 * nnz);
        let u32s = |x: &[u8]| x.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
        let f32s = |x: &[u8]| x.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
        let starts = u32s(s);
        let labels_of: Vec<u16> = l.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        if starts.windows(2).any(|w| w[0] > w[1]) || starts.last().copied() != Some(nnz as u32) || labels_of.iter().any(|&j| j as usize >= k) {
            bail!("{}: corrupt weights", weights_path.display());
        }
        Ok(Self { space, params, starts, labels: labels_of, values: f32s(v), biases: f32s(b) })
    }
}
