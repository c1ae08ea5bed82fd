//! Classification targets: the label set, the problem type and encoded examples.

use crate::data::nsp::wrap_pair;
use crate::text::labelled::{Example, PAIR_SEPARATOR};
use crate::text::tokenizer::{SpecialIds, WordPieceTokenizer};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How labels are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Exactly one label an example: softmax cross-entropy, predict the arg-max.
    SingleLabel,
    /// Any number of labels: one sigmoid a label, binary cross-entropy, predict by threshold.
    MultiLabel,
}

impl Problem {
    /// Single-label when every example has one label, multi-label as soon as one has several.
    pub fn infer(examples: &[Example]) -> Self {
        if examples.iter().any(|e| e.labels.len() > 1) {
            Problem::MultiLabel
        } else {
            Problem::SingleLabel
        }
    }
}

/// The labels a model knows, in a fixed order (the order of the output units).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl LabelSet {
    /// Labels sorted by decreasing training frequency, ties by name, so the order is stable.
    pub fn from_examples(examples: &[Example]) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in examples {
            for l in &e.labels {
                *counts.entry(l.as_str()).or_default() += 1;
            }
        }
        let mut names: Vec<(&str, usize)> = counts.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_names(names.into_iter().map(|(n, _)| n.to_owned()).collect())
    }

    /// A label set in the given order.
    pub fn from_names(names: Vec<String>) -> Self {
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Self { names, index }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of a label name.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Indices of the names the set knows, in order; unknown names are left out.
    pub fn indices(&self, names: &[String]) -> Vec<usize> {
        names.iter().filter_map(|n| self.get(n)).collect()
    }

    /// Name of a label index.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// All names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A tokenized labelled example.
#[derive(Debug, Clone)]
pub struct EncodedExample {
    /// [CLS] text [SEP], truncated to the model's length.
    pub input_ids: Vec<u32>,
    /// Indices of the gold labels the model knows.
    pub labels: Vec<usize>,
}

/// Tokenizes examples for a model of length `max_len`; labels the set does not know are dropped
/// from the targets (the metrics still count them, from the raw examples).
pub fn encode_examples(examples: &[Example], tokenizer: &WordPieceTokenizer, labels: &LabelSet, max_len: usize) -> Vec<EncodedExample> {
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    encode_texts(&texts, tokenizer, max_len)
        .into_iter()
        .zip(examples)
        .map(|(input_ids, ex)| EncodedExample { input_ids, labels: labels.indices(&ex.labels) })
        .collect()
}

/// Model inputs of texts: `[CLS] text [SEP]`, or `[CLS] a [SEP] b [SEP]` for a pair (`a<TAB>b`,
/// see [`PAIR_SEPARATOR`]), truncated to `max_len`.
pub fn encode_texts(texts: &[String], tokenizer: &WordPieceTokenizer, max_len: usize) -> Vec<Vec<u32>> {
    encode_texts_flagged(texts, tokenizer, max_len).0
}

/// [`encode_texts`], and for each text whether it was cut to fit in `max_len`.
pub fn encode_texts_flagged(texts: &[String], tokenizer: &WordPieceTokenizer, max_len: usize) -> (Vec<Vec<u32>>, Vec<bool>) {
    // every side of every text in one parallel batch, then put back together
    let parts: Vec<Vec<String>> = texts.iter().map(|t| t.split(PAIR_SEPARATOR).map(str::to_owned).collect()).collect();
    let mut ids = tokenizer.encode_batch(&parts.concat()).into_iter();
    let specials = tokenizer.specials();
    parts
        .iter()
        .map(|p| {
            let sides: Vec<Vec<u32>> = ids.by_ref().take(p.len()).collect();
            match sides.as_slice() {
                [a, b] => (wrap_pair(a, b, max_len, specials), a.len() + b.len() + 3 > max_len),
                single => (wrap(&single[0], max_len, specials), single[0].len() + 2 > max_len),
            }
        })
        .unzip()
}

/// [CLS] ids [SEP], with the ids truncated so the whole fits in `max_len`.
pub fn wrap(ids: &[u32], max_len: usize, specials: SpecialIds) -> Vec<u32> {
    let body = &ids[..ids.len().min(max_len - 2)];
    let mut seq = Vec::with_capacity(body.len() + 2);
    seq.push(specials.cls);
    seq.extend_from_slice(body);
    seq.push(specials.sep);
    seq
}

/// Checks that a forced single-label problem really has one label an example.
pub fn check_problem(problem: Problem, examples: &[Example], file: &str) -> Result<()> {
    if problem == Problem::SingleLabel {
        if let Some((i, _)) = examples.iter().enumerate().find(|(_, e)| e.labels.len() > 1) {
            bail!("{file}: example {} has several labels but the problem is single-label", i + 1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_pairs_are_wrapped_in_the_vocabulary_s_own_ids() {
        let tok = crate::text::tokenizer::tests::bert_layout(&["network", "tool"]);
        let got = encode_texts(&["network".into(), "network\ttool".into()], &tok, 16);
        assert_eq!(got, vec![vec![101, 104, 102], vec![101, 104, 102, 105, 102]]);
    }

    #[test]
    fn cut_texts_are_flagged() {
        let tok = crate::text::tokenizer::tests::bert_layout(&["network", "tool"]);
        // max_len 4: [CLS] + 2 pieces + [SEP] fits, 3 pieces do not
        let (seqs, cut) = encode_texts_flagged(&["network tool".into(), "network tool network".into()], &tok, 4);
        assert_eq!(cut, vec![false, true]);
        assert!(seqs.iter().all(|s| s.len() <= 4));
        // max_len 5: [CLS] a [SEP] b [SEP] fits one piece a side
        let (_, cut) = encode_texts_flagged(&["network\ttool".into(), "network tool\ttool".into()], &tok, 5);
        assert_eq!(cut, vec![false, true]);
        assert_eq!(seqs[0], vec![101, 104, 105, 102]);
    }
}
