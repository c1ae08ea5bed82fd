//! The sanity task of the original system: sequences of random digits, label `1` when their sum
//! exceeds the expected sum, else `0`. Learning it needs every position of the sequence, so a
//! backbone and training loop that reach high accuracy really aggregate over the input.

use crate::text::labelled::Example;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The ten digit words the toy vocabulary holds.
pub const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// `n` examples of `len` digits each; label `1` when the sum exceeds `4.5 × len` (the mean), so the
/// two classes are close to balanced.
pub fn examples(n: usize, len: usize, seed: u64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    let threshold = 9 * len / 2;
    (0..n)
        .map(|_| {
            let digits: Vec<usize> = (0..len).map(|_| rng.random_range(0..10)).collect();
            let label = if digits.iter().sum::<usize>() > threshold { "1" } else { "0" };
            Example { text: digits.iter().map(|d| DIGITS[*d]).collect::<Vec<_>>().join(" "), labels: vec![label.to_string()] }
        })
        .collect()
}

/// The toy vocabulary: the special tokens and the ten digits.
pub fn tokenizer() -> Result<WordPieceTokenizer> {
    WordPieceTokenizer::from_words(&DIGITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_sum_and_are_balanced() {
        let ex = examples(2000, 16, 7);
        let ones = ex.iter().filter(|e| e.labels == ["1"]).count();
        assert!((800..1200).contains(&ones), "{ones} of 2000 labelled 1");
        for e in &ex[..50] {
            let sum: usize = e.text.split(' ').map(|d| d.parse::<usize>().unwrap()).sum();
            assert_eq!(e.labels[0] == "1", sum > 72, "{}", e.text);
        }
        let tok = tokenizer().unwrap();
        assert_eq!(tok.vocab_size(), 15);
        assert_eq!(tok.encode("0 9 5"), vec![5, 14, 10]);
        assert_eq!(examples(5, 16, 7), examples(5, 16, 7));
    }
}
