//! `bertlu linear`: the TF-IDF + linear SVM classifier, trained on the same labelled files as
//! `finetune` and usable wherever a fine-tuned model is (eval, predict, ensemble, …).

use anyhow::Result;
use bertlu::apps::linear::{parse_char_range, LinearJob};
use bertlu::data::classify::Problem;
use bertlu::infer::linear::svm::SvmOptions;
use bertlu::infer::linear::FeatureOptions;
use bertlu::text::reader::BadLines;
use clap::Args;

/// Arguments of `linear`.
#[derive(Args, Debug)]
pub struct LinearArgs {
    /// Training, validation and output paths.
    #[command(flatten)]
    pub files: super::ClassifierFiles,
    /// SVM inverse regularisation strength (larger: fits the training data more closely).
    #[arg(long, default_value_t = 1.0)]
    pub c: f64,
    /// Longest word n-gram used as a feature.
    #[arg(long, default_value_t = 2)]
    pub ngrams: usize,
    /// Character n-gram lengths inside words, `MIN-MAX`, or `none` for word features alone.
    #[arg(long, default_value = "2-5")]
    pub chars: String,
    /// At most this many character n-grams (the most frequent; 0: no cap).
    #[arg(long, default_value_t = 300_000)]
    pub max_char_features: usize,
    /// Drop weights smaller than this in magnitude after training (a smaller model file).
    #[arg(long, default_value_t = 1e-3)]
    pub prune: f32,
    /// Least number of training texts a feature must be found in.
    #[arg(long, default_value_t = 2)]
    pub min_df: usize,
    /// Seed of the solver's visiting order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Force the problem type (default: inferred, multi-label if any line has several labels).
    #[arg(long, value_enum)]
    pub problem: Option<Problem>,
    /// Tune the decision thresholds on the validation file for micro-F1 (one shared) or
    /// macro-F1 (one a label); multi-label only.
    #[arg(long, value_enum)]
    pub tune_thresholds: Option<bertlu::eval::thresholds::Objective>,
    /// Replace an existing output directory (only once the run has succeeded).
    #[arg(long)]
    pub overwrite: bool,
    /// Skip unusable lines of the input files with a warning that counts them.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

/// Runs `linear`.
pub fn run(a: LinearArgs) -> Result<()> {
    let chars = parse_char_range(&a.chars)?;
    let job = LinearJob {
        train: a.files.train.clone(),
        valid: a.files.valid.clone(),
        out: a.files.out.clone(),
        features: FeatureOptions { ngrams: a.ngrams, chars, max_char_features: a.max_char_features, min_df: a.min_df },
        svm: SvmOptions { c: a.c, seed: a.seed, ..Default::default() },
        prune: a.prune,
        problem: a.problem,
        tune_thresholds: a.tune_thresholds,
        bad_lines: if a.skip_bad_lines { BadLines::Skip } else { BadLines::Fail },
        overwrite: a.overwrite,
    };
    let (_, said) = bertlu::apps::linear::run(&job)?;
    for line in said {
        println!("{line}");
    }
    Ok(())
}
