//! The corpus read as pre-training sequences: a pass tokenizes a chunk of documents at a time and
//! splits off the held-out ones; an epoch's batches come from a shuffle buffer of training
//! sequences, grouped by length.

use super::super::{derived_seed, streams};
use crate::config::{Config, Objective};
use crate::data::batch::bucketed_batches;
use crate::data::mlm::chunk_document;
use crate::data::nsp::{build_pairs, split_sentences, PairSettings, Sequence};
use crate::text::corpus::DocumentSource;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Documents tokenized together.
const CHUNK: usize = 2048;
/// Training sequences shuffled (and grouped by length) together: what a pass holds in memory —
/// about 10 MB of ids at Debtags' 76 pieces a sequence — however large the corpus.
pub const SHUFFLE_BUFFER: usize = 32_768;
/// Held-out sequences kept at most (the validation set of a huge corpus stays small).
pub const MAX_HELD_OUT: usize = 2_000;

/// Whether document `i` (0-based, file order) is held out: the second, then one every
/// `1 / valid_fraction` documents — the same split for every seed and every pass.
pub fn is_held_out(i: usize, valid_fraction: f64) -> bool {
    if valid_fraction <= 0.0 {
        return false;
    }
    let period = ((1.0 / valid_fraction).round() as usize).max(2);
    i % period == 1
}

/// The sequences of one chunk of documents.
pub(super) struct Chunk {
    /// Training sequences.
    pub(super) train: Vec<Sequence>,
    /// Held-out sequences.
    pub(super) held: Vec<Sequence>,
}

/// One pass over the corpus, tokenizing [`CHUNK`] documents at a time, in file order.
///
/// Without `nsp` a document is cut into `[CLS] … [SEP]` chunks; with it, into sentences packed
/// into pairs, the NotNext sides drawn from the other documents of the same chunk (training from
/// training documents, held-out from held-out ones), seeded by the chunk's number so every pass
/// builds the same pairs.
pub(super) struct Pass<'a> {
    docs: Box<dyn Iterator<Item = Result<String>> + Send + 'a>,
    tokenizer: &'a WordPieceTokenizer,
    cfg: &'a Config,
    /// Documents read so far.
    pub(super) index: usize,
    chunk_no: u64,
}

impl<'a> Pass<'a> {
    pub(super) fn new<D: DocumentSource + ?Sized>(docs: &'a D, tokenizer: &'a WordPieceTokenizer, cfg: &'a Config) -> Result<Self> {
        Ok(Self { docs: docs.documents()?, tokenizer, cfg, index: 0, chunk_no: 0 })
    }

    /// The next chunk's sequences; `None` at the end of the corpus.
    pub(super) fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut chunk = Vec::with_capacity(CHUNK);
        for d in self.docs.by_ref().take(CHUNK) {
            chunk.push(d?);
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        let (cfg, tokenizer) = (self.cfg, self.tokenizer);
        let held_out: Vec<bool> = (self.index..self.index + chunk.len()).map(|i| is_held_out(i, cfg.pretrain.valid_fraction)).collect();
        self.index += chunk.len();
        let chunk_no = self.chunk_no;
        self.chunk_no += 1;
        let (mut train, mut held) = (Vec::new(), Vec::new());
        if cfg.pretrain.has(Objective::Nsp) {
            let settings = PairSettings { max_len: cfg.model.max_len, short_seq_prob: cfg.pretrain.short_seq_prob, specials: tokenizer.specials() };
            // every sentence of the chunk tokenized in one batch, then regrouped by document
            let sentences: Vec<Vec<String>> = chunk.iter().map(|d| split_sentences(d).into_iter().map(str::to_owned).collect()).collect();
            let mut ids = tokenizer.encode_batch(&sentences.concat()).into_iter();
            let by_doc: Vec<Vec<Vec<u32>>> = sentences.iter().map(|s| ids.by_ref().take(s.len()).filter(|x| !x.is_empty()).collect()).collect();
            let mut rng = StdRng::seed_from_u64(derived_seed(cfg.pretrain.optim.seed, streams::PAIRS, chunk_no));
            let (h, t): (Vec<usize>, Vec<usize>) = (0..by_doc.len()).filter(|&i| !by_doc[i].is_empty()).partition(|&i| held_out[i]);
            train = build_pairs(&by_doc, &t, settings, &mut rng);
            held = build_pairs(&by_doc, &h, settings, &mut rng);
        } else {
            for (ids, &is_held) in tokenizer.encode_batch(&chunk).into_iter().zip(&held_out) {
                // Sequences with no word piece (empty documents) teach nothing.
                let seqs = chunk_document(&ids, cfg.model.max_len, tokenizer.specials()).into_iter().filter(|s| s.len() > 2).map(|ids| Sequence { ids, is_next: None });
                if is_held {
                    held.extend(seqs);
                } else {
                    train.extend(seqs);
                }
            }
        }
        Ok(Some(Chunk { train, held }))
    }
}

/// The batches of one epoch: [`SHUFFLE_BUFFER`] training sequences at a time, each buffer's
/// order drawn from (seed, epoch, buffer number) and grouped by length.
pub(super) struct EpochBatches<'a> {
    pass: Pass<'a>,
    epoch: usize,
    buffer: Vec<Sequence>,
    buffer_no: u64,
    queue: std::collections::VecDeque<Vec<usize>>,
    ended: bool,
}

impl<'a> EpochBatches<'a> {
    /// The batches of `epoch` (1-based), read from the start of `pass`.
    pub(super) fn new(pass: Pass<'a>, epoch: usize) -> Self {
        Self { pass, epoch, buffer: Vec::new(), buffer_no: 0, queue: Default::default(), ended: false }
    }

    /// Fills the next buffer and orders its batches; false at the end of the corpus.
    fn refill(&mut self) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        self.buffer.clear();
        while self.buffer.len() < SHUFFLE_BUFFER {
            match self.pass.next_chunk()? {
                Some(chunk) => self.buffer.extend(chunk.train),
                None => {
                    self.ended = true;
                    break;
                }
            }
        }
        let p = &self.pass.cfg.pretrain;
        let lengths: Vec<usize> = self.buffer.iter().map(|s| s.ids.len()).collect();
        let order_seed = derived_seed(p.optim.seed, streams::ORDER, ((self.epoch as u64) << 32) | self.buffer_no);
        self.buffer_no += 1;
        self.queue = bucketed_batches(&lengths, p.optim.batch_size, &mut StdRng::seed_from_u64(order_seed)).into();
        Ok(true)
    }
}

impl Iterator for EpochBatches<'_> {
    type Item = Result<Vec<Sequence>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(idx) = self.queue.pop_front() {
                return Some(Ok(idx.iter().map(|&i| self.buffer[i].clone()).collect()));
            }
            match self.refill() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
