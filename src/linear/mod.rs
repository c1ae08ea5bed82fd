//! The TF-IDF + linear SVM classifier: the bag-of-words model people use today, built in so it
//! can be measured beside the fine-tuned models on the same files and averaged with them in an
//! ensemble (its errors differ from theirs). One SVM a label on word uni- and bigram TF-IDF
//! vectors; margins become probabilities through one logistic curve fitted on validation data.

pub mod calibration;
pub mod features;
pub mod svm;

use crate::checkpoint::{check_length, write_atomic, write_via_tmp, LABELS_FILE};
use crate::tasks::classify::{LabelSet, Problem};
use anyhow::{bail, Context, Result};
use features::{Sparse, TfIdf};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The terms and their inverse document frequencies, one `idf<TAB>term` a line.
pub const TERMS_FILE: &str = "terms.txt";
/// The weights: label-major f32 little-endian, then the biases.
pub const LINEAR_WEIGHTS_FILE: &str = "linear.bin";
/// Feature and calibration settings.
pub const LINEAR_FILE: &str = "linear.json";

/// How a linear classifier was built and how its margins map to probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// Longest word n-gram.
    pub ngrams: usize,
    /// Least number of training texts a term is found in.
    pub min_df: usize,
    /// SVM inverse regularisation strength.
    pub c: f64,
    /// Probability = sigmoid(slope · margin + intercept).
    pub slope: f64,
    /// See `slope`.
    pub intercept: f64,
    /// Number of features (checked against the terms file).
    pub features: usize,
    /// Length of the terms file in bytes, checked on load to catch truncation.
    pub terms_bytes: u64,
}

/// A trained linear classifier.
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    /// Its features.
    pub tfidf: TfIdf,
    /// Settings and calibration.
    pub params: LinearParams,
    /// One weight vector a label, `[label][feature]`.
    pub weights: Vec<Vec<f32>>,
    /// One bias a label.
    pub biases: Vec<f32>,
}

impl LinearClassifier {
    /// Fits the features on `texts` and one SVM a label (rayon-parallel over labels);
    /// `gold[i]` lists the label indices of text `i` among `num_labels`. Uncalibrated
    /// (slope 1, intercept 0) until [`LinearClassifier::calibrate`].
    pub fn train<S: AsRef<str> + Sync>(texts: &[S], gold: &[Vec<usize>], num_labels: usize, ngrams: usize, min_df: usize, options: &svm::SvmOptions) -> Self {
        let tfidf = TfIdf::fit(texts, ngrams, min_df);
        let x: Vec<Sparse> = texts.par_iter().map(|t| tfidf.transform(t.as_ref())).collect();
        let models: Vec<svm::BinarySvm> = (0..num_labels)
            .into_par_iter()
            .map(|j| {
                let y: Vec<bool> = gold.iter().map(|g| g.contains(&j)).collect();
                svm::train(&x, &y, tfidf.len(), &svm::SvmOptions { seed: options.seed.wrapping_add(j as u64), ..*options })
            })
            .collect();
        let params = LinearParams { ngrams, min_df, c: options.c, slope: 1.0, intercept: 0.0, features: tfidf.len(), terms_bytes: 0 };
        let (weights, biases) = models.into_iter().map(|m| (m.w, m.b)).unzip();
        Self { tfidf, params, weights, biases }
    }

    /// Margins `[text][label]`.
    pub fn margins<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<f32>> {
        texts
            .par_iter()
            .map(|t| {
                let x = self.tfidf.transform(t.as_ref());
                self.weights.iter().zip(&self.biases).map(|(w, b)| x.iter().map(|&(j, v)| w[j as usize] * v).sum::<f32>() + b).collect()
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

    /// Writes the terms, weights and settings into `dir`; returns the weight file's length
    /// (for `model.json`). Labels are written by the caller, as for every classifier.
    pub fn save(&self, dir: &Path) -> Result<u64> {
        let mut terms = String::new();
        for (t, idf) in self.tfidf.terms.iter().zip(&self.tfidf.idf) {
            terms.push_str(&format!("{idf}\t{t}\n"));
        }
        let terms_path = dir.join(TERMS_FILE);
        write_atomic(&terms_path, terms.as_bytes())?;
        let mut bytes = Vec::with_capacity(4 * (self.weights.len() * (self.tfidf.len() + 1)));
        for w in &self.weights {
            w.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        self.biases.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let weights_path = dir.join(LINEAR_WEIGHTS_FILE);
        write_atomic(&weights_path, &bytes)?;
        let params = LinearParams { terms_bytes: std::fs::metadata(&terms_path)?.len(), features: self.tfidf.len(), ..self.params.clone() };
        write_via_tmp(&dir.join(LINEAR_FILE), |tmp| Ok(std::fs::write(tmp, serde_json::to_string_pretty(&params)?)?))?;
        Ok(bytes.len() as u64)
    }

    /// Reads a model written by [`LinearClassifier::save`] for `labels` labels.
    pub fn load(dir: &Path, labels: &LabelSet, weights_bytes: u64) -> Result<Self> {
        let p = dir.join(LINEAR_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let params: LinearParams = serde_json::from_str(&text).with_context(|| format!("{}: invalid linear model settings", p.display()))?;
        let terms_path = dir.join(TERMS_FILE);
        check_length(&terms_path, params.terms_bytes)?;
        let text = std::fs::read_to_string(&terms_path).with_context(|| format!("{}: cannot read", terms_path.display()))?;
        let (mut terms, mut idf) = (Vec::new(), Vec::new());
        for (n, line) in text.lines().enumerate() {
            let bad = || anyhow::anyhow!("{}:{}: expected `idf<TAB>term`", terms_path.display(), n + 1);
            let (v, t) = line.split_once('\t').ok_or_else(bad)?;
            idf.push(v.parse::<f32>().map_err(|_| bad())?);
            terms.push(t.to_owned());
        }
        if terms.len() != params.features {
            bail!("{}: {} terms, {} says {}", terms_path.display(), terms.len(), LINEAR_FILE, params.features);
        }
        let weights_path = dir.join(LINEAR_WEIGHTS_FILE);
        let (k, d) = (labels.len(), params.features);
        let expected = 4 * (k * d + k) as u64;
        if weights_bytes != expected {
            bail!("{}: {} labels × {d} features need {expected} bytes of weights, {} says {weights_bytes}", dir.display(), k, LABELS_FILE);
        }
        check_length(&weights_path, expected)?;
        let bytes = std::fs::read(&weights_path).with_context(|| format!("{}: cannot read", weights_path.display()))?;
        let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let weights = floats[..k * d].chunks(d.max(1)).take(k).map(<[f32]>::to_vec).collect();
        let biases = floats[k * d..].to_vec();
        Ok(Self { tfidf: TfIdf::from_parts(params.ngrams, terms, idf), params, weights, biases })
    }
}
