//! `bertlu finetune`: train a classifier on labelled data.

use super::{load_tokenizer, test_mode, CommonTrain, StepArgs};
use anyhow::{bail, Context, Result};
use bertlu::checkpoint::ModelDir;
use bertlu::config::Config;
use bertlu::tasks::classify::Problem;
use bertlu::text::labelled::read_examples_with;
use bertlu::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use bertlu::train::finetune::{finetune, FinetuneReport, Init};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Training, validation and output paths.
    #[command(flatten)]
    pub files: super::ClassifierFiles,
    /// Pre-trained model directory: backbone, embeddings and vocabulary come from it.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Tokenizer for a from-scratch model (a tokenizer.json or a model directory); trained on
    /// the training texts if absent. Use a pre-trained model's to compare like with like.
    #[arg(long, conflicts_with = "init")]
    pub vocab: Option<PathBuf>,
    /// Initialise the token embeddings of a from-scratch model from word vectors (word2vec /
    /// fastText text format: `N D` header, then `word v1 … vD`; .gz accepted); D must equal d_model.
    #[arg(long, conflicts_with = "init")]
    pub word_vectors: Option<PathBuf>,
    /// Vocabulary size when one is trained on the training texts.
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    /// Force the problem type (default: inferred, multi-label if any line has several labels).
    #[arg(long, value_enum)]
    pub problem: Option<Problem>,
    /// Epochs, learning rate, batch size.
    #[command(flatten)]
    pub steps: StepArgs,
    /// Epochs without micro-F1 gain before stopping (0: never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Multi-label decision threshold stored with the model.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Multi-label training loss: `bce` (binary cross-entropy) or `asl` (asymmetric loss; its
    /// exponents and margin are `finetune.asl_*` in a config file).
    #[arg(long, value_enum)]
    pub loss: Option<bertlu::config::MultiLabelLoss>,
    /// Classification head: `pooled` (dense + tanh + linear on the pooled vector) or
    /// `label-attention` (that, plus a label-wise attention term over every position's state).
    #[arg(long, value_enum)]
    pub head: Option<bertlu::config::HeadKind>,
    /// Transformer pooled vector: `cls` (the [CLS] state, BERT's choice), `mean` or `max` over
    /// the text's positions. Weights do not depend on it, so it may differ from the pre-trained
    /// model's; masked-LM pre-training never trains the [CLS] state for anything.
    #[arg(long, value_enum)]
    pub pooling: Option<bertlu::config::Pooling>,
    /// Backbone learning rate as a share of `--lr` (0 freezes the backbone; the head keeps `--lr`).
    #[arg(long)]
    pub backbone_lr_scale: Option<f64>,
    /// Score and keep an exponential moving average of the weights with this decay per step
    /// (e.g. 0.999: about the last 1,000 steps); 0 keeps the last step's weights.
    #[arg(long)]
    pub ema: Option<f64>,
    /// After training, tune the decision thresholds on the validation file for micro-F1 (one
    /// shared threshold) or macro-F1 (one a label); multi-label only.
    #[arg(long, value_enum)]
    pub tune_thresholds: Option<bertlu::thresholds::Objective>,
    /// Shared training settings.
    #[command(flatten)]
    pub common: CommonTrain,
}

fn configure(a: &FinetuneArgs, base: Option<&ModelDir>) -> Result<Config> {
    let mut cfg = match base {
        None => a.common.config()?,
        Some(dir) => a.common.config_from(dir)?,
    };
    if let Some(p) = a.pooling {
        cfg.model.pooling = p;
    }
    let f = &mut cfg.finetune;
    a.steps.apply(&mut f.epochs, &mut f.lr, &mut f.batch_size, &mut f.seed, &a.common);
    if let Some(v) = a.patience {
        f.patience = v;
    }
    if let Some(v) = a.threshold {
        f.threshold = v;
    }
    if let Some(v) = a.loss {
        f.loss = v;
    }
    if let Some(v) = a.head {
        f.head = v;
    }
    if let Some(v) = a.backbone_lr_scale {
        f.backbone_lr_scale = v;
    }
    if let Some(v) = a.ema {
        f.ema = v;
    }
    a.common.cap(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `finetune`.
pub fn run(a: FinetuneArgs) -> Result<()> {
    let base = a.init.as_deref().map(ModelDir::open).transpose().context("--init")?;
    let mut cfg = configure(&a, base.as_ref())?;
    let (train, problem) = super::read_training(&a.files.train, &a.common, a.problem)?;
    let mut valid = read_examples_with(&a.files.valid, a.common.bad_lines())?;
    a.common.cut(&mut valid, test_mode::EVAL);
    let out = a.common.output(&a.files.out)?;
    let tokenizer = match (&base, &a.vocab, super::resumed_tokenizer(&a.common, &out)?) {
        (Some(dir), _, _) => dir.tokenizer.clone(),
        (None, _, Some(t)) => t,
        (None, Some(p), None) => load_tokenizer(p)?,
        (None, None, None) => WordPieceTokenizer::train(train.iter().map(|e| e.text.clone()), &VocabOptions { size: a.vocab_size, ..Default::default() })?,
    };
    cfg.model.vocab_size = tokenizer.vocab_size();
    let vectors = a.word_vectors.as_deref().map(|path| bertlu::text::word_vectors::WordVectors::read(path, &tokenizer, cfg.model.d_model)).transpose()?;
    let init = match (&base, &vectors) {
        (Some(dir), _) => Init::Pretrained(dir),
        (None, Some(v)) => Init::WordVectors(v),
        (None, None) => Init::Scratch,
    };
    if cfg.finetune.loss != bertlu::config::MultiLabelLoss::Bce && problem != Problem::MultiLabel {
        bail!("finetune.loss = {:?} applies to multi-label problems only (single-label training uses softmax cross-entropy)", cfg.finetune.loss);
    }
    if a.tune_thresholds.is_some() && problem != Problem::MultiLabel {
        bail!("--tune-thresholds applies to multi-label problems only");
    }
    // after every check that can refuse the run, so a refused run prints its error alone
    warn_overlap(&train, &valid, &a.files.valid);
    bertlu::train::resume::install_interrupt_handler();
    let mut inputs = a.files.train.iter().map(|path| bertlu::run_info::InputFile::of("train", path)).collect::<Result<Vec<_>>>()?;
    inputs.push(bertlu::run_info::InputFile::of("valid", &a.files.valid)?);
    if let Some(dir) = &base {
        inputs.push(bertlu::run_info::InputFile::of("init", &dir.weights())?);
    }
    if let Some(path) = &a.word_vectors {
        inputs.push(bertlu::run_info::InputFile::of("word-vectors", path)?);
    }
    let mut info = bertlu::run_info::RunInfo::start(out.path(), "finetune", &cfg, cfg.finetune.seed, inputs)?;
    let result = finetune(&cfg, init, &tokenizer, &train, &valid, problem, Some(out.path()), &a.common.run_options());
    info.finish(out.path(), &super::outcome(&result))?;
    let report = result?;
    if let Some(objective) = a.tune_thresholds {
        let mut clf = bertlu::inference::LoadedClassifier::open(out.path())?;
        super::tune::tune_and_report(&mut clf, &valid, objective, bertlu::thresholds::MIN_SUPPORT)?;
    }
    let dir = out.commit()?;
    print_summary(&report, &dir, a.common.json_logs);
    Ok(())
}

/// Validation texts that are also training texts make every validation score (and the epoch
/// kept, and thresholds tuned on it) flatter the model; said once, as a count.
fn warn_overlap(train: &[bertlu::text::labelled::Example], valid: &[bertlu::text::labelled::Example], valid_path: &std::path::Path) {
    // texts are read with their words joined by single spaces, so equal texts compare equal
    let seen: std::collections::HashSet<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let shared = valid.iter().filter(|e| seen.contains(e.text.as_str())).count();
    if shared > 0 {
        eprintln!(
            "warning: {}: {shared} of {} validation texts are also training texts; validation scores, the epoch kept and thresholds tuned on them will flatter the model",
            valid_path.display(), valid.len()
        );
    }
}

fn print_summary(r: &FinetuneReport, dir: &std::path::Path, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "event": "done", "dir": dir, "best_epoch": r.best_epoch, "epochs": r.epochs, "initial_valid_loss": r.initial_valid_loss }));
    } else if let Some(e) = r.epochs.iter().find(|e| e.epoch == r.best_epoch) {
        println!(
            "classifier written to {} (best epoch {}: valid micro-F1 {:.4}, macro-F1 {:.4}, loss {:.4})",
            dir.display(), e.epoch, e.micro_f1, e.macro_f1, e.valid_loss
        );
    }
}
