//! `bertlu pretrain`: pre-training (masked LM, next-sentence prediction).

use super::{load_tokenizer, resumed_tokenizer, test_mode, CommonTrain, StepArgs};
use anyhow::{bail, Context, Result};
use bertlu::checkpoint::{ModelDir, ModelKind};
use bertlu::config::{Config, Objective};
use bertlu::text::corpus::{CorpusFile, DocumentSource};
use bertlu::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use bertlu::train::pretrain::{pretrain, PretrainEpoch};
use bertlu::run_info::{InputFile, RunInfo};
use bertlu::train::resume;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `pretrain`.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Raw corpus (.txt or .txt.gz), one document a line or blank-line-separated documents.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Tokenizer to use (a tokenizer.json or a directory with one); trained on the corpus if absent.
    #[arg(long, conflicts_with = "init")]
    pub vocab: Option<PathBuf>,
    /// Continue pre-training a pre-trained model (e.g. on a corpus of your own domain): its
    /// weights, vocabulary and config are the start; the optimiser and the learning-rate
    /// schedule (warmup, decay over this run's steps) start afresh.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Size of the vocabulary trained when --vocab is absent.
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    /// Keep case when training the vocabulary (default: lower-case).
    #[arg(long)]
    pub cased: bool,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Keep the model of every epoch as `epochs/epoch-N/` in the output directory, not only the last.
    #[arg(long)]
    pub keep_epochs: bool,
    /// Whole-word masking: mask all word pieces of a chosen word together.
    #[arg(long)]
    pub whole_word_mask: bool,
    /// With --whole-word-mask: words (one a line, e.g. Chinese) whose characters are masked together.
    #[arg(long, requires = "whole_word_mask")]
    pub word_list: Option<PathBuf>,
    /// Objectives trained together, comma-separated: mlm, nsp (default: the config's, mlm).
    /// nsp splits documents into sentences (at `. ! ?` and `。！？`, or one sentence a line in
    /// the blank-line-separated layout) and trains on sentence pairs.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<Objective>>,
    /// With nsp: share of pairs built shorter than max_len (default 0.1).
    #[arg(long)]
    pub short_seq_prob: Option<f64>,
    /// Epochs, learning rate, batch size.
    #[command(flatten)]
    pub steps: StepArgs,
    /// Shared training settings.
    #[command(flatten)]
    pub common: CommonTrain,
}

/// Applies the command-line overrides to a config.
fn configure(a: &PretrainArgs, base: Option<&ModelDir>) -> Result<Config> {
    let mut cfg = match base {
        None => a.common.config()?,
        Some(dir) => a.common.config_from(dir)?,
    };
    let p = &mut cfg.pretrain;
    a.steps.apply(&mut p.epochs, &mut p.lr, &mut p.batch_size, &mut p.seed, &a.common);
    if let Some(v) = a.max_steps {
        p.max_steps = v;
    }
    if a.whole_word_mask {
        p.whole_word_mask = true;
    }
    if a.keep_epochs {
        p.keep_epochs = true;
    }
    if let Some(tasks) = &a.tasks {
        p.set_tasks(tasks);
    }
    if let Some(v) = a.short_seq_prob {
        p.short_seq_prob = v;
    }
    if let Some(w) = &a.word_list {
        p.word_list = std::fs::canonicalize(w).with_context(|| format!("{}: cannot open the word list", w.display()))?.display().to_string();
    }
    a.common.cap(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `pretrain`.
pub fn run(a: PretrainArgs) -> Result<()> {
    let base = a.init.as_deref().map(open_pretrained).transpose().context("--init")?;
    let mut cfg = configure(&a, base.as_ref())?;
    let out = a.common.output(&a.out)?;
    // The corpus is streamed (read again on each pass), never held in memory whole.
    let docs = CorpusFile::open(&a.corpus, a.common.bad_lines(), a.common.test_mode.then_some(test_mode::DOCS))?;
    let tokenizer = match (&base, &a.vocab, resumed_tokenizer(&a.common, &out)?) {
        (Some(dir), _, _) => dir.tokenizer.clone(),
        (None, _, Some(t)) => t,
        (None, Some(p), None) => load_tokenizer(p)?,
        (None, None, None) => {
            let failure = std::sync::Mutex::new(None);
            let texts = docs.documents()?.map_while(|d| d.map_err(|e| *failure.lock().expect("lock") = Some(e)).ok());
            let t = WordPieceTokenizer::train(texts, &VocabOptions { size: a.vocab_size, lowercase: !a.cased, ..Default::default() })?;
            if let Some(e) = failure.into_inner().expect("lock") {
                return Err(e);
            }
            t
        }
    };
    cfg.model.vocab_size = tokenizer.vocab_size();
    resume::install_interrupt_handler();
    let mut inputs = vec![InputFile::of("corpus", &a.corpus)?];
    if let Some(v) = &a.vocab {
        inputs.push(InputFile::of("vocab", &if v.is_dir() { v.join("tokenizer.json") } else { v.clone() })?);
    }
    if let Some(dir) = &base {
        inputs.push(InputFile::of("init", &dir.weights())?);
    }
    let mut info = RunInfo::start(out.path(), "pretrain", &cfg, cfg.pretrain.seed, inputs)?;
    let result = pretrain(&cfg, &docs, &tokenizer, base.as_ref(), out.path(), &a.common.run_options());
    info.finish(out.path(), &super::outcome(&result))?;
    let log = result?;
    let dir = out.commit()?;
    print_summary(&log, &dir, a.common.json_logs);
    Ok(())
}

/// A model directory that `pretrain` can continue: a pre-trained one, not a classifier.
fn open_pretrained(path: &std::path::Path) -> Result<ModelDir> {
    let dir = ModelDir::open(path)?;
    if dir.meta.kind != ModelKind::Pretrained {
        bail!("{}: holds a {} model; pretrain --init takes a model written by pretrain", path.display(), format!("{:?}", dir.meta.kind).to_lowercase());
    }
    Ok(dir)
}

fn print_summary(log: &[PretrainEpoch], dir: &std::path::Path, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "event": "done", "dir": dir, "epochs": log }));
    } else if let Some(e) = log.last() {
        let mut scores = Vec::new();
        if !e.valid_accuracy.is_nan() {
            scores.push(format!("valid loss {:.4}, masked-token accuracy {:.4}", e.valid_loss, e.valid_accuracy));
        }
        if let (Some(l), Some(acc)) = (e.nsp_valid_loss, e.nsp_valid_accuracy) {
            scores.push(format!("next-sentence loss {l:.4}, accuracy {acc:.4}"));
        }
        println!("pre-trained model written to {} ({} steps, {}, {:.0}s)", dir.display(), e.steps, scores.join(", "), e.seconds);
    }
}
