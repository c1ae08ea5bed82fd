//! `bertlu average`: the weights of several fine-tuned classifiers of one architecture (e.g. one
//! run's last epochs, kept by `finetune --keep-epochs`) averaged into one model.

use anyhow::Result;
use bertlu::apps::average::{build, AverageSpec};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `average`.
#[derive(Args, Debug)]
pub struct AverageArgs {
    /// Fine-tuned model directories (two or more, comma-separated or repeated) of one
    /// architecture, vocabulary and label order: e.g. `run/epochs/epoch-4,run/epochs/epoch-5`.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Output directory (a fine-tuned model directory like the others).
    #[arg(long)]
    pub out: PathBuf,
    /// Tune the averaged model's decision thresholds on this labelled (validation) file.
    #[arg(long)]
    pub tune_on: Option<PathBuf>,
    /// With --tune-on: micro-F1 (one shared threshold) or macro-F1 (one a label).
    #[arg(long, value_enum, default_value_t = bertlu::eval::thresholds::Objective::Micro)]
    pub objective: bertlu::eval::thresholds::Objective,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `average`.
pub fn run(a: AverageArgs) -> Result<()> {
    let spec = AverageSpec { models: a.model.clone(), out: a.out.clone(), tune_on: a.tune_on.clone(), objective: a.objective, overwrite: a.overwrite };
    let (dir, said) = build(&spec)?;
    for line in said {
        println!("{line}");
    }
    println!("average of {} models written to {}", a.model.len(), dir.display());
    Ok(())
}
