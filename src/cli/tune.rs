//! `bertlu tune-thresholds`: per-label decision thresholds of a multi-label classifier, chosen
//! on a labelled (validation) file and stored with the model.

use anyhow::Result;
use bertlu::inference::LoadedClassifier;
use bertlu::thresholds::Objective;
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
    #[arg(long, default_value_t = bertlu::thresholds::MIN_SUPPORT)]
    pub min_support: usize,
}

/// Runs `tune-thresholds`.
pub fn run(a: TuneArgs) -> Result<()> {
    let mut clf = LoadedClassifier::open(&a.model)?;
    let examples = read_examples(&a.data)?;
    tune_and_report(&mut clf, &examples, a.objective, a.min_support)
}

/// Tunes, stores and prints the change.
pub fn tune_and_report(clf: &mut LoadedClassifier, examples: &[bertlu::text::labelled::Example], objective: Objective, min_support: usize) -> Result<()> {
    let (before, after) = clf.tune_thresholds(examples, objective, min_support, 64)?;
    let what = match &clf.meta.label_thresholds {
        Some(tuned) => {
            let moved = tuned.iter().filter(|&&t| (t - clf.meta.threshold).abs() > 1e-9).count();
            format!("{moved} of {} labels tuned away from {}", tuned.len(), clf.meta.threshold)
        }
        None => format!("one threshold for every label: {}", clf.meta.threshold),
    };
    println!(
        "thresholds ({objective:?}-F1): {what}, on {} examples; micro-F1 {:.4} → {:.4}, macro-F1 {:.4} → {:.4} (on the tuning data)",
        examples.len(), before.micro_f1, after.micro_f1, before.macro_f1, after.macro_f1
    );
    Ok(())
}
