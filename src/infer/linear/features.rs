//! TF-IDF features: the input of the linear classifier. Words come from the same BERT
//! normaliser and pre-tokeniser as the WordPiece vocabulary (lower-cased, accents stripped,
//! punctuation split off, CJK characters one by one, so Chinese text without spaces still gets
//! uni- and bigrams); pieces with no letter or digit (punctuation) are dropped. Two blocks of
//! features, each weighted and scaled to unit length on its own: word n-grams, and character
//! n-grams inside each word padded with a space (`" lib"`, `"ib "`), which catch shared stems
//! and affixes (`python3-`, `-dev`, plurals) that whole words miss.

use ahash::AHashMap;
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

/// How a block turns words into terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyzer {
    /// Every word and every run of 2..=n consecutive words.
    Words(usize),
    /// Every run of min..=max characters of each word padded with one space on each side.
    Chars(usize, usize),
}

impl Analyzer {
    /// The terms of a text's words.
    pub fn terms(self, words: &[String]) -> Vec<String> {
        match self {
            Analyzer::Words(n) => {
                let mut out = words.to_vec();
                for k in 2..=n.max(1) {
                    out.extend(words.windows(k).map(|g| g.join(" ")));
                }
                out
            }
            Analyzer::Chars(lo, hi) => {
                let mut out = Vec::new();
                for w in words {
                    let padded: Vec<char> = std::iter::once(' ').chain(w.chars()).chain(std::iter::once(' ')).collect();
                    for k in lo.max(1)..=hi {
                        out.extend(padded.windows(k).map(|g| g.iter().collect::<String>()));
                    }
                }
                out
            }
        }
    }

    /// Its name in the terms file.
    pub fn tag(self) -> String {
        match self {
            Analyzer::Words(n) => format!("words:{n}"),
            Analyzer::Chars(lo, hi) => format!("chars:{lo}-{hi}"),
        }
    }

    /// Parses [`Analyzer::tag`].
    pub fn parse(tag: &str) -> Option<Self> {
        let (kind, n) = tag.split_once(':')?;
        match kind {
            "words" => n.parse().ok().map(Analyzer::Words),
            "chars" => {
                let (lo, hi) = n.split_once('-')?;
                Some(Analyzer::Chars(lo.parse().ok()?, hi.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// One fitted block: sublinear term frequency (1 + ln tf) times smoothed inverse document
/// frequency (ln((1 + n) / (1 + df)) + 1), scaled to unit length.
#[derive(Debug, Clone)]
pub struct TfIdf {
    /// How terms are made.
    pub analyzer: Analyzer,
    /// Terms in feature order.
    pub terms: Vec<String>,
    /// Inverse document frequency of each term.
    pub idf: Vec<f32>,
    index: AHashMap<String, u32>,
}

impl TfIdf {
    /// Keeps the terms found in at least `min_df` of the texts (given as their words), at most
    /// `max_terms` of them (the most frequent by document count; 0: no cap), in order of first
    /// appearance.
    pub fn fit(texts: &[Vec<String>], analyzer: Analyzer, min_df: usize, max_terms: usize) -> Self {
        let mut df: AHashMap<String, (usize, usize)> = AHashMap::new();
        for words in texts {
            let mut seen = analyzer.terms(words);
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let next = df.len();
                df.entry(t).or_insert((0, next)).0 += 1;
            }
        }
        let mut kept: Vec<(usize, String, usize)> = df.into_iter().filter(|(_, (d, _))| *d >= min_df.max(1)).map(|(t, (d, first))| (first, t, d)).collect();
        if max_terms > 0 && kept.len() > max_terms {
            kept.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            kept.truncate(max_terms);
        }
        kept.sort_unstable_by_key(|k| k.0);
        let n = texts.len() as f64;
        let idf = kept.iter().map(|(_, _, d)| (((1.0 + n) / (1.0 + *d as f64)).ln() + 1.0) as f32).collect();
        Self::from_parts(analyzer, kept.into_iter().map(|(_, t, _)| t).collect(), idf)
    }

    /// A block from saved terms and weights.
    pub fn from_parts(analyzer: Analyzer, terms: Vec<String>, idf: Vec<f32>) -> Self {
        let index = terms.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Self { analyzer, terms, idf, index }
    }

    /// The unit-length TF-IDF vector of a text's words, indices shifted by `offset`.
    fn transform_into(&self, words: &[String], offset: u32, out: &mut Sparse) {
        let mut tf: AHashMap<u32, u32> = AHashMap::new();
        for t in self.analyzer.terms(words) {
            if let Some(&i) = self.index.get(&t) {
                *tf.entry(i).or_insert(0) += 1;
            }
        }
        let mut v: Sparse = tf.into_iter().map(|(i, c)| (i, (1.0 + (c as f32).ln()) * self.idf[i as usize])).collect();
        v.sort_unstable_by_key(|e| e.0);
        let norm = v.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
        out.extend(v.into_iter().map(|(i, x)| (i + offset, if norm > 0.0 { x / norm } else { x })));
    }
}

/// The blocks side by side: one feature vector a text.
#[derive(Debug, Clone)]
pub struct FeatureSpace {
    /// The blocks, in feature order.
    pub blocks: Vec<TfIdf>,
}

impl FeatureSpace {
    /// Fits one block for each `(analyzer, cap)` on the texts' [`words`] (cap: at most that
    /// many terms in the block; 0: no cap).
    pub fn fit(texts: &[Vec<String>], analyzers: &[(Analyzer, usize)], min_df: usize) -> Self {
        Self { blocks: analyzers.iter().map(|&(a, cap)| TfIdf::fit(texts, a, min_df, cap)).collect() }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.terms.len()).sum()
    }

    /// Whether there is no feature.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The feature vector of `text` (empty when none of its terms is known).
    pub fn transform(&self, text: &str) -> Sparse {
        self.transform_words(&words(text))
    }

    /// The feature vector of a text already split into its [`words`].
    pub fn transform_words(&self, words: &[String]) -> Sparse {
        let mut out = Sparse::new();
        let mut offset = 0u32;
        for b in &self.blocks {
            b.transform_into(words, offset, &mut out);
            offset += b.terms.len() as u32;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn words_split_punctuation_and_cjk_and_drop_symbols() {
        assert_eq!(words("Command-line tool, for C!"), ["command", "line", "tool", "for", "c"]);
        assert_eq!(words("中文分词 test"), ["中", "文", "分", "词", "test"]);
        assert_eq!(Analyzer::Words(2).terms(&ws("a b c")), ["a", "b", "c", "a b", "b c"]);
        assert_eq!(Analyzer::Chars(2, 3).terms(&ws("ab")), [" a", "ab", "b ", " ab", "ab "]);
        for a in [Analyzer::Words(2), Analyzer::Chars(2, 5)] {
            assert_eq!(Analyzer::parse(&a.tag()), Some(a));
        }
    }

    #[test]
    fn tfidf_matches_hand_computed_values() {
        let texts = |v: &[&str]| v.iter().map(|t| ws(t)).collect::<Vec<_>>();
        let tf = TfIdf::fit(&texts(&["x y", "x", "x z"]), Analyzer::Words(1), 1, 0);
        assert_eq!(tf.terms, ["x", "y", "z"]);
        // the cap keeps the terms in most documents: x (3), then y and z (1 each) by first appearance
        assert_eq!(TfIdf::fit(&texts(&["x y", "x", "x z"]), Analyzer::Words(1), 1, 2).terms, ["x", "y"]);
        let space = FeatureSpace::fit(&texts(&["x y y", "x", "x z", "y"]), &[(Analyzer::Words(1), 0)], 2);
        assert_eq!(space.blocks[0].terms, ["x", "y"]);
        // df(x) = 3, df(y) = 2, n = 4: idf x = ln(5/4) + 1, idf y = ln(5/3) + 1
        let (ix, iy) = ((5f32 / 4.0).ln() + 1.0, (5f32 / 3.0).ln() + 1.0);
        let v = space.transform("x y y unknown");
        let (a, b) = (ix, (1.0 + 2f32.ln()) * iy);
        let n = (a * a + b * b).sqrt();
        assert_eq!(v.len(), 2);
        assert!((v[0].1 - a / n).abs() < 1e-6 && (v[1].1 - b / n).abs() < 1e-6, "{v:?}");
        assert!(space.transform("nothing known").is_empty());
        // two blocks: each of unit length, the second's indices after the first's
        let two = FeatureSpace::fit(&texts(&["x y", "x y"]), &[(Analyzer::Words(1), 0), (Analyzer::Chars(2, 2), 0)], 1);
        let v = two.transform("x");
        assert_eq!(v.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 2, 4]);
        assert!((v[0].1 - 1.0).abs() < 1e-6 && (v[1].1.powi(2) + v[2].1.powi(2) - 1.0).abs() < 1e-6, "{v:?}");
    }
}
