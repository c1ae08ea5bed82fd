//! `bertlu tune-thresholds`: per-label decision thresholds of a multi-label classifier, chosen
//! on a labelled (validation) file and stored with the model.

use anyhow::Result;
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::eval::thresholds::Objective;
use bertlu::text::labelled::read_examples;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `tune-thresholds`.
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Fine-tuned multi-label model directory (its model.json is updated).
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled validation file (not the test file: thresholds fitted to it would flatter its scores).
    #[arg(long)]
    pub data: PathBuf,
    /// What to maximise: micro-F1 (one shared threshold) or macro-F1 (one threshold a label).
    #[arg(long, value_enum, default_value_t = Objective::Micro)]
    pub objective: Objective,
    /// With --objective macro, labels with fewer positive examples in the file keep the global threshold.
    #[arg(long, default_value_t = bertlu::eval::thresholds::MIN_SUPPORT)]
    pub min_support: usize,
}

/// Runs `tune-thresholds`.
pub fn run(a: TuneArgs) -> Result<()> {
    let mut clf = LoadedClassifier::open(&a.model)?;
    let examples = read_examples(&a.data)?;
    println!("{}", clf.tune_thresholds_described(&examples, a.objective, a.min_support)?);
    Ok(())
}
