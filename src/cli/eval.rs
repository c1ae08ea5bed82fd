//! `bertlu eval`: scores of a classifier on a labelled file.

use anyhow::Result;
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::text::labelled::read_examples;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Fine-tuned model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled file (.txt or .txt.gz).
    #[arg(long)]
    pub data: PathBuf,
    /// One multi-label decision threshold for every label (default: the model's, per label when tuned).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Add a per-label table (or a "labels" array in JSON).
    #[arg(long)]
    pub per_label: bool,
    /// Examples a batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub prediction: super::PredictionOptions,
}

/// Runs `eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    bertlu::apps::setup::check_threshold(a.threshold)?;
    let clf = LoadedClassifier::open(&a.model)?.with_precision(a.prediction.checked("eval")).with_max_len(a.prediction.max_len)?;
    let examples = read_examples(&a.data)?;
    let unknown: std::collections::BTreeSet<&str> = examples.iter().flat_map(|e| e.labels.iter()).filter(|l| clf.labels.get(l).is_none()).map(String::as_str).collect();
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(8).copied().collect();
        eprintln!(
            "warning: {}: {} label(s) the model was not trained on (never predicted, counted as misses): {}{}",
            a.data.display(), unknown.len(), shown.join(", "), if unknown.len() > shown.len() { ", …" } else { "" }
        );
    }
    let ev = clf.evaluate(&examples, a.threshold, a.batch_size);
    let s = &ev.scores;
    let mut rows: Vec<(&String, &bertlu::eval::metrics::LabelCounts)> = ev.accumulator.per_label().iter().collect();
    rows.sort_by(|a, b| b.1.support().cmp(&a.1.support()).then(a.0.cmp(b.0)));
    if a.json {
        let mut v = serde_json::to_value(s)?;
        v["loss"] = serde_json::json!(ev.loss);
        v["threshold"] = serde_json::to_value(clf.thresholds(a.threshold))?;
        if a.per_label {
            v["labels"] = rows.iter().map(|(n, c)| serde_json::json!({"label": n, "support": c.support(), "precision": c.precision(), "recall": c.recall(), "f1": c.f1()})).collect();
        }
        println!("{v}");
        return Ok(());
    }
    println!("examples     {}", s.examples);
    println!("loss         {:.4}", ev.loss);
    println!("micro        P {:.4}  R {:.4}  F1 {:.4}", s.micro_precision, s.micro_recall, s.micro_f1);
    println!("macro        P {:.4}  R {:.4}  F1 {:.4}", s.macro_precision, s.macro_recall, s.macro_f1);
    println!("exact match  {:.4}", s.exact_match);
    if a.per_label {
        println!("\n{:<40} {:>8} {:>8} {:>8} {:>8}", "label", "support", "P", "R", "F1");
        for (n, c) in rows {
            println!("{:<40} {:>8} {:>8.4} {:>8.4} {:>8.4}", n, c.support(), c.precision(), c.recall(), c.f1());
        }
    }
    Ok(())
}
