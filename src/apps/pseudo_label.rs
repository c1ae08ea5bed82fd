//! Pseudo-labels: a trained classifier (the teacher) labels the documents of the raw corpus
//! that have no labels, and the result is written as a labelled file in fastText form. Fine-tuned
//! on together with the real labelled set, a new model (the student) learns from the whole corpus
//! instead of the labelled part alone (self-training; with an ensemble as teacher, a distillation
//! of it into one model).

use crate::infer::classifier::{decide, LoadedClassifier};
use crate::data::classify::Problem;
use crate::text::labelled::LABEL_PREFIX;
use crate::eval::thresholds::Thresholds;
use anyhow::Result;
use std::collections::HashSet;
use std::io::Write;

/// Documents scored together.
const CHUNK: usize = 1024;

/// What [`pseudo_label`] did with the documents it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PseudoLabelCounts {
    /// Documents read.
    pub read: usize,
    /// Documents written with their labels.
    pub written: usize,
    /// Left out: their text is in one of the labelled files (training, validation, test).
    pub labelled: usize,
    /// Left out: the same text came earlier in the corpus.
    pub duplicates: usize,
    /// Left out: a word of the text starts with `__label__`, so the line would not read back.
    pub unwritable: usize,
    /// Written with the teacher's most probable label alone: no label reached its threshold.
    pub top_label_only: usize,
}

/// A text with its whitespace folded to single spaces: the form in which corpus documents and
/// labelled examples are compared, and in which a document becomes one line.
pub fn fold(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Labels every document of `docs` whose folded text is not in `exclude` (nor seen before) with
/// `teacher`'s decision at `thresholds`, and writes `text __label__a __label__b` lines to `out`.
/// A multi-label document with no label at its threshold gets the most probable one: every
/// labelled line needs a label, and one label is the teacher's best guess.
pub fn pseudo_label(
    teacher: &LoadedClassifier,
    docs: impl Iterator<Item = Result<String>>,
    exclude: &HashSet<String>,
    thresholds: &Thresholds,
    batch_size: usize,
    out: &mut impl Write,
) -> Result<PseudoLabelCounts> {
    let mut counts = PseudoLabelCounts::default();
    // hashes, not texts: a corpus may be larger than memory
    let mut seen: HashSet<u64> = HashSet::new();
    let mut pending: Vec<String> = Vec::new();
    let mut flush = |texts: &mut Vec<String>, counts: &mut PseudoLabelCounts| -> Result<()> {
        for (text, p) in texts.iter().zip(teacher.probabilities(texts, batch_size)) {
            let mut chosen = decide(&p, teacher.problem, thresholds, None);
            if chosen.is_empty() && teacher.problem == Problem::MultiLabel {
                chosen = decide(&p, Problem::SingleLabel, thresholds, Some(1));
                counts.top_label_only += 1;
            }
            write!(out, "{text}")?;
            for (i, _) in chosen {
                write!(out, " {LABEL_PREFIX}{}", teacher.labels.name(i))?;
            }
            writeln!(out)?;
            counts.written += 1;
        }
        texts.clear();
        Ok(())
    };
    for doc in docs {
        let text = fold(&doc?);
        counts.read += 1;
        if text.is_empty() {
            continue;
        }
        if exclude.contains(&text) {
            counts.labelled += 1;
        } else if text.split(' ').any(|w| w.starts_with(LABEL_PREFIX)) {
            counts.unwritable += 1;
        } else if !seen.insert(hash(&text)) {
            counts.duplicates += 1;
        } else {
            pending.push(text);
            if pending.len() >= CHUNK {
                flush(&mut pending, &mut counts)?;
            }
        }
    }
    flush(&mut pending, &mut counts)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_joins_lines_and_spaces() {
        assert_eq!(fold("  a\tb\n\nc  d "), "a b c d");
        assert_eq!(fold("北京 天安门"), "北京 天安门");
    }
}
