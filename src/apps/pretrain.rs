//! The `pretrain` command's pipeline: the corpus streamed from disk, the tokenizer (the
//! pre-trained model's, the interrupted run's, a given one, or one trained on the corpus), the
//! run record, the training loop, and the output directory moved into place when it succeeds.

use super::setup::{choose_tokenizer, outcome, output_dir};
use crate::config::Config;
use crate::store::model_dir::{ModelDir, ModelKind};
use crate::store::run_info::{InputFile, RunInfo};
use crate::text::corpus::{CorpusFile, DocumentSource};
use crate::text::reader::BadLines;
use crate::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use crate::train::pretrain::{pretrain, PretrainEpoch};
use crate::train::RunOptions;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Everything a pre-training run reads and writes, besides its config.
pub struct PretrainJob {
    /// Raw corpus (.txt or .txt.gz).
    pub corpus: PathBuf,
    /// Output model directory.
    pub out: PathBuf,
    /// The pre-trained model to continue (see [`open_pretrained`]).
    pub init: Option<ModelDir>,
    /// A tokenizer file or directory; without it (and without `init`) one is trained.
    pub vocab: Option<PathBuf>,
    /// How that tokenizer is trained on the corpus.
    pub vocab_options: VocabOptions,
    /// What the corpus reader does with bad lines.
    pub bad_lines: BadLines,
    /// Read at most this many documents (test mode).
    pub max_docs: Option<usize>,
    /// Replace an existing output directory once the run has succeeded.
    pub overwrite: bool,
    /// Logging, checkpoints, resume.
    pub options: RunOptions,
}

/// A model directory that `pretrain` can continue: a pre-trained one, not a classifier.
pub fn open_pretrained(path: &Path) -> Result<ModelDir> {
    let dir = ModelDir::open(path)?;
    if dir.meta.kind != ModelKind::Pretrained {
        bail!("{}: holds a {} model; pretrain --init takes a model written by pretrain", path.display(), format!("{:?}", dir.meta.kind).to_lowercase());
    }
    Ok(dir)
}

/// Runs the job with `cfg` (whose `vocab_size` is set from the tokenizer); returns the epochs'
/// scores and the finished model directory.
pub fn run(mut cfg: Config, job: &PretrainJob) -> Result<(Vec<PretrainEpoch>, PathBuf)> {
    let out = output_dir(&job.out, job.options.resume, job.overwrite)?;
    // The corpus is streamed (read again on each pass), never held in memory whole.
    let docs = CorpusFile::open(&job.corpus, job.bad_lines, job.max_docs)?;
    let tokenizer = choose_tokenizer(job.init.as_ref(), job.options.resume, &out, job.vocab.as_deref(), || train_on_corpus(&docs, &job.vocab_options))?;
    cfg.model.vocab_size = tokenizer.vocab_size();
    crate::train::interrupt::install_interrupt_handler();
    let mut inputs = vec![InputFile::of("corpus", &job.corpus)?];
    if let Some(v) = &job.vocab {
        inputs.push(InputFile::of("vocab", &if v.is_dir() { v.join(crate::store::layout::TOKENIZER_FILE) } else { v.clone() })?);
    }
    if let Some(dir) = &job.init {
        inputs.push(InputFile::of("init", &dir.weights())?);
    }
    let mut info = RunInfo::start(out.path(), "pretrain", &cfg, cfg.pretrain.optim.seed, inputs)?;
    let result = pretrain(&cfg, &docs, &tokenizer, job.init.as_ref(), out.path(), &job.options);
    info.finish(out.path(), &outcome(&result))?;
    let log = result?;
    Ok((log, out.commit()?))
}

/// A vocabulary trained on a streamed corpus; a read error ends it.
fn train_on_corpus(docs: &CorpusFile, options: &VocabOptions) -> Result<WordPieceTokenizer> {
    let failure = std::sync::Mutex::new(None);
    let texts = docs.documents()?.map_while(|d| d.map_err(|e| *failure.lock().expect("lock") = Some(e)).ok());
    let t = WordPieceTokenizer::train(texts, options)?;
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(t)
}
