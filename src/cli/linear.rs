//! `bertlu linear`: the TF-IDF + linear SVM classifier, trained on the same labelled files as
//! `finetune` and usable wherever a fine-tuned model is (eval, predict, ensemble, …).

use anyhow::{bail, Result};
use bertlu::checkpoint::{write_labels, ModelKind, ModelMeta, OutputDir};
use bertlu::inference::LoadedClassifier;
use bertlu::linear::svm::SvmOptions;
use bertlu::linear::{FeatureOptions, LinearClassifier};
use bertlu::tasks::classify::{LabelSet, Problem};
use bertlu::text::labelled::read_examples_with;
use bertlu::text::reader::BadLines;
use clap::Args;
use std::time::Instant;

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
    pub tune_thresholds: Option<bertlu::thresholds::Objective>,
    /// Replace an existing output directory (only once the run has succeeded).
    #[arg(long)]
    pub overwrite: bool,
    /// Skip unusable lines of the input files with a warning that counts them.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

/// Runs `linear`.
pub fn run(a: LinearArgs) -> Result<()> {
    if !(a.c > 0.0 && a.c.is_finite()) || a.ngrams == 0 || a.min_df == 0 || !(a.prune >= 0.0 && a.prune.is_finite()) {
        bail!("--c must be positive, --ngrams and --min-df at least 1, --prune non-negative");
    }
    let chars = match a.chars.as_str() {
        "none" => None,
        range => match range.split_once('-').map(|(lo, hi)| (lo.parse::<usize>(), hi.parse::<usize>())) {
            Some((Ok(lo), Ok(hi))) if 1 <= lo && lo <= hi => Some((lo, hi)),
            _ => bail!("--chars: expected MIN-MAX (e.g. 2-5, 1 ≤ MIN ≤ MAX) or none, got `{range}`"),
        },
    };
    let features = FeatureOptions { ngrams: a.ngrams, chars, max_char_features: a.max_char_features, min_df: a.min_df };
    let policy = if a.skip_bad_lines { BadLines::Skip } else { BadLines::Fail };
    let (all, problem) = super::read_training_files(&a.files.train, policy, a.problem, |_| {})?;
    if a.tune_thresholds.is_some() && problem != Problem::MultiLabel {
        bail!("--tune-thresholds applies to multi-label problems only");
    }
    let valid = read_examples_with(&a.files.valid, policy)?;
    let out = OutputDir::create(&a.files.out, a.overwrite)?;
    let labels = LabelSet::from_examples(&all);
    let texts: Vec<&str> = all.iter().map(|e| e.text.as_str()).collect();
    let gold: Vec<Vec<usize>> = all.iter().map(|e| labels.indices(&e.labels)).collect();
    let start = Instant::now();
    let options = SvmOptions { c: a.c, seed: a.seed, ..Default::default() };
    let mut model = LinearClassifier::train(&texts, &gold, labels.len(), &features, &options, a.prune)?;
    let trained = start.elapsed().as_secs_f64();
    let vtexts: Vec<&str> = valid.iter().map(|e| e.text.as_str()).collect();
    let vgold: Vec<Vec<usize>> = valid.iter().map(|e| labels.indices(&e.labels)).collect();
    model.calibrate(&vtexts, &vgold);
    println!(
        "{} examples, {} labels, {} features ({}; each seen in ≥ {} texts); {} SVMs trained in {trained:.1} s, {} weights kept (|w| ≥ {}); probability = sigmoid({:.3} · margin + {:.3}) (fitted on {} validation examples)",
        all.len(), labels.len(), model.num_features(), model.params.blocks.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "), a.min_df, labels.len(), model.params.weights, a.prune, model.params.slope, model.params.intercept, valid.len()
    );
    let info = serde_json::json!({ "train_examples": all.len(), "features": model.num_features(), "train_seconds": trained });
    let mut meta = ModelMeta::new(ModelKind::Linear, Some(problem), 0.5, info);
    write_labels(out.path(), &labels)?;
    meta.weights_bytes = model.save(out.path())?;
    meta.write(out.path())?;
    let mut clf = LoadedClassifier::open(out.path())?;
    if let Some(objective) = a.tune_thresholds {
        super::tune::tune_and_report(&mut clf, &valid, objective, bertlu::thresholds::MIN_SUPPORT)?;
    }
    let s = clf.evaluate(&valid, None, 256).scores;
    let dir = out.commit()?;
    println!("validation: micro-F1 {:.4} macro-F1 {:.4}; written to {}", s.micro_f1, s.macro_f1, dir.display());
    Ok(())
}
