//! `bertlu ensemble`: several fine-tuned classifiers of one label set as one model whose
//! probabilities are the members' mean (or a weighted mean). Models trained with other seeds, losses or backbones
//! make different errors; their average scores higher than any of them.

use anyhow::Result;
use bertlu::apps::ensemble::{build, EnsembleSpec, EnsembleTuning, WeightTuning};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `ensemble`.
#[derive(Args, Debug)]
pub struct EnsembleArgs {
    /// Fine-tuned model directories (two or more, comma-separated or repeated), trained on the same label set (in any order).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Relative weight of each member's probabilities, in --model order (default: equal);
    /// e.g. a linear model's share of an ensemble of fine-tuned ones.
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<f64>,
    /// Output directory; the members are copied into it, so it stands alone.
    #[arg(long)]
    pub out: PathBuf,
    /// Multi-label decision threshold (default: the first member's global threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Tune the ensemble's thresholds on this labelled (validation) file.
    #[arg(long)]
    pub tune_on: Option<PathBuf>,
    /// With --tune-on: micro-F1 (one shared threshold) or macro-F1 (one a label).
    #[arg(long, value_enum, default_value_t = bertlu::eval::thresholds::Objective::Micro)]
    pub objective: bertlu::eval::thresholds::Objective,
    /// With --tune-on: choose the `bertlu linear` members' share of the mean (0, 0.05, …, 1)
    /// together with the shared threshold, for micro-F1; the fine-tuned members share the rest
    /// equally.
    #[arg(long, requires = "tune_on", conflicts_with = "weights")]
    pub tune_linear_share: bool,
    /// With --tune-on: choose every member's weight (each one's share of the mean on the grid
    /// 0, 0.05, …, 1 in turn, from equal weights, until a pass changes nothing) together with the
    /// shared threshold, for micro-F1. A member that only hurts gets weight 0.
    #[arg(long, requires = "tune_on", conflicts_with_all = ["weights", "tune_linear_share"])]
    pub tune_weights: bool,
    /// The neural members read texts up to this many pieces instead of their trained `max_len`
    /// (kept in the ensemble: every command that uses it reads them so; a Transformer's position
    /// table must have the rows, e.g. an imported BERT's 512). The tuning reads them so too.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `ensemble`.
pub fn run(a: EnsembleArgs) -> Result<()> {
    let spec = EnsembleSpec { models: a.model.clone(), weights: a.weights.clone(), out: a.out.clone(), threshold: a.threshold, max_len: a.max_len, overwrite: a.overwrite };
    let weights = if a.tune_weights {
        Some(WeightTuning::Every)
    } else if a.tune_linear_share {
        Some(WeightTuning::LinearShare)
    } else {
        None
    };
    let tuning = a.tune_on.clone().map(|file| EnsembleTuning { file, objective: a.objective, weights });
    let (dir, said) = build(&spec, tuning.as_ref())?;
    for line in said {
        println!("{line}");
    }
    println!("ensemble of {} models written to {}", a.model.len(), dir.display());
    Ok(())
}
