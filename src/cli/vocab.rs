//! `bertlu vocab`: train a WordPiece vocabulary.

use anyhow::Result;
use bertlu::store::output_dir::OutputDir;
use bertlu::text::corpus::read_documents;
use bertlu::text::tokenizer::{VocabOptions, WordPieceTokenizer, TOKENIZER_FILE};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `vocab`.
#[derive(Args, Debug)]
pub struct VocabArgs {
    /// Raw corpus (.txt or .txt.gz), one document a line.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output directory (receives tokenizer.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 8000)]
    pub size: usize,
    /// Keep case (default: lower-case).
    #[arg(long)]
    pub cased: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Trains a vocabulary on a corpus file.
pub fn train_on_corpus(corpus: &Path, size: usize, cased: bool) -> Result<WordPieceTokenizer> {
    let docs = read_documents(corpus)?;
    WordPieceTokenizer::train(docs.into_iter(), &VocabOptions { size, lowercase: !cased, ..Default::default() })
}

/// Runs `vocab`.
pub fn run(a: VocabArgs) -> Result<()> {
    let out = OutputDir::create(&a.out, a.overwrite)?;
    let tok = train_on_corpus(&a.corpus, a.size, a.cased)?;
    tok.save(&out.path().join(TOKENIZER_FILE))?;
    let dir = out.commit()?;
    println!("vocabulary of {} entries written to {}", tok.vocab_size(), dir.join(TOKENIZER_FILE).display());
    Ok(())
}
