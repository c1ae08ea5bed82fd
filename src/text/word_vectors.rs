//! Pre-trained word vectors in the word2vec / fastText text format (`N D` header, then
//! `word v1 … vD` a line; the format of fastText `.vec` and Tencent AI Lab files), read for the
//! words of a vocabulary: they initialise the matching rows of the token embeddings.
//!
//! The file is streamed (such files run to gigabytes) and only vectors of vocabulary entries are
//! kept. Word-piece continuations (`##…`) have no word vector. An exact match wins; otherwise
//! the first line whose lower-cased word matches (the files list frequent spellings first).

use crate::text::reader::Lines;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// The vectors found for a vocabulary.
#[derive(Debug, Clone)]
pub struct WordVectors {
    /// Dimension of every vector.
    pub dim: usize,
    /// `(token id, vector)` for each vocabulary entry found, by id.
    pub rows: Vec<(u32, Vec<f32>)>,
    /// Vocabulary entries that could have a vector (not special, not a `##` continuation).
    pub candidates: usize,
    /// Words (lines) in the file.
    pub file_words: usize,
}

impl WordVectors {
    /// Reads the vectors of `tokenizer`'s whole-word entries from `path` (.txt, .vec, or gzip),
    /// requiring dimension `dim`. Any malformed line is an error naming the file and line.
    pub fn read(path: &Path, tokenizer: &WordPieceTokenizer, dim: usize) -> Result<Self> {
        let mut wanted: HashMap<String, u32> = HashMap::new();
        let specials = tokenizer.specials();
        for id in 0..tokenizer.vocab_size() as u32 {
            if specials.is_structural(id) || id == specials.unk {
                continue;
            }
            if let Some(t) = tokenizer.id_to_token(id) {
                if !t.starts_with("##") {
                    wanted.insert(t, id);
                }
            }
        }
        let name = path.display().to_string();
        let mut lines = Lines::open(path)?;
        let header = lines.next().with_context(|| format!("{name}: empty file, expected a header `N D`"))??;
        let fields: Vec<&str> = header.text.split_whitespace().collect();
        let (n, d) = match fields[..] {
            [n, d] => (n.parse::<usize>().ok(), d.parse::<usize>().ok()),
            _ => (None, None),
        };
        let (Some(_), Some(d)) = (n, d) else {
            bail!("{name}:{}: expected a header `N D` (word count, dimension), found {:?}", header.number, truncate(&header.text));
        };
        if d != dim {
            bail!("{name}: vectors have dimension {d}, the model's embeddings {dim} (choose a preset or [model] d_model of {d})");
        }
        // exact matches, and lower-cased matches as a fallback
        let mut exact: HashMap<u32, Vec<f32>> = HashMap::new();
        let mut folded: HashMap<u32, Vec<f32>> = HashMap::new();
        let mut file_words = 0;
        for line in lines {
            let line = line?;
            if line.text.trim().is_empty() {
                continue;
            }
            file_words += 1;
            // the word is everything before the last D fields (words may contain no spaces in
            // these formats, but a trailing space is common)
            let mut parts = line.text.trim_end().split(' ');
            let word = parts.next().unwrap_or_default();
            let values: Vec<&str> = parts.collect();
            if values.len() != d {
                bail!("{name}:{}: {} values after {:?}, the header says {d}", line.number, values.len(), truncate(word));
            }
            let exact_id = wanted.get(word).copied();
            let lower = word.to_lowercase();
            let folded_id = if exact_id.is_none() { wanted.get(&lower).copied().filter(|id| !folded.contains_key(id)) } else { None };
            if exact_id.is_none() && folded_id.is_none() {
                // still check the numbers: a broken file should not pass unnoticed
                if let Some(bad) = values.iter().find(|v| v.parse::<f32>().is_err()) {
                    bail!("{name}:{}: {:?} is not a number", line.number, truncate(bad));
                }
                continue;
            }
            let mut vec = Vec::with_capacity(d);
            for v in &values {
                let x: f32 = v.parse().map_err(|_| anyhow::anyhow!("{name}:{}: {:?} is not a number", line.number, truncate(v)))?;
                if !x.is_finite() {
                    bail!("{name}:{}: {:?} is not a finite number", line.number, truncate(v));
                }
                vec.push(x);
            }
            match (exact_id, folded_id) {
                (Some(id), _) => {
                    exact.entry(id).or_insert(vec);
                }
                (None, Some(id)) => {
                    folded.insert(id, vec);
                }
                _ => {}
            }
        }
        for (id, v) in folded {
            exact.entry(id).or_insert(v);
        }
        let mut rows: Vec<(u32, Vec<f32>)> = exact.into_iter().collect();
        rows.sort_by_key(|r| r.0);
        Ok(Self { dim: d, rows, candidates: wanted.len(), file_words })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> WordPieceTokenizer {
        WordPieceTokenizer::from_words(&["apple", "banana", "##s", "cherry", "中"]).unwrap()
    }

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".vec").tempfile().unwrap();
        std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_the_vectors_of_vocabulary_words() {
        let f = file("5 3\nApple 9 9 9\napple 1 2 3\nBANANA 4 5 6 \nbanana 7 8 9\nzebra 0 0 0\n中 0.5 -1e-1 2\n");
        let v = WordVectors::read(f.path(), &tok(), 3).unwrap();
        let id = |w: &str| tok().encode(w)[0];
        assert_eq!(v.candidates, 4, "apple, banana, cherry, 中 (not ##s)");
        assert_eq!(v.file_words, 6);
        let get = |w: &str| v.rows.iter().find(|r| r.0 == id(w)).map(|r| r.1.clone());
        assert_eq!(get("apple"), Some(vec![1.0, 2.0, 3.0]), "an exact match beats an earlier case-folded one");
        assert_eq!(get("banana"), Some(vec![7.0, 8.0, 9.0]));
        assert_eq!(get("中"), Some(vec![0.5, -0.1, 2.0]));
        assert_eq!(get("cherry"), None);
        let f = file("2 2\nBANANA 4 5\nBanana 1 1\n");
        let v = WordVectors::read(f.path(), &tok(), 2).unwrap();
        assert_eq!(v.rows, vec![(tok().encode("banana")[0], vec![4.0, 5.0])], "first case-folded match");
    }

    #[test]
    fn malformed_files_are_refused_with_file_and_line() {
        let cases = [
            ("", "empty file"),
            ("apple 1 2 3\n", ":1: expected a header"),
            ("1 4\napple 1 2 3 4\n", "dimension 4, the model's embeddings 3"),
            ("2 3\napple 1 2\n", ":2: 2 values after \"apple\""),
            ("2 3\nzebra 1 x 3\n", ":2: \"x\" is not a number"),
            ("2 3\napple 1 2 3\nbanana 1 nan 3\n", ":3: \"nan\" is not a finite number"),
        ];
        for (content, want) in cases {
            let f = file(content);
            let e = WordVectors::read(f.path(), &tok(), 3).unwrap_err().to_string();
            assert!(e.contains(want), "{content:?}: {e}");
            if content.len() > 1 {
                assert!(e.contains(&f.path().display().to_string()), "{e}");
            }
        }
    }
}
