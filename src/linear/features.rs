//! TF-IDF features of word n-grams: the input of the linear classifier. Words come from the
//! same BERT normaliser and pre-tokeniser as the WordPiece vocabulary (lower-cased, accents
//! stripped, punctuation split off, CJK characters one by one), so Chinese text without spaces
//! gets character uni- and bigrams; pieces with no letter or digit (punctuation) are dropped.

use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

/// A sparse feature vector: (feature index, value), indices increasing.
pub type Sparse = Vec<(u32, f32)>;

/// The words of `text` as the linear model sees them.
pub fn words(text: &str) -> Vec<String> {
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut pre = PreTokenizedString::from(text);
    // both steps are infallible for these components; an error would leave no words
    if pre.normalize(|s| normalizer.normalize(s)).is_err() || BertPreTokenizer.pre_tokenize(&mut pre).is_err() {
        return Vec::new();
    }
    pre.get_splits(OffsetReferential::Original, OffsetType::None)
        .into_iter()
        .map(|(w, _, _)| w)
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(str::to_owned)
        .collect()
}

/// The terms of `text`: its words and every run of 2..=`ngrams` consecutive words.
pub fn terms(text: &str, ngrams: usize) -> Vec<String> {
    let w = words(text);
    let mut out = w.clone();
    for n in 2..=ngrams.max(1) {
        out.extend(w.windows(n).map(|g| g.join(" ")));
    }
    out
}

/// A fitted TF-IDF vocabulary: sublinear term frequency (1 + ln tf), smoothed inverse document
/// frequency (ln((1 + n) / (1 + df)) + 1), each vector scaled to unit length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TfIdf {
    /// Longest n-gram used.
    pub ngrams: usize,
    /// Terms in feature order.
    pub terms: Vec<String>,
    /// Inverse document frequency of each term.
    pub idf: Vec<f32>,
    #[serde(skip)]
    index: AHashMap<String, u32>,
}

impl TfIdf {
    /// Keeps the terms found in at least `min_df` of `texts`, in order of first appearance.
    pub fn fit<S: AsRef<str>>(texts: &[S], ngrams: usize, min_df: usize) -> Self {
        let mut df: AHashMap<String, (usize, usize)> = AHashMap::new();
        for text in texts {
            let mut seen = terms(text.as_ref(), ngrams);
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let next = df.len();
                df.entry(t).or_insert((0, next)).0 += 1;
            }
        }
        let mut kept: Vec<(usize, String, usize)> = df.into_iter().filter(|(_, (d, _))| *d >= min_df.max(1)).map(|(t, (d, first))| (first, t, d)).collect();
        kept.sort_unstable_by_key(|k| k.0);
        let n = texts.len() as f64;
        let idf = kept.iter().map(|(_, _, d)| (((1.0 + n) / (1.0 + *d as f64)).ln() + 1.0) as f32).collect();
        Self::from_parts(ngrams, kept.into_iter().map(|(_, t, _)| t).collect(), idf)
    }

    /// A vocabulary from saved terms and weights.
    pub fn from_parts(ngrams: usize, terms: Vec<String>, idf: Vec<f32>) -> Self {
        let index = terms.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Self { ngrams, terms, idf, index }
    }

    /// Rebuilds the term index after deserialisation.
    pub fn reindex(self) -> Self {
        Self::from_parts(self.ngrams, self.terms, self.idf)
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether no term was kept.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The unit-length TF-IDF vector of `text` (empty when none of its terms is known).
    pub fn transform(&self, text: &str) -> Sparse {
        let mut tf: AHashMap<u32, u32> = AHashMap::new();
        for t in terms(text, self.ngrams) {
            if let Some(&i) = self.index.get(&t) {
                *tf.entry(i).or_insert(0) += 1;
            }
        }
        let mut v: Sparse = tf.into_iter().map(|(i, c)| (i, (1.0 + (c as f32).ln()) * self.idf[i as usize])).collect();
        v.sort_unstable_by_key(|e| e.0);
        let norm = v.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|e| e.1 /= norm);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_punctuation_and_cjk_and_drop_symbols() {
        assert_eq!(words("Command-line tool, for C!"), ["command", "line", "tool", "for", "c"]);
        assert_eq!(words("中文分词 test"), ["中", "文", "分", "词", "test"]);
        assert_eq!(terms("a b c", 2), ["a", "b", "c", "a b", "b c"]);
    }

    #[test]
    fn tfidf_matches_hand_computed_values() {
        // 3 texts; "x" in all three (idf 1), "y" in one (idf ln(4/2) + 1), "z" in one but min_df 2 drops it
        let tf = TfIdf::fit(&["x y", "x", "x z"], 1, 1);
        assert_eq!(tf.terms, ["x", "y", "z"]);
        let tf = TfIdf::fit(&["x y y", "x", "x z", "y"], 1, 2);
        assert_eq!(tf.terms, ["x", "y"]);
        // df(x) = 3, df(y) = 2, n = 4: idf x = ln(5/4) + 1, idf y = ln(5/3) + 1
        let (ix, iy) = ((5f32 / 4.0).ln() + 1.0, (5f32 / 3.0).ln() + 1.0);
        let v = tf.transform("x y y unknown");
        let (a, b) = (ix, (1.0 + 2f32.ln()) * iy);
        let n = (a * a + b * b).sqrt();
        assert_eq!(v.len(), 2);
        assert!((v[0].1 - a / n).abs() < 1e-6 && (v[1].1 - b / n).abs() < 1e-6, "{v:?}");
        assert!(tf.transform("nothing known").is_empty());
    }
}
