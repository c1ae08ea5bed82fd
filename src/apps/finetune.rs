//! The `finetune` command's pipeline: the tokenizer (the pre-trained model's, the interrupted
//! run's, a given one, or one trained on the training texts), optional word vectors, the checks
//! that can refuse the run, the run record, the training loop, optional threshold tuning, and
//! the output directory moved into place when it succeeds.

use super::setup::{choose_tokenizer, outcome, output_dir};
use crate::config::{Config, MultiLabelLoss};
use crate::data::classify::Problem;
use crate::eval::thresholds::{Objective, MIN_SUPPORT};
use crate::infer::classifier::LoadedClassifier;
use crate::store::model_dir::ModelDir;
use crate::store::run_info::{InputFile, RunInfo};
use crate::text::labelled::Example;
use crate::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use crate::text::word_vectors::WordVectors;
use crate::train::finetune::{finetune, FinetuneReport, Init, Teacher};
use crate::train::RunOptions;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Everything a fine-tuning run reads and writes, besides its config and its examples.
pub struct FinetuneJob {
    /// The labelled training files (recorded in `run.json`).
    pub train_files: Vec<PathBuf>,
    /// The labelled validation file.
    pub valid_file: PathBuf,
    /// Output model directory.
    pub out: PathBuf,
    /// The pre-trained model to start from.
    pub init: Option<ModelDir>,
    /// A tokenizer file or directory for a model from scratch; without it one is trained.
    pub vocab: Option<PathBuf>,
    /// Size of the vocabulary trained on the training texts.
    pub vocab_size: usize,
    /// Word vectors for the token embeddings of a model from scratch.
    pub word_vectors: Option<PathBuf>,
    /// A trained classifier (a model, an ensemble or a linear model) whose probabilities on the
    /// training texts become the targets, mixed with the gold labels (`finetune.teacher_weight`).
    pub teacher: Option<PathBuf>,
    /// Tune the thresholds on the validation examples after training (multi-label only).
    pub tune_thresholds: Option<Objective>,
    /// Replace an existing output directory once the run has succeeded.
    pub overwrite: bool,
    /// Logging, checkpoints, resume.
    pub options: RunOptions,
}

/// What a finished fine-tuning run gives back.
pub struct Finetuned {
    /// The epochs' scores and the best one.
    pub report: FinetuneReport,
    /// The finished model directory.
    pub dir: PathBuf,
    /// With `tune_thresholds`: the thresholds chosen and their effect, in one line.
    pub tuned: Option<String>,
}

/// Fine-tunes on `train` (of type `problem`), selecting on `valid`, with `cfg` (whose
/// `vocab_size` is set from the tokenizer).
pub fn run(mut cfg: Config, job: &FinetuneJob, train: &[Example], valid: &[Example], problem: Problem) -> Result<Finetuned> {
    let out = output_dir(&job.out, job.options.resume, job.overwrite)?;
    let tokenizer = choose_tokenizer(job.init.as_ref(), job.options.resume, &out, job.vocab.as_deref(), || {
        WordPieceTokenizer::train(train.iter().map(|e| e.text.clone()), &VocabOptions { size: job.vocab_size, ..Default::default() })
    })?;
    cfg.model.vocab_size = tokenizer.vocab_size();
    let vectors = job.word_vectors.as_deref().map(|path| WordVectors::read(path, &tokenizer, cfg.model.d_model)).transpose()?;
    let init = match (&job.init, &vectors) {
        (Some(dir), _) => Init::Pretrained(dir),
        (None, Some(v)) => Init::WordVectors(v),
        (None, None) => Init::Scratch,
    };
    if cfg.finetune.loss != MultiLabelLoss::Bce && problem != Problem::MultiLabel {
        bail!("finetune.loss = {:?} applies to multi-label problems only (single-label training uses softmax cross-entropy)", cfg.finetune.loss);
    }
    if job.tune_thresholds.is_some() && problem != Problem::MultiLabel {
        bail!("--tune-thresholds applies to multi-label problems only");
    }
    let teacher = job.teacher.as_deref().map(|path| teacher_probabilities(path, train, problem, &job.options)).transpose()?;
    // after every check that can refuse the run, so a refused run prints its error alone
    warn_overlap(train, valid, &job.valid_file);
    crate::train::interrupt::install_interrupt_handler();
    let mut inputs = job.train_files.iter().map(|path| InputFile::of("train", path)).collect::<Result<Vec<_>>>()?;
    inputs.push(InputFile::of("valid", &job.valid_file)?);
    if let Some(dir) = &job.init {
        inputs.push(InputFile::of("init", &dir.weights())?);
    }
    if let Some(path) = &job.word_vectors {
        inputs.push(InputFile::of("word-vectors", path)?);
    }
    if let Some(path) = &job.teacher {
        inputs.push(InputFile::of("teacher", &path.join("model.json"))?);
    }
    let mut info = RunInfo::start(out.path(), "finetune", &cfg, cfg.finetune.optim.seed, inputs)?;
    let result = finetune(&cfg, init, &tokenizer, train, valid, problem, teacher, Some(out.path()), &job.options);
    info.finish(out.path(), &outcome(&result))?;
    let report = result?;
    let tuned = match job.tune_thresholds {
        Some(objective) => {
            let mut clf = LoadedClassifier::open(out.path())?;
            Some(clf.tune_thresholds_described(valid, objective, MIN_SUPPORT)?)
        }
        None => None,
    };
    Ok(Finetuned { report, dir: out.commit()?, tuned })
}

/// Texts scored together by the teacher.
const TEACHER_BATCH: usize = 64;

/// The classifier at `path` scores every training text once, before training.
fn teacher_probabilities(path: &Path, train: &[Example], problem: Problem, opts: &RunOptions) -> Result<Teacher> {
    let teacher = LoadedClassifier::open(path).with_context(|| format!("--teacher {}", path.display()))?;
    if teacher.problem != problem {
        bail!("--teacher {}: a {:?} classifier cannot teach a {:?} one", path.display(), teacher.problem, problem);
    }
    crate::train::say(opts, &format!("finetune: the teacher {} scores the {} training texts", path.display(), train.len()));
    let texts: Vec<String> = train.iter().map(|e| e.text.clone()).collect();
    let probabilities = teacher.probabilities(&texts, TEACHER_BATCH);
    Ok(Teacher { labels: teacher.labels.names().to_vec(), probabilities })
}

/// Validation texts that are also training texts make every validation score (and the epoch
/// kept, and thresholds tuned on it) flatter the model; said once, as a count.
fn warn_overlap(train: &[Example], valid: &[Example], valid_path: &Path) {
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
