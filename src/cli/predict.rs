//! `bertlu predict`: labels for text lines, one output line per input line.

use anyhow::Result;
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::text::labelled::split_line;
use bertlu::text::reader::Lines;
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Fine-tuned model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Input file (.txt or .txt.gz), or - for standard input. Label words on a line are ignored;
    /// `text_a<TAB>text_b` is a sentence pair.
    #[arg(default_value = "-")]
    pub input: String,
    /// At most K labels a line (single-label: the top K).
    #[arg(long)]
    pub k: Option<usize>,
    /// One multi-label decision threshold for every label (default: the model's, per label when tuned).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Print each label's probability after it.
    #[arg(long)]
    pub probs: bool,
    /// Lines scored together.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub prediction: super::PredictionOptions,
}

/// Runs `predict`.
pub fn run(a: PredictArgs) -> Result<()> {
    bertlu::apps::setup::check_threshold(a.threshold)?;
    let clf = LoadedClassifier::open(&a.model)?.with_precision(a.prediction.checked("predict")).with_max_len(a.prediction.max_len)?;
    let thresholds = clf.thresholds(a.threshold);
    let lines = if a.input == "-" {
        Lines::from_reader("<stdin>", Box::new(std::io::BufReader::new(std::io::stdin())))
    } else {
        Lines::open(std::path::Path::new(&a.input))?
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut pending: Vec<String> = Vec::new();
    let flush = |texts: &mut Vec<String>, out: &mut BufWriter<_>| -> Result<()> {
        let probs = clf.probabilities(texts, a.batch_size);
        for (text, p) in texts.iter().zip(probs) {
            if text.is_empty() {
                writeln!(out)?;
                continue;
            }
            writeln!(out, "{}", clf.prediction_line(&p, &thresholds, a.k, a.probs))?;
        }
        texts.clear();
        out.flush()?;
        Ok(())
    };
    for line in lines {
        let line = line?;
        let (text, _) = split_line(&line.text).map_err(|e| anyhow::anyhow!("{}:{}: {e}", if a.input == "-" { "<stdin>" } else { &a.input }, line.number))?;
        pending.push(text);
        if pending.len() >= 1024 {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)?;
    Ok(())
}
