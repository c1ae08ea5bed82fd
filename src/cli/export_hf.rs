//! `bertlu export-hf`: a bertlu Transformer as a HuggingFace BERT checkpoint.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `export-hf`.
#[derive(Args, Debug)]
pub struct ExportHfArgs {
    /// A bertlu Transformer model directory: pre-trained (`pretrain`, `import-hf`) or a
    /// classifier pooled from [CLS] with the pooled head.
    pub model: PathBuf,
    /// Output directory: config.json, model.safetensors, tokenizer.json, vocab.txt, tokenizer_config.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `export-hf`.
pub fn run(a: ExportHfArgs) -> Result<()> {
    let (dir, architecture) = bertlu::apps::export_hf::run(&a.model, &a.out, a.overwrite)?;
    println!("{architecture} written to {} (python: transformers' AutoModel / AutoModelForSequenceClassification.from_pretrained)", dir.display());
    Ok(())
}
