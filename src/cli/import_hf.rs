//! `bertlu import-hf`: a HuggingFace BERT checkpoint as a bertlu pre-trained model.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `import-hf`.
#[derive(Args, Debug)]
pub struct ImportHfArgs {
    /// HuggingFace checkpoint directory: config.json (model_type bert), model.safetensors, and
    /// tokenizer.json or vocab.txt.
    pub dir: PathBuf,
    /// Output model directory (a bertlu pre-trained model: `finetune --init` takes it).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `import-hf`.
pub fn run(a: ImportHfArgs) -> Result<()> {
    let (_, said) = bertlu::apps::import_hf::run(&a.dir, &a.out, a.overwrite)?;
    for line in said {
        println!("{line}");
    }
    Ok(())
}
