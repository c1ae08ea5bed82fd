//! WordPiece tokenization through HuggingFace `tokenizers`: BERT normaliser (optional
//! lower-casing, CJK characters split one by one), BERT pre-tokenizer, WordPiece model.

use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Model, Tokenizer, Trainer};

/// Special tokens, in the order they get ids 0..5.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// Id of `[PAD]`.
pub const PAD: u32 = 0;
/// Id of `[UNK]`.
pub const UNK: u32 = 1;
/// Id of `[CLS]`.
pub const CLS: u32 = 2;
/// Id of `[SEP]`.
pub const SEP: u32 = 3;
/// Id of `[MASK]`.
pub const MASK: u32 = 4;
/// Number of special ids of a vocabulary bertlu trains; every id at or above it is an ordinary word piece.
pub const NUM_SPECIAL: u32 = 5;

/// The ids of the five special tokens in a vocabulary. bertlu's own vocabularies have them at
/// 0–4 ([`SpecialIds::BERTLU`]); a HuggingFace BERT vocabulary has `[PAD]` 0, `[UNK]` 100,
/// `[CLS]` 101, `[SEP]` 102, `[MASK]` 103. Masking, pairs, padding and segments use the ids of
/// the tokenizer at hand, read from its vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `[PAD]`.
    pub pad: u32,
    /// `[UNK]`.
    pub unk: u32,
    /// `[CLS]`.
    pub cls: u32,
    /// `[SEP]`.
    pub sep: u32,
    /// `[MASK]`.
    pub mask: u32,
}

impl SpecialIds {
    /// The ids of a vocabulary bertlu trained.
    pub const BERTLU: SpecialIds = SpecialIds { pad: PAD, unk: UNK, cls: CLS, sep: SEP, mask: MASK };

    /// Whether `id` is `[PAD]`, `[CLS]`, `[SEP]` or `[MASK]` (`[UNK]` stands for a word).
    pub fn is_structural(&self, id: u32) -> bool {
        id == self.pad || id == self.cls || id == self.sep || id == self.mask
    }
}

/// The file name of a saved tokenizer inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A WordPiece tokenizer and the ids of its special tokens.
#[derive(Clone)]
pub struct WordPieceTokenizer {
    inner: Tokenizer,
    specials: SpecialIds,
}

/// How to train a vocabulary.
#[derive(Debug, Clone)]
pub struct VocabOptions {
    /// Target vocabulary size, special tokens included.
    pub size: usize,
    /// Lower-case (and strip accents) before splitting.
    pub lowercase: bool,
    /// A word must occur this often to be kept whole.
    pub min_frequency: u64,
}

impl Default for VocabOptions {
    fn default() -> Self {
        Self { size: 8000, lowercase: true, min_frequency: 2 }
    }
}

/// The `tokenizers` WordPiece trainer, made deterministic.
///
/// The trainer breaks ties between equally frequent pairs by token id, and gives the
/// continuation pieces (`##c`) their ids while walking a randomly seeded hash map: the same
/// corpus then yields a slightly different vocabulary in every process. Registering every
/// `##c` up front, in character order, right after the special tokens fixes all ids, so the
/// merges (and the vocabulary) depend on the corpus alone. The content of the vocabulary is
/// what the plain trainer would choose: it adds every `##c` it meets anyway.
struct OrderedTrainer {
    inner: WordPieceTrainer,
    /// Characters seen after the first position of a word.
    continuations: Mutex<BTreeSet<char>>,
}

impl Trainer for OrderedTrainer {
    type Model = ModelWrapper;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, model: &mut ModelWrapper) -> tokenizers::Result<Vec<AddedToken>> {
        let ModelWrapper::WordPiece(wordpiece) = model else {
            return Err("the vocabulary trainer needs a WordPiece model".into());
        };
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
        let continuations = self.continuations.lock().map_err(|_| "vocabulary trainer state poisoned")?;
        let mut ordered = specials.clone();
        ordered.extend(continuations.iter().map(|c| AddedToken::from(format!("##{c}"), false)));
        let mut inner = self.inner.clone();
        inner.set_special_tokens(ordered);
        inner.train(wordpiece)?;
        // Only the real special tokens are matched in raw text; the `##c` stay plain pieces.
        Ok(specials)
    }

    fn feed<I, S, F>(&mut self, iterator: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        let continuations = &self.continuations;
        self.inner.feed(iterator, |text| {
            let words = process(text)?;
            let mut seen: BTreeSet<char> = BTreeSet::new();
            for w in &words {
                seen.extend(w.chars().skip(1));
            }
            continuations.lock().map_err(|_| "vocabulary trainer state poisoned")?.extend(seen);
            Ok(words)
        })
    }
}

impl WordPieceTokenizer {
    fn pipeline(lowercase: bool) -> Tokenizer {
        let model = WordPiece::builder().unk_token("[UNK]".into()).build().expect("static WordPiece settings are valid");
        let mut tok = Tokenizer::new(model);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_decoder(Some(WordPieceDecoder::default()));
        tok
    }

    /// Trains a vocabulary on the given texts.
    pub fn train<I>(texts: I, options: &VocabOptions) -> Result<Self>
    where
        I: Iterator<Item = String> + Send,
    {
        if options.size <= SPECIAL_TOKENS.len() + 10 {
            anyhow::bail!("vocabulary size {} is too small (minimum {})", options.size, SPECIAL_TOKENS.len() + 11);
        }
        let mut tok = Self::pipeline(options.lowercase);
        let trainer = WordPieceTrainer::builder()
            .vocab_size(options.size)
            .min_frequency(options.min_frequency)
            .show_progress(false)
            .build();
        let mut trainer = OrderedTrainer { inner: trainer, continuations: Mutex::new(BTreeSet::new()) };
        tok.train(&mut trainer, texts).map_err(|e| anyhow!("vocabulary training failed: {e}"))?;
        Self::with_specials(tok, true)
    }

    /// A tokenizer over a fixed word list (after the special tokens), no training: for
    /// synthetic tasks whose vocabulary is known in advance.
    pub fn from_words(words: &[&str]) -> Result<Self> {
        let vocab: ahash::AHashMap<String, u32> =
            SPECIAL_TOKENS.iter().chain(words.iter()).enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
        let model = WordPiece::builder().vocab(vocab).unk_token("[UNK]".into()).build().map_err(|e| anyhow!("invalid word list: {e}"))?;
        let mut inner = Self::pipeline(true);
        inner.with_model(model);
        Self::with_specials(inner, true)
    }

    /// The BERT pipeline over a vocabulary given in id order, as a HuggingFace `vocab.txt` lists
    /// it (one token a line, the line number its id); the five special tokens may sit anywhere in
    /// it (`[PAD]` 0, `[UNK]` 100, `[CLS]` 101, … in BERT's), and must all be there.
    pub fn from_vocab_list(tokens: &[String], lowercase: bool) -> Result<Self> {
        let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        if vocab.len() != tokens.len() {
            anyhow::bail!("the vocabulary lists a token twice");
        }
        let model = WordPiece::builder().vocab(vocab).unk_token("[UNK]".into()).build().map_err(|e| anyhow!("invalid vocabulary: {e}"))?;
        let mut inner = Self::pipeline(lowercase);
        inner.with_model(model);
        Self::with_specials(inner, false)
    }

    /// The tokenizer with the ids of its special tokens, all five required; `own`: a vocabulary
    /// bertlu built, which must have them at 0–4.
    fn with_specials(inner: Tokenizer, own: bool) -> Result<Self> {
        let id = |token: &str| inner.token_to_id(token).ok_or_else(|| anyhow!("the vocabulary has no {token} token"));
        let specials = SpecialIds { pad: id("[PAD]")?, unk: id("[UNK]")?, cls: id("[CLS]")?, sep: id("[SEP]")?, mask: id("[MASK]")? };
        if own && specials != SpecialIds::BERTLU {
            anyhow::bail!("tokenizer does not map [PAD] [UNK] [CLS] [SEP] [MASK] to ids 0–4 (found {specials:?})");
        }
        Ok(Self { inner, specials })
    }

    /// The ids of the special tokens.
    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Whether the normaliser lower-cases (and strips accents).
    pub fn lowercase(&self) -> bool {
        serde_json::to_value(self.inner.get_normalizer()).ok().and_then(|n| n.get("lowercase").and_then(|v| v.as_bool())).unwrap_or(true)
    }

    /// The vocabulary in id order, as HuggingFace's `vocab.txt` lists it.
    pub fn vocab_list(&self) -> Vec<String> {
        (0..self.vocab_size() as u32).map(|id| self.id_to_token(id).unwrap_or_default()).collect()
    }

    /// Saves as `tokenizer.json` with BERT's post-processor (`[CLS] A [SEP]`, `[CLS] A [SEP] B
    /// [SEP]` with segment ids), so that HuggingFace's tokenizers add the special tokens
    /// themselves as they do for BERT; bertlu adds them itself and reads such a file unchanged.
    pub fn save_for_hf(&self, path: &Path) -> Result<()> {
        let s = self.specials;
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
            .map_err(|e| anyhow!("post-processor: {e}"))?
            .special_tokens(vec![("[CLS]", s.cls), ("[SEP]", s.sep)])
            .build()
            .map_err(|e| anyhow!("post-processor: {e}"))?;
        let mut inner = self.inner.clone();
        inner.with_post_processor(Some(template));
        inner.save(path, false).map_err(|e| anyhow!("{}: cannot write tokenizer: {e}", path.display()))
    }

    /// Loads `tokenizer.json` from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| anyhow!("{}: not a valid tokenizer file: {e}", path.display()))?;
        // a tokenizer.json from elsewhere may truncate or pad; bertlu cuts and pads sequences itself
        inner.with_truncation(None).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        inner.with_padding(None);
        Self::with_specials(inner, false).with_context(|| format!("{}", path.display()))
    }

    /// Saves as `tokenizer.json` (HuggingFace format, loadable by Python `tokenizers` too).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| anyhow!("{}: cannot write tokenizer: {e}", path.display()))
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Word-piece ids of one text, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // The pipeline has no failing stage for valid UTF-8 input; an error would be a bug.
        self.inner.encode_fast(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default()
    }

    /// Word-piece ids of many texts, encoded in parallel.
    pub fn encode_batch(&self, texts: &[String]) -> Vec<Vec<u32>> {
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        match self.inner.encode_batch_fast(refs, false) {
            Ok(encs) => encs.iter().map(|e| e.get_ids().to_vec()).collect(),
            Err(_) => texts.iter().map(|t| self.encode(t)).collect(),
        }
    }

    /// The word pieces of a text, as strings (for inspection and tests).
    pub fn tokens(&self, text: &str) -> Vec<String> {
        self.inner.encode(text, false).map(|e| e.get_tokens().to_vec()).unwrap_or_default()
    }

    /// The string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.get_model().id_to_token(id)
    }

    /// True for pieces that continue a word (`##…`): whole-word masking keeps them with their word.
    pub fn is_continuation(&self, id: u32) -> bool {
        self.id_to_token(id).is_some_and(|t| t.starts_with("##"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A vocabulary in BERT's layout: `[PAD]` 0, `[unusedN]` 1–99, `[UNK]` 100, `[CLS]` 101,
    /// `[SEP]` 102, `[MASK]` 103, then the words.
    pub(crate) fn bert_layout(words: &[&str]) -> WordPieceTokenizer {
        let mut tokens = vec!["[PAD]".to_string()];
        tokens.extend((1..100).map(|i| format!("[unused{i}]")));
        tokens.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from));
        tokens.extend(words.iter().map(|w| w.to_string()));
        WordPieceTokenizer::from_vocab_list(&tokens, true).unwrap()
    }

    #[test]
    fn special_ids_come_from_the_vocabulary() {
        let tok = bert_layout(&["network", "tool", "##s"]);
        assert_eq!(tok.specials(), SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 });
        assert_eq!(tok.encode("Network tools!"), vec![104, 105, 106, 100]);
        // saved and loaded, the ids stay the vocabulary's
        let dir = tempfile::tempdir().unwrap();
        tok.save(&dir.path().join("t.json")).unwrap();
        assert_eq!(WordPieceTokenizer::load(&dir.path().join("t.json")).unwrap().specials(), tok.specials());
        // one that truncates to 2 pieces (as HuggingFace's files may) is read without it
        let mut truncating = tok.inner.clone();
        truncating.with_truncation(Some(tokenizers::TruncationParams { max_length: 2, ..Default::default() })).unwrap();
        truncating.save(dir.path().join("trunc.json"), false).unwrap();
        assert_eq!(WordPieceTokenizer::load(&dir.path().join("trunc.json")).unwrap().encode("network tool network tool").len(), 4);
        // bertlu's own layout, and a vocabulary without [MASK] refused by name
        assert_eq!(WordPieceTokenizer::from_words(&["a"]).unwrap().specials(), SpecialIds::BERTLU);
        let no_mask: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "word"].map(String::from).to_vec();
        let e = WordPieceTokenizer::from_vocab_list(&no_mask, true).err().expect("refused").to_string();
        assert!(e.contains("[MASK]"), "{e}");
    }

    fn corpus() -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..50 {
            v.push(format!("The library provides parsing functions number {i}. Parsing is fast!"));
            v.push("我爱北京天安门，北京是中国的首都。".to_string());
            v.push("Unbelievable tokenization of unbelievably long words".to_string());
        }
        v
    }

    #[test]
    fn english_and_chinese() {
        let tok = WordPieceTokenizer::train(corpus().into_iter(), &VocabOptions { size: 200, lowercase: true, min_frequency: 1 }).unwrap();
        assert_eq!(tok.id_to_token(MASK).as_deref(), Some("[MASK]"));
        let t = tok.tokens("The LIBRARY provides parsing!");
        assert_eq!(t, vec!["the", "library", "provides", "parsing", "!"]);
        // CJK characters are split one by one, with no spaces in the input.
        let t = tok.tokens("北京天安门");
        assert_eq!(t, vec!["北", "京", "天", "安", "门"]);
        // Unknown characters become [UNK], not an error.
        let ids = tok.encode("ß∂ƒ");
        assert!(ids.iter().all(|&i| i < tok.vocab_size() as u32));
        // Save and load keep the same encoding.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok.json");
        tok.save(&p).unwrap();
        let tok2 = WordPieceTokenizer::load(&p).unwrap();
        assert_eq!(tok.encode("parsing unbelievable 北京"), tok2.encode("parsing unbelievable 北京"));
        // encoding without offsets (what encode and encode_batch do) gives the ids of encoding with
        // them: accents, capitals, control and zero-width characters, CJK, unknown characters
        let texts = ["Ünbelievable  PARSING\tof\u{200b} café\u{0007}s", "我爱北京。Tools!", "ß∂ƒ x", ""].map(String::from);
        let with_offsets: Vec<Vec<u32>> = texts.iter().map(|t| tok.inner.encode(t.as_str(), false).unwrap().get_ids().to_vec()).collect();
        assert_eq!(tok.encode_batch(&texts), with_offsets);
        assert_eq!(texts.iter().map(|t| tok.encode(t)).collect::<Vec<_>>(), with_offsets);
    }

    /// Many distinct, equally frequent words: the trainer meets ties at every step.
    fn tied_corpus() -> Vec<String> {
        let mut v = Vec::new();
        for a in ["b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"] {
            for b in ["a", "e", "i", "o", "u"] {
                for c in ["x", "q", "w", "h", "j"] {
                    v.push(format!("{a}{b}{c}{b} {c}{a}{b} 北{b}京"));
                }
            }
        }
        v
    }

    #[test]
    fn the_same_corpus_gives_the_same_vocabulary() {
        let opts = VocabOptions { size: 150, lowercase: true, min_frequency: 1 };
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<String> = (0..4)
            .map(|i| {
                let tok = WordPieceTokenizer::train(tied_corpus().into_iter(), &opts).unwrap();
                assert_eq!(tok.vocab_size(), 150);
                let p = dir.path().join(format!("t{i}.json"));
                tok.save(&p).unwrap();
                std::fs::read_to_string(p).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| *f == files[0]), "vocabulary training is deterministic");
        // the continuation pieces registered up front are ordinary pieces, not special tokens
        let tok = WordPieceTokenizer::load(&dir.path().join("t0.json")).unwrap();
        assert_eq!(tok.tokens("baxa ##a"), tok.tokens("baxa # # a"));
    }
}
