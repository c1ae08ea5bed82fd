//! `bertlu finetune`: train a classifier on labelled data.

use super::{CommonTrain, StepArgs};
use anyhow::{Context, Result};
use bertlu::apps::finetune::FinetuneJob;
use bertlu::apps::setup::test_mode;
use bertlu::config::Config;
use bertlu::data::classify::Problem;
use bertlu::store::model_dir::ModelDir;
use bertlu::text::labelled::read_examples_with;
use bertlu::train::finetune::FinetuneReport;
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
    /// Distil this trained classifier (a model, an ensemble or a linear model, with the same
    /// problem type): its probabilities on the training texts become the targets, mixed with
    /// the gold labels by `--teacher-weight`. With a teacher's pseudo-labelled corpus as extra
    /// training data, the new model learns the teacher's view of unlabelled texts too.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The teacher's share of each target (`finetune.teacher_weight`, default 0.5; 1: its
    /// probabilities alone).
    #[arg(long, requires = "teacher")]
    pub teacher_weight: Option<f64>,
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
    /// Keep the model scored at every epoch as `epochs/epoch-N/` in the output directory, beside
    /// the best one (e.g. for `bertlu average`).
    #[arg(long)]
    pub keep_epochs: bool,
    /// After training, tune the decision thresholds on the validation file for micro-F1 (one
    /// shared threshold) or macro-F1 (one a label); multi-label only.
    #[arg(long, value_enum)]
    pub tune_thresholds: Option<bertlu::eval::thresholds::Objective>,
    /// Shared training settings.
    #[command(flatten)]
    pub common: CommonTrain,
}

fn configure(a: &FinetuneArgs, base: Option<&ModelDir>) -> Result<Config> {
    let mut cfg = a.common.config(base)?;
    if let Some(p) = a.pooling {
        cfg.model.transformer.pooling = p;
    }
    let f = &mut cfg.finetune;
    a.steps.apply(&mut f.optim, &a.common);
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
    if a.keep_epochs {
        f.keep_epochs = true;
    }
    if let Some(v) = a.teacher_weight {
        f.teacher_weight = v;
    }
    a.common.cap(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `finetune`.
pub fn run(a: FinetuneArgs) -> Result<()> {
    let init = a.init.as_deref().map(ModelDir::open).transpose().context("--init")?;
    let cfg = configure(&a, init.as_ref())?;
    let (train, problem) = super::read_training(&a.files.train, &a.common, a.problem)?;
    let mut valid = read_examples_with(&a.files.valid, a.common.bad_lines())?;
    a.common.cut(&mut valid, test_mode::EVAL);
    let job = FinetuneJob {
        train_files: a.files.train.clone(),
        valid_file: a.files.valid.clone(),
        out: a.files.out.clone(),
        init,
        vocab: a.vocab.clone(),
        vocab_size: a.vocab_size,
        word_vectors: a.word_vectors.clone(),
        teacher: a.teacher.clone(),
        tune_thresholds: a.tune_thresholds,
        overwrite: a.common.overwrite,
        options: a.common.run_options(),
    };
    let done = bertlu::apps::finetune::run(cfg, &job, &train, &valid, problem)?;
    if let Some(line) = &done.tuned {
        println!("{line}");
    }
    print_summary(&done.report, &done.dir, a.common.json_logs);
    Ok(())
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
