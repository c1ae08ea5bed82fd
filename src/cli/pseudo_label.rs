//! `bertlu pseudo-label`: a classifier's labels for the corpus documents that have none, as a
//! labelled file to fine-tune on beside the real one (self-training).

use anyhow::{bail, Context, Result};
use bertlu::store::atomic::write_via_tmp;
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::apps::pseudo_label::{fold, pseudo_label};
use bertlu::text::corpus::{CorpusFile, DocumentSource};
use bertlu::text::labelled::read_examples;
use bertlu::text::reader::BadLines;
use clap::Args;
use std::collections::HashSet;
use std::path::PathBuf;

/// Arguments of `pseudo-label`.
#[derive(Args, Debug)]
pub struct PseudoLabelArgs {
    /// The teacher: a fine-tuned model or an ensemble directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Raw corpus (one document a line, or blank-line-separated), .txt or .txt.gz.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Labelled files whose texts are left out (comma-separated or repeated): the training file,
    /// and always the validation and test files, whose scores would otherwise flatter the student.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub exclude: Vec<PathBuf>,
    /// Output labelled file (fastText form), written through a temporary file.
    #[arg(long)]
    pub out: PathBuf,
    /// One multi-label decision threshold for every label (default: the teacher's, per label when tuned).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Documents scored together.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `pseudo-label`.
pub fn run(a: PseudoLabelArgs) -> Result<()> {
    if a.out.exists() && !a.overwrite {
        bail!("{}: already exists (use --overwrite to replace it)", a.out.display());
    }
    bertlu::apps::setup::check_threshold(a.threshold)?;
    let teacher = LoadedClassifier::open(&a.model)?;
    let mut exclude = HashSet::new();
    for f in &a.exclude {
        exclude.extend(read_examples(f)?.into_iter().map(|e| fold(&e.text)));
    }
    let corpus = CorpusFile::open(&a.corpus, BadLines::Fail, None)?;
    let thresholds = teacher.thresholds(a.threshold);
    let mut counts = None;
    write_via_tmp(&a.out, |tmp| {
        let file = std::fs::File::create(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let c = pseudo_label(&teacher, corpus.documents()?, &exclude, &thresholds, a.batch_size, &mut w)?;
        if c.written == 0 {
            // an error here leaves an existing output file as it was
            bail!("{}: no document left to label ({} read, {} in the labelled files, {} repeated)", a.corpus.display(), c.read, c.labelled, c.duplicates);
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        counts = Some(c);
        Ok(())
    })?;
    let c = counts.expect("written");
    println!(
        "{} documents labelled by {} written to {} ({} read; left out: {} in the labelled files, {} repeated, {} with __label__ words; {} given the top label alone)",
        c.written, a.model.display(), a.out.display(), c.read, c.labelled, c.duplicates, c.unwritable, c.top_label_only
    );
    Ok(())
}
