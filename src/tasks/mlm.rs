//! Masked-language-model examples: documents cut into [CLS] … [SEP] sequences, and BERT's
//! 80/10/10 masking of a capped share of the non-special positions.

use crate::text::tokenizer::{CLS, MASK, NUM_SPECIAL, SEP};
use rand::seq::index::sample;
use rand::Rng;

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
/// [CLS] … [SEP]. A final piece shorter than 8 word pieces is dropped unless it is the whole document.
pub fn chunk_document(ids: &[u32], max_len: usize) -> Vec<Vec<u32>> {
    let body = max_len.saturating_sub(2).max(1);
    let mut out = Vec::new();
    for (i, piece) in ids.chunks(body).enumerate() {
        if i > 0 && piece.len() < 8 {
            break;
        }
        let mut seq = Vec::with_capacity(piece.len() + 2);
        seq.push(CLS);
        seq.extend_from_slice(piece);
        seq.push(SEP);
        out.push(seq);
    }
    out
}

/// Masking settings.
#[derive(Debug, Clone, Copy)]
pub struct Masking {
    /// Share of non-special positions chosen.
    pub prob: f64,
    /// Cap on chosen positions a sequence.
    pub max_predictions: usize,
    /// Vocabulary size; random replacements are drawn from the non-special ids.
    pub vocab_size: u32,
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

    /// Masks one sequence: chooses positions among the non-special ones, then replaces 80 % of
    /// them by [MASK], 10 % by a random word piece and leaves 10 % unchanged.
    pub fn apply<R: Rng>(&self, seq: &[u32], rng: &mut R) -> MlmExample {
        let candidates: Vec<usize> = (0..seq.len()).filter(|&i| seq[i] >= NUM_SPECIAL || seq[i] == crate::text::tokenizer::UNK).collect();
        let n = self.num_predictions(candidates.len());
        let mut positions: Vec<usize> = sample(rng, candidates.len(), n).into_iter().map(|k| candidates[k]).collect();
        positions.sort_unstable();
        let mut input_ids = seq.to_vec();
        let targets = positions.iter().map(|&p| seq[p]).collect();
        for &p in &positions {
            let r: f64 = rng.random();
            if r < 0.8 {
                input_ids[p] = MASK;
            } else if r < 0.9 {
                input_ids[p] = rng.random_range(NUM_SPECIAL..self.vocab_size);
            }
        }
        MlmExample { input_ids, positions, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::PAD;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn chunking_wraps_and_caps() {
        let ids: Vec<u32> = (10..260).collect();
        let seqs = chunk_document(&ids, 128);
        assert_eq!(seqs.len(), 2);
        assert!(seqs.iter().all(|s| s.len() <= 128 && s[0] == CLS && *s.last().unwrap() == SEP));
        assert_eq!(seqs[0].len(), 128);
        assert_eq!(seqs[1].len(), 250 - 126 + 2);
        // a tiny tail is dropped, a tiny document is kept
        assert_eq!(chunk_document(&(10..140).collect::<Vec<_>>(), 128).len(), 1);
        assert_eq!(chunk_document(&[10, 11], 128), vec![vec![CLS, 10, 11, SEP]]);
    }

    #[test]
    fn masking_statistics() {
        let m = Masking { prob: 0.15, max_predictions: 20, vocab_size: 1000 };
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
        let m = Masking { prob: 0.15, max_predictions: 5, vocab_size: 1000 };
        assert_eq!(m.num_predictions(100), 5);
        assert_eq!(m.num_predictions(3), 1);
        assert_eq!(m.num_predictions(0), 0);
        let mut rng = StdRng::seed_from_u64(1);
        let ex = m.apply(&[CLS, SEP, PAD], &mut rng);
        assert!(ex.positions.is_empty());
    }
}
