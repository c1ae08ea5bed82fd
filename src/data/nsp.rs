//! Next-sentence prediction examples: documents split into sentences, then packed into pairs
//! `[CLS] A [SEP] B [SEP]` where B is the text that follows A in its document (IsNext) or text
//! from another document (NotNext), half and half — the recipe of google-bert's
//! `create_pretraining_data.py`, with its truncation and its share of shorter pairs.

use crate::text::tokenizer::SpecialIds;
use rand::Rng;

/// One pre-training input before masking: `[CLS] … [SEP]`, or a pair `[CLS] A [SEP] B [SEP]`
/// with whether B follows A.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Word-piece ids with their [CLS] and [SEP]s.
    pub ids: Vec<u32>,
    /// For pairs: B is A's true continuation.
    pub is_next: Option<bool>,
}

/// Splits a document into sentences: at line breaks (the google-bert layout, one sentence a line,
/// reaches here with its lines joined by `\n`), after `。！？` (Chinese needs no space after
/// them), and after `.`, `!` or `?` followed by a space and a character that is not a lower-case
/// letter (so `e.g. the` and `version 2.0` stay whole). Closing quotes and brackets after the
/// mark stay with its sentence. Empty pieces are dropped.
pub fn split_sentences(text: &str) -> Vec<&str> {
    const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '»', '”', '’', '」', '』', '）', '】'];
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    fn push<'t>(text: &'t str, from: usize, to: usize, out: &mut Vec<&'t str>) {
        let s = text[from..to].trim();
        if !s.is_empty() {
            out.push(s);
        }
    }
    while i < chars.len() {
        let (at, c) = chars[i];
        if c == '\n' {
            push(text, start, at, &mut out);
            start = at + 1;
            i += 1;
            continue;
        }
        let full_width = matches!(c, '。' | '！' | '？');
        if full_width || matches!(c, '.' | '!' | '?') {
            // the run of marks and closers that ends the sentence
            let mut j = i + 1;
            while j < chars.len() && (matches!(chars[j].1, '.' | '!' | '?' | '。' | '！' | '？') || CLOSERS.contains(&chars[j].1)) {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |&(p, _)| p);
            let split = if full_width {
                true
            } else {
                // ASCII marks need a space, then something that does not continue the sentence
                let mut k = j;
                while k < chars.len() && chars[k].1 == ' ' {
                    k += 1;
                }
                k > j && k < chars.len() && !chars[k].1.is_lowercase()
            };
            if split {
                push(text, start, end, &mut out);
                start = end;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    push(text, start, text.len(), &mut out);
    out
}

/// How pairs are built.
#[derive(Debug, Clone, Copy)]
pub struct PairSettings {
    /// Longest sequence, [CLS] and both [SEP]s included.
    pub max_len: usize,
    /// Share of pairs built to a random shorter target length.
    pub short_seq_prob: f64,
    /// The vocabulary's special ids.
    pub specials: SpecialIds,
}

/// Builds the pairs of documents `docs[i]` for every `i` in `which` (each document: its
/// sentences' word-piece ids). NotNext sides come from other documents of `which` (or, when it
/// has only one, of `docs`). A document is packed into spans of sentences up to the target
/// length; each span is cut at a random sentence boundary into A and B; with probability ½ B is
/// replaced by text from a random other document (the unused sentences are then put back). A span
/// of one sentence is joined with the next sentence when IsNext is drawn, or split inside at a
/// word-piece boundary when it is the document's last, so the IsNext share stays near ½ for
/// short documents too. The longer side is truncated (at a random end) until the pair fits.
pub fn build_pairs<R: Rng>(docs: &[Vec<Vec<u32>>], which: &[usize], settings: PairSettings, rng: &mut R) -> Vec<Sequence> {
    let max_tokens = settings.max_len.saturating_sub(3).max(2);
    let others: Vec<usize> = if which.len() > 1 { which.to_vec() } else { (0..docs.len()).collect() };
    let mut out = Vec::new();
    for &d in which {
        let doc = &docs[d];
        let target = if rng.random::<f64>() < settings.short_seq_prob { rng.random_range(2..=max_tokens) } else { max_tokens };
        let mut span: Vec<&[u32]> = Vec::new();
        let mut length = 0usize;
        let mut i = 0usize;
        while i < doc.len() {
            span.push(&doc[i]);
            length += doc[i].len();
            let last = i + 1 == doc.len();
            if !(last || length >= target) {
                i += 1;
                continue;
            }
            let want_next = rng.random::<bool>();
            if want_next && span.len() == 1 && !last {
                // one long sentence: take the next one in as B
                i += 1;
                span.push(&doc[i]);
            }
            let (a, b, is_next) = if span.len() >= 2 {
                let cut = rng.random_range(1..span.len());
                let a: Vec<u32> = span[..cut].concat();
                if want_next {
                    (a, span[cut..].concat(), true)
                } else {
                    match random_text(docs, &others, d, target.saturating_sub(a.len()).max(1), rng) {
                        Some(b) => {
                            // the sentences not used as A start the next span
                            i -= span.len() - cut;
                            (a, b, false)
                        }
                        None => (a, span[cut..].concat(), true),
                    }
                }
            } else {
                let only = span[0];
                match (want_next, random_text(docs, &others, d, target.saturating_sub(only.len() / 2).max(1), rng)) {
                    (false, Some(b)) => (only.to_vec(), b, false),
                    _ if only.len() >= 2 => {
                        let cut = rng.random_range(1..only.len());
                        (only[..cut].to_vec(), only[cut..].to_vec(), true)
                    }
                    _ => {
                        // a one-piece document with no other document to pair it with
                        span.clear();
                        length = 0;
                        i += 1;
                        continue;
                    }
                }
            };
            out.push(pair(a, b, is_next, max_tokens, settings.specials, rng));
            span.clear();
            length = 0;
            i += 1;
        }
    }
    out
}

/// Text of about `want` pieces from a random sentence onwards of a random document other than
/// `not` (10 tries, as google-bert; `None` if every try hit `not` or an empty document).
fn random_text<R: Rng>(docs: &[Vec<Vec<u32>>], others: &[usize], not: usize, want: usize, rng: &mut R) -> Option<Vec<u32>> {
    for _ in 0..10 {
        let d = others[rng.random_range(0..others.len())];
        if d == not || docs[d].is_empty() {
            continue;
        }
        let start = rng.random_range(0..docs[d].len());
        let mut b = Vec::new();
        for s in &docs[d][start..] {
            b.extend_from_slice(s);
            if b.len() >= want {
                break;
            }
        }
        if !b.is_empty() {
            return Some(b);
        }
    }
    None
}

/// `[CLS] a [SEP] b [SEP]`, the longer side cut (from its front or back at random) until both fit
/// in `max_tokens`.
fn pair<R: Rng>(mut a: Vec<u32>, mut b: Vec<u32>, is_next: bool, max_tokens: usize, specials: SpecialIds, rng: &mut R) -> Sequence {
    while a.len() + b.len() > max_tokens {
        let longer = if a.len() > b.len() { &mut a } else { &mut b };
        if rng.random::<bool>() {
            longer.remove(0);
        } else {
            longer.pop();
        }
    }
    // both sides now fit, so wrap_pair only adds the specials
    Sequence { ids: wrap_pair(&a, &b, max_tokens + 3, specials), is_next: Some(is_next) }
}

/// `[CLS] a [SEP] b [SEP]` for classifying a pair of texts: the longer side is cut at its end
/// until the whole fits in `max_len`.
pub fn wrap_pair(a: &[u32], b: &[u32], max_len: usize, specials: SpecialIds) -> Vec<u32> {
    let budget = max_len.saturating_sub(3);
    let (mut na, mut nb) = (a.len(), b.len());
    while na + nb > budget {
        if na > nb {
            na -= 1;
        } else {
            nb -= 1;
        }
    }
    let mut ids = Vec::with_capacity(na + nb + 3);
    ids.push(specials.cls);
    ids.extend_from_slice(&a[..na]);
    ids.push(specials.sep);
    ids.extend_from_slice(&b[..nb]);
    ids.push(specials.sep);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::{CLS, SEP};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn english_sentences() {
        let t = "Fast and Secure Tunneling Daemon A VPN daemon. It runs on routers! Does it? Yes (see e.g. the manual). Version 2.0 is out.";
        assert_eq!(split_sentences(t), vec!["Fast and Secure Tunneling Daemon A VPN daemon.", "It runs on routers!", "Does it?", "Yes (see e.g. the manual).", "Version 2.0 is out."]);
        // a lower-case word after the stop, a URL and a number do not end a sentence
        assert_eq!(split_sentences("see http://golang.org/pkg now. and 3.14 too"), vec!["see http://golang.org/pkg now. and 3.14 too"]);
        // quotes stay with their sentence; line breaks always split
        assert_eq!(split_sentences("He said \"go.\" Then left.\nNew line"), vec!["He said \"go.\"", "Then left.", "New line"]);
        assert_eq!(split_sentences("  \n  "), Vec::<&str>::new());
    }

    #[test]
    fn chinese_sentences() {
        assert_eq!(split_sentences("我爱北京。天安门很大！你去过吗？去过"), vec!["我爱北京。", "天安门很大！", "你去过吗？", "去过"]);
        assert_eq!(split_sentences("他说：“好。”然后走了。"), vec!["他说：“好。”", "然后走了。"]);
    }

    fn corpus(n_docs: usize, rng: &mut StdRng) -> Vec<Vec<Vec<u32>>> {
        // document d's sentences hold ids d*1000 + sentence*100 + k, so a pair's origin can be read back
        (0..n_docs)
            .map(|d| (0..rng.random_range(1..8)).map(|s| (0..rng.random_range(3..20)).map(|k| 10_000 + (d * 1000 + s * 100 + k) as u32).collect()).collect())
            .collect()
    }

    #[test]
    fn pair_statistics() {
        let mut rng = StdRng::seed_from_u64(5);
        let docs = corpus(400, &mut rng);
        let which: Vec<usize> = (0..docs.len()).collect();
        let settings = PairSettings { specials: SpecialIds::BERTLU, max_len: 48, short_seq_prob: 0.1 };
        let pairs = build_pairs(&docs, &which, settings, &mut rng);
        assert!(pairs.len() > 400, "{} pairs", pairs.len());
        let next = pairs.iter().filter(|p| p.is_next == Some(true)).count();
        let share = next as f64 / pairs.len() as f64;
        assert!((share - 0.5).abs() < 0.05, "IsNext share {share}");
        let doc_of = |id: u32| ((id - 10_000) / 1000) as usize;
        for p in &pairs {
            assert!(p.ids.len() <= 48);
            assert_eq!(p.ids[0], CLS);
            assert_eq!(*p.ids.last().unwrap(), SEP);
            let sep = p.ids.iter().position(|&t| t == SEP).unwrap();
            let (a, b) = (&p.ids[1..sep], &p.ids[sep + 1..p.ids.len() - 1]);
            assert!(!a.is_empty() && !b.is_empty());
            let same = doc_of(a[0]) == doc_of(b[0]);
            assert_eq!(same, p.is_next == Some(true), "IsNext pairs come from one document, NotNext from two");
            if p.is_next == Some(true) {
                // B starts after A ends (truncation may drop pieces between them, never reorder)
                assert!(b[0] > *a.last().unwrap());
            }
        }
        // a share of the pairs is built shorter than the maximum
        let short = pairs.iter().filter(|p| p.ids.len() < 24).count();
        assert!(short > 0);
    }

    #[test]
    fn pairs_fit_and_truncate_the_longer_side() {
        let mut rng = StdRng::seed_from_u64(1);
        let s = pair((100..160).collect(), (200..210).collect(), true, 40, SpecialIds::BERTLU, &mut rng);
        assert_eq!(s.ids.len(), 43);
        assert_eq!(s.ids.iter().filter(|&&t| (200..210).contains(&t)).count(), 10, "the shorter side is kept whole");
        let w = wrap_pair(&(100..160).collect::<Vec<_>>(), &(200..205).collect::<Vec<_>>(), 20, SpecialIds::BERTLU);
        assert_eq!(w.len(), 20);
        assert_eq!(&w[..3], &[CLS, 100, 101]);
        assert_eq!(&w[w.len() - 6..], &[200, 201, 202, 203, 204, SEP]);
    }
}
