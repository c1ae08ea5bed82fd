//! Masked-language-model examples: documents cut into [CLS] … [SEP] sequences, and BERT's
//! 80/10/10 masking of a capped share of the non-special positions — one piece at a time, or
//! whole words at a time (all pieces of a word, or a run of Chinese characters that a word list
//! names as one word).

use crate::text::tokenizer::SpecialIds;
use crate::text::tokenizer::WordPieceTokenizer;
use rand::seq::index::sample;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::HashSet;
use std::sync::Arc;

/// One masked sequence: what the model sees and what it must predict.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmExample {
    /// Input ids after masking, starting with [CLS] and ending with [SEP].
    pub input_ids: Vec<u32>,
    /// Chosen positions, ascending.
    pub positions: Vec<usize>,
    /// Original ids at the chosen positions.
    pub targets: Vec<u32>,
}

/// Cuts one document's word-piece ids into sequences of at most `max_len` ids, each wrapped in
/// [CLS] … [SEP] (the vocabulary's `specials`). A final piece shorter than 8 word pieces is
/// dropped unless it is the whole document.
pub fn chunk_document(ids: &[u32], max_len: usize, specials: SpecialIds) -> Vec<Vec<u32>> {
    let body = max_len.saturating_sub(2).max(1);
    let mut out = Vec::new();
    for (i, piece) in ids.chunks(body).enumerate() {
        if i > 0 && piece.len() < 8 {
            break;
        }
        let mut seq = Vec::with_capacity(piece.len() + 2);
        seq.push(specials.cls);
        seq.extend_from_slice(piece);
        seq.push(specials.sep);
        out.push(seq);
    }
    out
}

/// Which word pieces form one word, for whole-word masking.
#[derive(Debug, Clone)]
pub struct WordBoundaries {
    /// Per id: a continuation piece (`##…`), masked with the piece before it.
    continuation: Vec<bool>,
    /// Per id: the character, when the piece is one CJK character (the tokenizer splits those).
    cjk_char: Vec<Option<char>>,
    /// Words of several CJK characters whose characters are masked together (may be empty).
    cjk_words: HashSet<String>,
    /// Characters in the longest of `cjk_words`.
    longest: usize,
}

impl WordBoundaries {
    /// Boundaries from a tokenizer's vocabulary, with an optional list of (Chinese) words.
    pub fn new(tokenizer: &WordPieceTokenizer, words: impl IntoIterator<Item = String>) -> Self {
        let n = tokenizer.vocab_size() as u32;
        let tokens: Vec<Option<String>> = (0..n).map(|id| tokenizer.id_to_token(id)).collect();
        let continuation = tokens.iter().map(|t| t.as_deref().is_some_and(|t| t.starts_with("##"))).collect();
        let cjk_char = tokens
            .iter()
            .map(|t| {
                let mut cs = t.as_deref()?.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if is_cjk(c) => Some(c),
                    _ => None,
                }
            })
            .collect();
        let cjk_words: HashSet<String> = words.into_iter().map(|w| w.trim().to_string()).filter(|w| w.chars().count() > 1).collect();
        let longest = cjk_words.iter().map(|w| w.chars().count()).max().unwrap_or(0);
        Self { continuation, cjk_char, cjk_words, longest }
    }

    fn is_continuation(&self, id: u32) -> bool {
        self.continuation.get(id as usize).copied().unwrap_or(false)
    }

    fn cjk(&self, id: u32) -> Option<char> {
        self.cjk_char.get(id as usize).copied().flatten()
    }

    /// The candidate positions grouped into words, in order.
    pub fn groups(&self, seq: &[u32], candidates: &[usize]) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut k = 0;
        while k < candidates.len() {
            let p = candidates[k];
            let follows = |q: usize| groups.last().and_then(|g| g.last()).is_some_and(|&last| last + 1 == q);
            if self.is_continuation(seq[p]) && follows(p) {
                groups.last_mut().expect("a group to continue").push(p);
                k += 1;
                continue;
            }
            // the longest listed word starting here, over consecutive single CJK characters
            let mut len = 1;
            if self.longest > 1 && self.cjk(seq[p]).is_some() {
                let mut word = String::new();
                for j in 0..self.longest.min(candidates.len() - k) {
                    let q = candidates[k + j];
                    match self.cjk(seq[q]) {
                        Some(c) if q == p + j => word.push(c),
                        _ => break,
                    }
                    if j > 0 && self.cjk_words.contains(&word) {
                        len = j + 1;
                    }
                }
            }
            groups.push(candidates[k..k + len].to_vec());
            k += len;
        }
        groups
    }
}

/// Is `c` a CJK ideograph (the characters BERT's pre-tokenizer splits one by one)?
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// How the chosen positions are corrupted, as cumulative shares of a uniform draw `r`:
/// `r < mask_below` → `[MASK]`, `r < random_below` → a random word piece, else unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskSplit {
    /// Share put to `[MASK]`.
    pub mask_below: f64,
    /// `mask_below` plus the share put to a random word piece.
    pub random_below: f64,
}

impl MaskSplit {
    /// BERT: 80 % `[MASK]`, 10 % a random word piece, 10 % unchanged.
    pub const BERT: Self = Self { mask_below: 0.8, random_below: 0.9 };
    /// ELECTRA's generator input (its official code): 85 % `[MASK]`, 15 % unchanged, no random
    /// piece (the generator's samples are the replacements).
    pub const ELECTRA: Self = Self { mask_below: 0.85, random_below: 0.85 };
}

/// Chooses and corrupts the positions of a sequence for a masked LM.
#[derive(Debug, Clone)]
pub struct Masking {
    /// Share of non-special positions chosen.
    pub prob: f64,
    /// Cap on chosen positions a sequence.
    pub max_predictions: usize,
    /// Vocabulary size; random replacements are drawn from the non-special ids.
    pub vocab_size: u32,
    /// The vocabulary's special ids: never chosen (but `[UNK]`), never drawn as a replacement.
    pub specials: SpecialIds,
    /// Whole-word masking: choose words, not pieces.
    pub whole_words: Option<Arc<WordBoundaries>>,
    /// How chosen positions are corrupted.
    pub split: MaskSplit,
}

impl Masking {
    /// How many positions to choose among `candidates` non-special ones.
    pub fn num_predictions(&self, candidates: usize) -> usize {
        if candidates == 0 {
            return 0;
        }
        let n = (candidates as f64 * self.prob).round() as usize;
        n.clamp(1, self.max_predictions.min(candidates))
    }

    /// The positions of `seq` that may be chosen: all but [PAD], [CLS], [SEP] and [MASK].
    fn candidates<'s>(&self, seq: &'s [u32]) -> impl Iterator<Item = usize> + 's {
        let specials = self.specials;
        (0..seq.len()).filter(move |&i| !specials.is_structural(seq[i]))
    }

    /// How many positions [`Self::apply`] chooses in `seq`: the budget, or with whole words the
    /// count of one draw from `rng` — a word that does not fit the budget's rest is passed over,
    /// so a sequence often falls short of it; summed over a corpus, the expected count.
    pub fn predictions_in<R: Rng>(&self, seq: &[u32], rng: &mut R) -> usize {
        match self.whole_words {
            None => self.num_predictions(self.candidates(seq).count()),
            Some(_) => self.choose(seq, rng).len(),
        }
    }

    /// Masks one sequence: chooses positions among the non-special ones, then corrupts them as
    /// `split` says (BERT: 80 % [MASK], 10 % a random word piece, 10 % unchanged).
    pub fn apply<R: Rng>(&self, seq: &[u32], rng: &mut R) -> MlmExample {
        let positions = self.choose(seq, rng);
        let mut input_ids = seq.to_vec();
        let targets = positions.iter().map(|&p| seq[p]).collect();
        for &p in &positions {
            let r: f64 = rng.random();
            if r < self.split.mask_below {
                input_ids[p] = self.specials.mask;
            } else if r < self.split.random_below {
                input_ids[p] = self.random_piece(rng);
            }
        }
        MlmExample { input_ids, positions, targets }
    }

    /// The positions [`Self::apply`] masks in `seq`, in order: the budget's worth of non-special
    /// positions, or with whole words the words that fit it.
    fn choose<R: Rng>(&self, seq: &[u32], rng: &mut R) -> Vec<usize> {
        let candidates: Vec<usize> = self.candidates(seq).collect();
        let n = self.num_predictions(candidates.len());
        let mut positions: Vec<usize> = match &self.whole_words {
            None => sample(rng, candidates.len(), n).into_iter().map(|k| candidates[k]).collect(),
            Some(words) => {
                // words in random order, each taken whole while it fits in the budget
                let mut groups = words.groups(seq, &candidates);
                groups.shuffle(rng);
                let mut chosen = Vec::with_capacity(n);
                for g in groups {
                    if chosen.len() + g.len() <= n {
                        chosen.extend(g);
                    }
                    if chosen.len() == n {
                        break;
                    }
                }
                chosen
            }
        };
        positions.sort_unstable();
        positions
    }

    /// A word piece drawn uniformly from the ids that are none of the five special tokens.
    fn random_piece<R: Rng>(&self, rng: &mut R) -> u32 {
        let s = self.specials;
        let mut excluded = [s.pad, s.unk, s.cls, s.sep, s.mask];
        excluded.sort_unstable();
        // the k-th id outside `excluded`: step over each excluded id at or below it, in order
        let mut id = rng.random_range(0..self.vocab_size - excluded.len() as u32);
        for e in excluded {
            if id >= e {
                id += 1;
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::{CLS, MASK, NUM_SPECIAL, PAD, SEP};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn chunking_wraps_and_caps() {
        let ids: Vec<u32> = (10..260).collect();
        let seqs = chunk_document(&ids, 128, SpecialIds::BERTLU);
        assert_eq!(seqs.len(), 2);
        assert!(seqs.iter().all(|s| s.len() <= 128 && s[0] == CLS && *s.last().unwrap() == SEP));
        assert_eq!(seqs[0].len(), 128);
        assert_eq!(seqs[1].len(), 250 - 126 + 2);
        // a tiny tail is dropped, a tiny document is kept
        assert_eq!(chunk_document(&(10..140).collect::<Vec<_>>(), 128, SpecialIds::BERTLU).len(), 1);
        assert_eq!(chunk_document(&[10, 11], 128, SpecialIds::BERTLU), vec![vec![CLS, 10, 11, SEP]]);
    }

    #[test]
    fn masking_statistics() {
        let m = Masking { specials: SpecialIds::BERTLU, prob: 0.15, max_predictions: 20, vocab_size: 1000, whole_words: None, split: MaskSplit::BERT };
        let mut rng = StdRng::seed_from_u64(7);
        let seq: Vec<u32> = std::iter::once(CLS).chain((0..100).map(|i| 100 + i)).chain(std::iter::once(SEP)).collect();
        let (mut chosen, mut masked, mut random, mut kept) = (0usize, 0usize, 0usize, 0usize);
        let trials = 4000;
        for _ in 0..trials {
            let ex = m.apply(&seq, &mut rng);
            assert_eq!(ex.positions.len(), 15);
            assert_eq!(ex.input_ids[0], CLS, "[CLS] is never chosen");
            assert_eq!(*ex.input_ids.last().unwrap(), SEP, "[SEP] is never chosen");
            assert!(!ex.positions.contains(&0) && !ex.positions.contains(&(seq.len() - 1)));
            for (k, &p) in ex.positions.iter().enumerate() {
                assert_eq!(ex.targets[k], seq[p]);
                chosen += 1;
                let got = ex.input_ids[p];
                if got == MASK {
                    masked += 1;
                } else if got == seq[p] {
                    kept += 1;
                } else {
                    assert!(got >= NUM_SPECIAL && got < 1000);
                    random += 1;
                }
            }
            // unchosen positions are untouched
            for i in 0..seq.len() {
                if !ex.positions.contains(&i) {
                    assert_eq!(ex.input_ids[i], seq[i]);
                }
            }
        }
        let f = |x: usize| x as f64 / chosen as f64;
        assert!((f(masked) - 0.8).abs() < 0.01, "mask share {}", f(masked));
        // a random draw can hit the original id (1/995): it then counts as kept
        assert!((f(random) - 0.1).abs() < 0.01, "random share {}", f(random));
        assert!((f(kept) - 0.1).abs() < 0.01, "kept share {}", f(kept));
        // each position is chosen about equally often: ~15 % each
        let mut per_pos = vec![0usize; seq.len()];
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..trials {
            for p in m.apply(&seq, &mut rng).positions {
                per_pos[p] += 1;
            }
        }
        for c in &per_pos[1..seq.len() - 1] {
            let rate = *c as f64 / trials as f64;
            assert!((rate - 0.15).abs() < 0.03, "position rate {rate}");
        }
    }

    #[test]
    fn cap_and_short_sequences() {
        let m = Masking { specials: SpecialIds::BERTLU, prob: 0.15, max_predictions: 5, vocab_size: 1000, whole_words: None, split: MaskSplit::BERT };
        assert_eq!(m.num_predictions(100), 5);
        assert_eq!(m.num_predictions(3), 1);
        assert_eq!(m.num_predictions(0), 0);
        let mut rng = StdRng::seed_from_u64(1);
        let ex = m.apply(&[CLS, SEP, PAD], &mut rng);
        assert!(ex.positions.is_empty());
    }

    fn tokenizer() -> WordPieceTokenizer {
        WordPieceTokenizer::from_words(&["play", "##ing", "##ed", "the", "game", "##s", "run", "中", "国", "人", "民", "好"]).unwrap()
    }

    #[test]
    fn whole_word_masking_keeps_the_pieces_of_a_word_together() {
        let tok = tokenizer();
        let words = Arc::new(WordBoundaries::new(&tok, Vec::<String>::new()));
        let m = Masking { specials: SpecialIds::BERTLU, prob: 0.3, max_predictions: 20, vocab_size: tok.vocab_size() as u32, whole_words: Some(words.clone()), split: MaskSplit::BERT };
        let text = "playing the games played run the game playing run games";
        let seq: Vec<u32> = std::iter::once(CLS).chain(tok.encode(text)).chain(std::iter::once(SEP)).collect();
        let candidates: Vec<usize> = (1..seq.len() - 1).collect();
        let groups = words.groups(&seq, &candidates);
        assert_eq!(groups.len(), 10, "ten words: {groups:?}");
        assert_eq!(groups[0], vec![1, 2], "play ##ing");
        let mut rng = StdRng::seed_from_u64(3);
        let mut chosen_total = 0;
        let mut per_word = vec![0usize; groups.len()];
        for _ in 0..2000 {
            let ex = m.apply(&seq, &mut rng);
            assert!(ex.positions.len() <= m.num_predictions(candidates.len()));
            for (w, g) in groups.iter().enumerate() {
                let hit = g.iter().filter(|p| ex.positions.contains(p)).count();
                assert!(hit == 0 || hit == g.len(), "word {g:?} split: {:?}", ex.positions);
                per_word[w] += (hit > 0) as usize;
            }
            chosen_total += ex.positions.len();
        }
        // the budget is round(0.3 × 15) = 5 pieces; whole words of 1–2 pieces fill most of it
        let mean = chosen_total as f64 / 2000.0;
        assert!(mean > 4.0 && mean <= 5.0, "mean chosen {mean}");
        assert!(per_word.iter().all(|&c| c > 300), "every word gets chosen: {per_word:?}");
        // words of two pieces each: a budget of 5 takes two of them; the count an epoch's loss
        // scale divides by is what is drawn, not the budget
        let seq: Vec<u32> = std::iter::once(CLS).chain(tok.encode("playing games played playing games played")).chain(std::iter::once(SEP)).collect();
        let m = Masking { prob: 0.4, ..m };
        assert_eq!(m.num_predictions(seq.len() - 2), 5);
        let drawn: Vec<usize> = (0..200).map(|_| m.predictions_in(&seq, &mut rng)).collect();
        assert!(drawn.iter().all(|&n| n == 4), "{drawn:?}");
        assert_eq!(Masking { whole_words: None, ..m }.predictions_in(&seq, &mut rng), 5, "without whole words, the budget");
    }

    #[test]
    fn listed_chinese_words_are_masked_as_one() {
        let tok = tokenizer();
        let seq: Vec<u32> = std::iter::once(CLS).chain(tok.encode("中国人民好")).chain(std::iter::once(SEP)).collect();
        assert_eq!(seq.len(), 7, "one piece a character");
        let candidates: Vec<usize> = (1..6).collect();
        let plain = WordBoundaries::new(&tok, Vec::<String>::new());
        assert_eq!(plain.groups(&seq, &candidates).len(), 5, "without a word list each character is a word");
        let listed = WordBoundaries::new(&tok, ["中国".to_string(), "中国人".to_string(), "人民".to_string()]);
        // longest match first: 中国人 | 民 | 好
        assert_eq!(listed.groups(&seq, &candidates), vec![vec![1, 2, 3], vec![4], vec![5]]);
    }

    #[test]
    fn a_bert_vocabulary_is_masked_with_its_own_ids() {
        let hf = SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 };
        assert_eq!(chunk_document(&[104, 105], 128, hf), vec![vec![101, 104, 105, 102]]);
        let m = Masking { prob: 0.5, max_predictions: 20, vocab_size: 110, specials: hf, whole_words: None, split: MaskSplit::BERT };
        let seq = [101, 104, 105, 100, 106, 107, 108, 109, 102, 0];
        let mut rng = StdRng::seed_from_u64(1);
        let (mut masked, mut random) = (0, 0);
        for _ in 0..500 {
            let ex = m.apply(&seq, &mut rng);
            assert!(ex.positions.iter().all(|&p| (1..8).contains(&p)), "[CLS], [SEP] and [PAD] are never chosen; [UNK] may be: {:?}", ex.positions);
            for &p in &ex.positions {
                let got = ex.input_ids[p];
                if got == 103 {
                    masked += 1;
                } else if got != seq[p] {
                    random += 1;
                    assert!(got < 110 && ![0, 100, 101, 102, 103].contains(&got), "a random piece is a word: {got}");
                }
            }
        }
        assert!(masked > 1000 && random > 50, "{masked} masked, {random} random");
    }
}
