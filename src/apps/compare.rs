//! The pre-train → fine-tune experiment as one function: for each backbone, pre-train (or reuse a
//! checkpoint), then fine-tune from scratch and from the pre-trained weights with the same seed,
//! data order and epochs, each arm at its own learning rate chosen on the validation set, and
//! write a Markdown table, a CSV of every epoch, a JSON record and SVG plots.
//!
//! Fairness rules: fine-tuning never inherits optimiser state, learning rate or step counters
//! from pre-training; both arms share the tokenizer and model shape; loading names every tensor
//! and fails on any shape mismatch (see `checkpoint::load_prefix`).

use crate::store::atomic::write_atomic;

use crate::store::model_dir::ModelDir;
use crate::config::{BackboneKind, Config};
use crate::infer::classifier::LoadedClassifier;
use crate::eval::metrics::Scores;
use crate::apps::plot::{self, Panel, Series};
use crate::data::classify::Problem;
use crate::text::labelled::Example;
use crate::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use crate::text::corpus::read_documents_with;
use crate::text::labelled::read_examples_with;
use crate::text::reader::BadLines;
use crate::store::output_dir::OutputDir;
use crate::train::finetune::{finetune, FinetuneReport, Init};
use crate::train::pretrain::pretrain;
use crate::train::{say, RunOptions};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use crate::store::layout::{COMPARE_EPOCHS_FILE, COMPARE_JSON_FILE, COMPARE_TABLE_FILE};


/// The two starting points compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// Random weights.
    Scratch,
    /// Backbone and embeddings from masked-LM pre-training.
    PreTrained,
}

impl Arm {
    /// The name used in tables, files and plots.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Scratch => "scratch",
            Arm::PreTrained => "pre-trained",
        }
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    /// Model shape and training settings; the backbone is replaced by each entry of `backbones`.
    pub base: Config,
    /// Backbones, in table order.
    pub backbones: Vec<BackboneKind>,
    /// Fine-tuning learning rates tried by each arm; the best by validation micro-F1 is kept.
    pub lr_grid: Vec<f64>,
    /// Pre-trained checkpoints to reuse instead of pre-training, by backbone.
    pub reuse: BTreeMap<BackboneKind, PathBuf>,
}

/// Labelled and raw data of a comparison.
pub struct CompareData<'a> {
    /// Raw corpus documents (pre-training).
    pub docs: &'a [String],
    /// Fine-tuning training set.
    pub train: &'a [Example],
    /// Validation set: learning-rate choice and best epoch.
    pub valid: &'a [Example],
    /// Optional test set, scored once with each arm's chosen model.
    pub test: Option<&'a [Example]>,
}

/// One fine-tuning run at one learning rate.
#[derive(Debug, Clone, Serialize)]
pub struct LrRun {
    /// Peak learning rate.
    pub lr: f64,
    /// Its per-epoch scores.
    pub report: FinetuneReport,
    /// Where its best model is.
    pub dir: PathBuf,
}

impl LrRun {
    /// Best validation micro-F1 over the epochs.
    pub fn best_f1(&self) -> f64 {
        self.report.epochs.iter().map(|e| e.micro_f1).fold(f64::NEG_INFINITY, f64::max)
    }
}

/// One arm of one backbone: every learning rate tried and the chosen one.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    /// Which arm.
    pub arm: Arm,
    /// Runs in grid order.
    pub runs: Vec<LrRun>,
    /// Index into `runs` of the chosen learning rate.
    pub chosen: usize,
    /// Test scores of the chosen run's best epoch.
    pub test: Option<Scores>,
}

impl ArmResult {
    /// The chosen run.
    pub fn best(&self) -> &LrRun {
        &self.runs[self.chosen]
    }
}

/// How the pre-trained weights of a backbone came about.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainSummary {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// True when an existing checkpoint was given rather than trained here.
    pub reused: bool,
    /// Optimiser steps (0 when unknown).
    pub steps: usize,
    /// Held-out masked-token accuracy at the end (NaN when unknown).
    pub valid_accuracy: f64,
    /// Wall seconds (0 when reused).
    pub seconds: f64,
}

/// Both arms of one backbone.
#[derive(Debug, Clone, Serialize)]
pub struct BackboneResult {
    /// The backbone.
    pub backbone: BackboneKind,
    /// Its pre-training.
    pub pretrain: PretrainSummary,
    /// Scratch, then pre-trained.
    pub arms: Vec<ArmResult>,
}

/// Runs the comparison, writing every model under `out` (`pretrained-B/`, `runs/B-ARM-lrX/`).
pub fn compare(settings: &CompareSettings, data: &CompareData, tokenizer: &WordPieceTokenizer, problem: Problem, out: &Path, opts: &RunOptions) -> Result<Vec<BackboneResult>> {
    if settings.lr_grid.is_empty() || settings.backbones.is_empty() {
        bail!("compare needs at least one backbone and one learning rate");
    }
    let mut results = Vec::new();
    for &backbone in &settings.backbones {
        let (cfg, tok, pretrain_summary) = match settings.reuse.get(&backbone) {
            Some(path) => {
                let dir = ModelDir::open(path)?;
                if dir.config.model.backbone != backbone {
                    bail!("{}: holds a {} model, given for {backbone}", path.display(), dir.config.model.backbone);
                }
                let mut cfg = dir.config.clone();
                cfg.finetune = settings.base.finetune.clone();
                say(opts, &format!("\n== {backbone}: reusing pre-trained model {} ==", path.display()));
                // what its own pre-training logged, when bertlu pre-trained it
                let last = dir.meta.info.as_array().and_then(|epochs| epochs.last()).cloned().unwrap_or_default();
                let number = |key: &str| last.get(key).and_then(|v| v.as_f64());
                let summary = PretrainSummary {
                    dir: path.clone(),
                    reused: true,
                    steps: number("steps").map_or(0, |v| v as usize),
                    valid_accuracy: number("valid_accuracy").unwrap_or(f64::NAN),
                    seconds: number("seconds").unwrap_or(0.0),
                };
                (cfg, dir.tokenizer.clone(), summary)
            }
            None => {
                let mut cfg = settings.base.clone().with_backbone(backbone);
                cfg.model.vocab_size = tokenizer.vocab_size();
                cfg.validate()?;
                let dir = out.join(format!("pretrained-{backbone}"));
                std::fs::create_dir_all(&dir)?;
                let tasks: Vec<String> = cfg.pretrain.tasks.iter().map(|t| t.to_string()).collect();
                say(opts, &format!("\n== {backbone}: pre-training ({}) ==", tasks.join("+")));
                let log = pretrain(&cfg, data.docs, tokenizer, None, &dir, opts)?;
                let last = log.last().expect("pre-training logs at least one epoch");
                let summary = PretrainSummary { dir, reused: false, steps: last.steps, valid_accuracy: last.valid_accuracy, seconds: last.seconds };
                (cfg, tokenizer.clone(), summary)
            }
        };
        let pretrained = ModelDir::open(&pretrain_summary.dir)?;
        let mut arms = Vec::new();
        for arm in [Arm::Scratch, Arm::PreTrained] {
            let mut runs = Vec::new();
            for &lr in &settings.lr_grid {
                let mut cfg = cfg.clone();
                cfg.finetune.optim.lr = lr;
                // Every arm runs all epochs so the per-epoch curves are comparable.
                cfg.finetune.patience = 0;
                let dir = out.join("runs").join(format!("{backbone}-{}-lr{lr:e}", arm.name()));
                std::fs::create_dir_all(&dir)?;
                say(opts, &format!("\n== {backbone}, {}, lr {lr:e} ==", arm.name()));
                let init = match arm {
                    Arm::Scratch => Init::Scratch,
                    Arm::PreTrained => Init::Pretrained(&pretrained),
                };
                let report = finetune(&cfg, init, &tok, data.train, data.valid, problem, Some(&dir), opts)?;
                runs.push(LrRun { lr, report, dir });
            }
            // The first of equal scores wins, so ties go to the smaller grid entry given first.
            let chosen = (0..runs.len()).fold(0, |best, i| if runs[i].best_f1() > runs[best].best_f1() { i } else { best });
            let test = match data.test {
                Some(test) => Some(LoadedClassifier::open(&runs[chosen].dir)?.evaluate(test, None, 64).scores),
                None => None,
            };
            say(opts, &format!("{backbone} {}: chosen lr {:e} (valid micro-F1 {:.4})", arm.name(), runs[chosen].lr, runs[chosen].best_f1()));
            arms.push(ArmResult { arm, runs, chosen, test });
        }
        results.push(BackboneResult { backbone, pretrain: pretrain_summary, arms });
    }
    Ok(results)
}

/// The first epoch (1-based) at which `curve` reaches `target`.
fn epochs_to_reach(report: &FinetuneReport, target: f64) -> Option<usize> {
    report.epochs.iter().find(|e| e.micro_f1 >= target).map(|e| e.epoch)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.4}"))
}

fn fmt_gain(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.4}", b - a),
        _ => "–".to_string(),
    }
}

/// The Markdown table in the original system's shape, one pair of rows (plus the gain) a backbone.
pub fn markdown(results: &[BackboneResult], title: &str) -> String {
    let mut s = format!("# {title}\n\n");
    s.push_str("| backbone | arm | chosen lr | valid loss at start | valid loss ep 1 | valid micro-F1 ep 1 | valid micro-F1 last ep | best epoch | test micro-F1 | test macro-F1 | epochs to scratch's best | fine-tune time |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let scratch_best = r.arms[0].best().best_f1();
        let mut row_values = Vec::new();
        for a in &r.arms {
            let rep = &a.best().report;
            let first = rep.epochs.first();
            let last = rep.epochs.last();
            let v = (first.map(|e| e.valid_loss), first.map(|e| e.micro_f1), last.map(|e| e.micro_f1), a.test.as_ref().map(|t| t.micro_f1), a.test.as_ref().map(|t| t.macro_f1));
            let _ = writeln!(
                s,
                "| {} | {} | {:e} | {:.4} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
                r.backbone,
                a.arm.name(),
                a.best().lr,
                rep.initial_valid_loss,
                fmt_opt(v.0),
                fmt_opt(v.1),
                fmt_opt(v.2),
                rep.best_epoch,
                fmt_opt(v.3),
                fmt_opt(v.4),
                epochs_to_reach(rep, scratch_best).map_or("not reached".to_string(), |e| e.to_string()),
                last.map_or(0.0, |e| e.seconds)
            );
            row_values.push((rep.initial_valid_loss, v));
        }
        let ((l0a, a), (l0b, b)) = (row_values[0], row_values[1]);
        let _ = writeln!(
            s,
            "| {} | **gain** | | {:+.4} | {} | **{}** | {} | | **{}** | {} | | |",
            r.backbone,
            l0b - l0a,
            fmt_gain(a.0, b.0),
            fmt_gain(a.1, b.1),
            fmt_gain(a.2, b.2),
            fmt_gain(a.3, b.3),
            fmt_gain(a.4, b.4)
        );
    }
    s.push_str("\nPre-training:\n");
    for r in results {
        let p = &r.pretrain;
        if p.reused {
            let logged = if p.steps > 0 { format!(" ({} steps, held-out masked-token accuracy {:.4}, {:.0} s when it was pre-trained)", p.steps, p.valid_accuracy, p.seconds) } else { String::new() };
            let _ = writeln!(s, "- {}: reused checkpoint `{}`{logged}", r.backbone, p.dir.display());
        } else {
            let _ = writeln!(s, "- {}: {} steps, held-out masked-token accuracy {:.4}, {:.0} s", r.backbone, p.steps, p.valid_accuracy, p.seconds);
        }
    }
    s.push_str("\nLearning-rate grid (best validation micro-F1 of each run):\n");
    for r in results {
        for a in &r.arms {
            let runs: Vec<String> = a.runs.iter().map(|x| format!("{:e} → {:.4}", x.lr, x.best_f1())).collect();
            let _ = writeln!(s, "- {} {}: {}", r.backbone, a.arm.name(), runs.join(", "));
        }
    }
    s
}

/// Every epoch of every run (epoch 0 is the model before any step: only its loss is known).
pub fn epochs_csv(results: &[BackboneResult]) -> String {
    let mut s = String::from("backbone,arm,lr,chosen,epoch,train_loss,valid_loss,valid_micro_f1,valid_macro_f1,valid_precision,valid_recall,seconds\n");
    for r in results {
        for a in &r.arms {
            for (i, run) in a.runs.iter().enumerate() {
                let chosen = i == a.chosen;
                let _ = writeln!(s, "{},{},{:e},{chosen},0,,{:.6},,,,,0", r.backbone, a.arm.name(), run.lr, run.report.initial_valid_loss);
                for e in &run.report.epochs {
                    let _ = writeln!(
                        s,
                        "{},{},{:e},{chosen},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.1}",
                        r.backbone, a.arm.name(), run.lr, e.epoch, e.train_loss, e.valid_loss, e.micro_f1, e.macro_f1, e.precision, e.recall, e.seconds
                    );
                }
            }
        }
    }
    s
}

/// Validation micro-F1 and loss per epoch, scratch vs pre-trained (chosen learning rates).
pub fn plot_svg(r: &BackboneResult) -> Result<String> {
    let series = |f: &dyn Fn(&FinetuneReport) -> Vec<(f64, f64)>| -> Vec<Series> {
        r.arms.iter().map(|a| Series { name: format!("{} (lr {:e})", a.arm.name(), a.best().lr), points: f(&a.best().report) }).collect()
    };
    let f1 = Panel {
        title: format!("{}: validation micro-F1", r.backbone),
        x_label: "epoch".into(),
        y_label: "micro-F1".into(),
        series: series(&|rep| rep.epochs.iter().map(|e| (e.epoch as f64, e.micro_f1)).collect()),
    };
    let loss = Panel {
        title: format!("{}: validation loss", r.backbone),
        x_label: "epoch (0 = before training)".into(),
        y_label: "loss".into(),
        series: series(&|rep| std::iter::once((0.0, rep.initial_valid_loss)).chain(rep.epochs.iter().map(|e| (e.epoch as f64, e.valid_loss))).collect()),
    };
    plot::svg(&[f1, loss], 520, 400)
}

/// Writes the table, the CSV, the JSON record and one plot a backbone into `dir`.
pub fn write_outputs(results: &[BackboneResult], title: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = vec![dir.join(COMPARE_TABLE_FILE), dir.join(COMPARE_EPOCHS_FILE), dir.join(COMPARE_JSON_FILE)];
    write_atomic(&written[0], markdown(results, title).as_bytes())?;
    write_atomic(&written[1], epochs_csv(results).as_bytes())?;
    write_atomic(&written[2], serde_json::to_string_pretty(results)?.as_bytes())?;
    for r in results {
        let p = dir.join(format!("plot-{}.svg", r.backbone));
        write_atomic(&p, plot_svg(r)?.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}

/// Everything a `compare` run reads and writes, besides its base config.
pub struct CompareJob {
    /// Raw corpus for pre-training.
    pub corpus: PathBuf,
    /// Labelled training files, read as one set.
    pub train: Vec<PathBuf>,
    /// Labelled validation file.
    pub valid: PathBuf,
    /// Labelled test file, scored once with each arm's chosen model.
    pub test: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// The backbones compared.
    pub backbones: Vec<BackboneKind>,
    /// Fine-tuning learning rates each arm tries.
    pub lr_grid: Vec<f64>,
    /// Pre-trained models to reuse instead of pre-training, by backbone.
    pub reuse: Vec<(BackboneKind, PathBuf)>,
    /// A tokenizer file or directory; without it one is trained on the corpus.
    pub vocab: Option<PathBuf>,
    /// Size of that vocabulary.
    pub vocab_size: usize,
    /// Force the problem type.
    pub problem: Option<Problem>,
    /// What readers do with bad lines.
    pub bad_lines: BadLines,
    /// Keep a small slice of every file (`--test-mode`).
    pub test_mode: bool,
    /// Replace an existing output directory once the run has succeeded.
    pub overwrite: bool,
    /// Logging options.
    pub options: RunOptions,
}

/// Runs `compare` for `base` (every arm's settings are checked before the first one trains);
/// returns the finished output directory.
pub fn run(base: Config, job: &CompareJob) -> Result<PathBuf> {
    use super::setup::{load_tokenizer, read_training_files, test_mode};
    for &b in &job.backbones {
        base.clone().with_backbone(b).validate().with_context(|| format!("--backbone {b}"))?;
    }
    let reuse: BTreeMap<BackboneKind, PathBuf> = job.reuse.iter().cloned().collect();
    if let Some(b) = reuse.keys().find(|b| !job.backbones.contains(b)) {
        bail!("--pretrained given for {b}, which is not in --backbone");
    }
    let mut docs = read_documents_with(&job.corpus, job.bad_lines)?;
    let (train, problem) = read_training_files(&job.train, job.bad_lines, job.problem, |t| test_mode::cut(job.test_mode, t, test_mode::TRAIN))?;
    let mut valid = read_examples_with(&job.valid, job.bad_lines)?;
    let mut test = job.test.as_deref().map(|t| read_examples_with(t, job.bad_lines)).transpose()?;
    test_mode::cut(job.test_mode, &mut docs, test_mode::DOCS);
    test_mode::cut(job.test_mode, &mut valid, test_mode::EVAL);
    if let Some(t) = test.as_mut() {
        test_mode::cut(job.test_mode, t, test_mode::EVAL);
    }
    let out = OutputDir::create(&job.out, job.overwrite)?;
    let tokenizer = match &job.vocab {
        Some(p) => load_tokenizer(p)?,
        None => WordPieceTokenizer::train(docs.iter().cloned(), &VocabOptions { size: job.vocab_size, ..Default::default() })?,
    };
    let settings = CompareSettings { base: base.clone(), backbones: job.backbones.clone(), lr_grid: job.lr_grid.clone(), reuse };
    let data = CompareData { docs: &docs, train: &train, valid: &valid, test: test.as_deref() };
    let results = compare(&settings, &data, &tokenizer, problem, out.path(), &job.options)?;
    let names = job.train.iter().map(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| anyhow::anyhow!("{}: not a file", t.display()))).collect::<Result<Vec<_>>>()?;
    let title = format!("Pre-trained vs from scratch: {}, {} epochs, seed {}{}", names.join(" + "), base.finetune.optim.epochs, base.finetune.optim.seed, if job.test_mode { " (test mode)" } else { "" });
    write_outputs(&results, &title, out.path())?;
    out.commit()
}
