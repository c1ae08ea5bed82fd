//! The pre-train → fine-tune experiment as one function: for each backbone, pre-train (or reuse
//! checkpoints) — once, or once per objective set (`mlm`, `electra`, …) — then fine-tune from
//! scratch and from each pre-trained model with the same seed, data order and epochs, each arm
//! at its own learning rate chosen on the validation set, and write a Markdown table, a CSV of
//! every epoch, a JSON record and SVG plots.
//!
//! Fairness rules: fine-tuning never inherits optimiser state, learning rate or step counters
//! from pre-training; both arms share the tokenizer and model shape; loading names every tensor
//! and fails on any shape mismatch (see `checkpoint::load_prefix`).

use crate::store::atomic::write_atomic;

use crate::store::model_dir::ModelDir;
use crate::apps::setup::ConfigSources;
use crate::config::{BackboneKind, Config, Objective};
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
use crate::store::checkpoints::has_checkpoint;
use crate::store::layout::{COMPARE_EPOCHS_FILE, COMPARE_JOB_FILE, COMPARE_JSON_FILE, COMPARE_PART_FILE, COMPARE_TABLE_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::store::run_info::InputFile;


/// The arm that starts from random weights.
pub const SCRATCH: &str = "scratch";
/// The pre-trained arm's name when a backbone has one; with several, `pre-trained-LABEL`.
pub const PRE_TRAINED: &str = "pre-trained";

/// Names of `labels.len()` pre-trained arms: "pre-trained" alone, else "pre-trained-LABEL",
/// numbered when two labels are the same.
fn arm_names(labels: &[String]) -> Vec<String> {
    if labels.len() == 1 {
        return vec![PRE_TRAINED.to_owned()];
    }
    let mut names: Vec<String> = Vec::new();
    for label in labels {
        let base = format!("{PRE_TRAINED}-{label}");
        let mut name = base.clone();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        names.push(name);
    }
    names
}

/// An objective set as a label: `mlm`, `electra+nsp`.
fn tasks_label(tasks: &[Objective]) -> String {
    tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("+")
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
    /// Pre-trained checkpoints to reuse instead of pre-training, by backbone: one pre-trained
    /// arm each.
    pub reuse: BTreeMap<BackboneKind, Vec<PathBuf>>,
    /// Objective sets to pre-train with, one pre-trained arm each, for a backbone without reused
    /// checkpoints; empty: the base config's `pretrain.tasks`.
    pub objectives: Vec<Vec<Objective>>,
    /// The config file and settings laid over a reused checkpoint's own config, as `finetune
    /// --init` lays them (only what shapes no weight may change: dropout, pooling, `max_len`);
    /// its fine-tuning settings come from `base`.
    pub reused_model: ConfigSources,
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
    /// Which arm: [`SCRATCH`], [`PRE_TRAINED`] or `pre-trained-LABEL`.
    pub arm: String,
    /// How its starting weights were pre-trained (none for scratch).
    pub pretrain: Option<PretrainSummary>,
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
    /// The objectives it was pre-trained with.
    pub tasks: Vec<Objective>,
    /// Optimiser steps (0 when unknown).
    pub steps: usize,
    /// Held-out masked-token accuracy at the end (NaN when unknown; with `electra`, the
    /// generator's).
    pub valid_accuracy: f64,
    /// Held-out replaced-token detection accuracy at the end (`electra`).
    pub rtd_accuracy: Option<f64>,
    /// The accuracy of calling every held-out position original (`electra`).
    pub all_original: Option<f64>,
    /// Wall seconds (0 when reused).
    pub seconds: f64,
}

/// Every arm of one backbone.
#[derive(Debug, Clone, Serialize)]
pub struct BackboneResult {
    /// The backbone.
    pub backbone: BackboneKind,
    /// Scratch, then each pre-trained arm.
    pub arms: Vec<ArmResult>,
}

impl PretrainSummary {
    /// What a pre-trained model directory logged about its own pre-training (zeros and NaN
    /// when bertlu did not pre-train it).
    fn of(dir: &ModelDir, reused: bool) -> Self {
        let last = dir.meta.info.as_array().and_then(|epochs| epochs.last()).cloned().unwrap_or_default();
        let number = |key: &str| last.get(key).and_then(|v| v.as_f64());
        Self {
            dir: dir.path.clone(),
            reused,
            tasks: dir.config.pretrain.tasks.clone(),
            steps: number("steps").map_or(0, |v| v as usize),
            valid_accuracy: number("valid_accuracy").unwrap_or(f64::NAN),
            rtd_accuracy: number("rtd_valid_accuracy"),
            all_original: number("replaced_share").map(|r| 1.0 - r),
            seconds: number("seconds").unwrap_or(0.0),
        }
    }
}

/// Where one pre-training or fine-tuning run of a comparison stands. Without `--resume` every
/// part is new; with it, a part that finished (its [`COMPARE_PART_FILE`] written) is reused, one
/// with a checkpoint continues from it, and the others start afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    New,
    Interrupted,
    Finished,
}

impl Part {
    fn of(dir: &Path, opts: &RunOptions) -> Self {
        if !opts.resume {
            Part::New
        } else if dir.join(COMPARE_PART_FILE).is_file() {
            Part::Finished
        } else if has_checkpoint(dir) {
            Part::Interrupted
        } else {
            Part::New
        }
    }

    /// A new part's directory emptied (what a run stopped before its first checkpoint left).
    fn prepare(self, dir: &Path) -> Result<()> {
        if self == Part::New && dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot clear", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))
    }

    /// The run's options: resuming only an interrupted part.
    fn options(self, opts: &RunOptions) -> RunOptions {
        RunOptions { resume: self == Part::Interrupted, ..opts.clone() }
    }

    fn resuming(self) -> &'static str {
        if self == Part::Interrupted { ", resumed" } else { "" }
    }
}

/// Whether the work directory `dir` of a comparison holds a finished or interrupted part (a
/// pre-training directory or fine-tuning run with its [`COMPARE_PART_FILE`] or a checkpoint).
pub fn holds_parts(dir: &Path) -> bool {
    let part = |d: &Path| d.join(COMPARE_PART_FILE).is_file() || has_checkpoint(d);
    let subdirs = |d: &Path| -> Vec<PathBuf> { std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default() };
    subdirs(dir).iter().any(|d| part(d)) || subdirs(&dir.join("runs")).iter().any(|d| part(d))
}

/// Runs the comparison, writing every model under `out` (`pretrained-B/`, `runs/B-ARM-lrX/`).
pub fn compare(settings: &CompareSettings, data: &CompareData, tokenizer: &WordPieceTokenizer, problem: Problem, out: &Path, opts: &RunOptions) -> Result<Vec<BackboneResult>> {
    if settings.lr_grid.is_empty() || settings.backbones.is_empty() {
        bail!("compare needs at least one backbone and one learning rate");
    }
    let mut results = Vec::new();
    for &backbone in &settings.backbones {
        // the pre-trained models of this backbone, each with the config and tokenizer it brings
        let mut pretrained: Vec<(Config, WordPieceTokenizer, ModelDir, bool)> = Vec::new();
        match settings.reuse.get(&backbone) {
            Some(paths) => {
                for path in paths {
                    let dir = ModelDir::open(path)?;
                    if dir.config.model.backbone != backbone {
                        bail!("{}: holds a {} model, given for {backbone}", path.display(), dir.config.model.backbone);
                    }
                    let mut cfg = settings.reused_model.from_model(&dir).with_context(|| format!("--pretrained {}", path.display()))?;
                    cfg.finetune = settings.base.finetune.clone();
                    say(opts, &format!("\n== {backbone}: reusing pre-trained model {} ==", path.display()));
                    let tok = dir.tokenizer.clone();
                    pretrained.push((cfg, tok, dir, true));
                }
            }
            None => {
                let sets = if settings.objectives.is_empty() { vec![settings.base.pretrain.tasks.clone()] } else { settings.objectives.clone() };
                for tasks in &sets {
                    let mut cfg = settings.base.clone().with_backbone(backbone);
                    cfg.pretrain.set_tasks(tasks);
                    cfg.model.vocab_size = tokenizer.vocab_size();
                    cfg.validate()?;
                    let label = tasks_label(&cfg.pretrain.tasks);
                    let dir = if sets.len() == 1 { out.join(format!("pretrained-{backbone}")) } else { out.join(format!("pretrained-{backbone}-{label}")) };
                    let part = Part::of(&dir, opts);
                    if part == Part::Finished {
                        say(opts, &format!("\n== {backbone}: pre-training ({label}) finished before, reused =="));
                    } else {
                        part.prepare(&dir)?;
                        say(opts, &format!("\n== {backbone}: pre-training ({label}){} ==", part.resuming()));
                        pretrain(&cfg, data.docs, tokenizer, None, &dir, &part.options(opts))?;
                    }
                    let model = ModelDir::open(&dir)?;
                    if part != Part::Finished {
                        let summary = PretrainSummary::of(&model, false);
                        write_atomic(&dir.join(COMPARE_PART_FILE), serde_json::to_string_pretty(&summary)?.as_bytes())?;
                    }
                    pretrained.push((cfg, tokenizer.clone(), model, false));
                }
            }
        }
        let labels: Vec<String> = pretrained.iter().map(|(_, _, dir, _)| tasks_label(&dir.config.pretrain.tasks)).collect();
        let (scratch_cfg, scratch_tok) = (pretrained[0].0.clone(), pretrained[0].1.clone());
        let mut starts: Vec<(String, Config, WordPieceTokenizer, Option<(ModelDir, bool)>)> = vec![(SCRATCH.to_owned(), scratch_cfg, scratch_tok, None)];
        for ((cfg, tok, dir, reused), name) in pretrained.into_iter().zip(arm_names(&labels)) {
            starts.push((name, cfg, tok, Some((dir, reused))));
        }
        let mut arms = Vec::new();
        for (arm, cfg, tok, start) in starts {
            let mut runs = Vec::new();
            for &lr in &settings.lr_grid {
                let mut cfg = cfg.clone();
                cfg.finetune.optim.lr = lr;
                // Every arm runs all epochs so the per-epoch curves are comparable.
                cfg.finetune.patience = 0;
                let dir = out.join("runs").join(format!("{backbone}-{arm}-lr{lr:e}"));
                let part = Part::of(&dir, opts);
                let report = if part == Part::Finished {
                    say(opts, &format!("\n== {backbone}, {arm}, lr {lr:e}: finished before, reused =="));
                    let file = dir.join(COMPARE_PART_FILE);
                    let text = std::fs::read_to_string(&file).with_context(|| format!("{}: cannot read", file.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{}: not a fine-tuning record", file.display()))?
                } else {
                    part.prepare(&dir)?;
                    say(opts, &format!("\n== {backbone}, {arm}, lr {lr:e}{} ==", part.resuming()));
                    let init = match &start {
                        None => Init::Scratch,
                        Some((pre, _)) => Init::Pretrained(pre),
                    };
                    let report = finetune(&cfg, init, &tok, data.train, data.valid, problem, None, Some(&dir), &part.options(opts))?;
                    write_atomic(&dir.join(COMPARE_PART_FILE), serde_json::to_string_pretty(&report)?.as_bytes())?;
                    report
                };
                runs.push(LrRun { lr, report, dir });
            }
            // The first of equal scores wins, so ties go to the smaller grid entry given first.
            let chosen = (0..runs.len()).fold(0, |best, i| if runs[i].best_f1() > runs[best].best_f1() { i } else { best });
            let test = match data.test {
                Some(test) => Some(LoadedClassifier::open(&runs[chosen].dir)?.evaluate(test, None, 64).scores),
                None => None,
            };
            say(opts, &format!("{backbone} {arm}: chosen lr {:e} (valid micro-F1 {:.4})", runs[chosen].lr, runs[chosen].best_f1()));
            let pretrain = start.map(|(dir, reused)| PretrainSummary::of(&dir, reused));
            arms.push(ArmResult { arm, pretrain, runs, chosen, test });
        }
        results.push(BackboneResult { backbone, arms });
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
                a.arm,
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
        let (l0a, a) = row_values[0];
        for (k, &(l0b, b)) in row_values.iter().enumerate().skip(1) {
            // one gain row a pre-trained arm, each against scratch
            let label = if row_values.len() > 2 { format!("**gain** ({})", r.arms[k].arm) } else { "**gain**".to_owned() };
            let _ = writeln!(
                s,
                "| {} | {label} | | {:+.4} | {} | **{}** | {} | | **{}** | {} | | |",
                r.backbone,
                l0b - l0a,
                fmt_gain(a.0, b.0),
                fmt_gain(a.1, b.1),
                fmt_gain(a.2, b.2),
                fmt_gain(a.3, b.3),
                fmt_gain(a.4, b.4)
            );
        }
    }
    s.push_str("\nPre-training:\n");
    for r in results {
        for a in &r.arms {
            let Some(p) = &a.pretrain else { continue };
            let mut scores = format!("{} steps, held-out masked-token accuracy {:.4}", p.steps, p.valid_accuracy);
            if let (Some(acc), Some(base)) = (p.rtd_accuracy, p.all_original) {
                scores = format!("{} steps, generator's held-out masked-token accuracy {:.4}, replaced-token accuracy {acc:.4} (all-original {base:.4})", p.steps, p.valid_accuracy);
            }
            let what = if r.arms.len() > 2 { format!("{} {}", r.backbone, a.arm) } else { r.backbone.to_string() };
            let tasks = tasks_label(&p.tasks);
            if p.reused {
                let logged = if p.steps > 0 { format!(" ({tasks}: {scores}, {:.0} s when it was pre-trained)", p.seconds) } else { String::new() };
                let _ = writeln!(s, "- {what}: reused checkpoint `{}`{logged}", p.dir.display());
            } else {
                let _ = writeln!(s, "- {what}: {tasks}, {scores}, {:.0} s", p.seconds);
            }
        }
    }
    s.push_str("\nLearning-rate grid (best validation micro-F1 of each run):\n");
    for r in results {
        for a in &r.arms {
            let runs: Vec<String> = a.runs.iter().map(|x| format!("{:e} → {:.4}", x.lr, x.best_f1())).collect();
            let _ = writeln!(s, "- {} {}: {}", r.backbone, a.arm, runs.join(", "));
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
                let _ = writeln!(s, "{},{},{:e},{chosen},0,,{:.6},,,,,0", r.backbone, a.arm, run.lr, run.report.initial_valid_loss);
                for e in &run.report.epochs {
                    let _ = writeln!(
                        s,
                        "{},{},{:e},{chosen},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.1}",
                        r.backbone, a.arm, run.lr, e.epoch, e.train_loss, e.valid_loss, e.micro_f1, e.macro_f1, e.precision, e.recall, e.seconds
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
        r.arms.iter().map(|a| Series { name: format!("{} (lr {:e})", a.arm, a.best().lr), points: f(&a.best().report) }).collect()
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
    /// Pre-trained models to reuse instead of pre-training, by backbone (several for one
    /// backbone: one pre-trained arm each).
    pub reuse: Vec<(BackboneKind, PathBuf)>,
    /// Objective sets to pre-train with, one pre-trained arm each; empty: the config's.
    pub objectives: Vec<Vec<Objective>>,
    /// `--config` and `--set` as laid over a reused checkpoint's config (no preset, no backbone).
    pub reused_model: ConfigSources,
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
    /// Logging options; `resume`: continue the interrupted comparison in `out` (finished parts
    /// reused, interrupted ones continued from their checkpoints).
    pub options: RunOptions,
}

impl CompareJob {
    /// What this job asks for, as a JSON value: `base`, the settings, and each input file's
    /// size and hash — an interrupted comparison resumes only the same job.
    fn record(&self, base: &Config) -> Result<serde_json::Value> {
        let mut inputs = vec![InputFile::of("corpus", &self.corpus)?];
        for t in &self.train {
            inputs.push(InputFile::of("train", t)?);
        }
        inputs.push(InputFile::of("valid", &self.valid)?);
        if let Some(t) = &self.test {
            inputs.push(InputFile::of("test", t)?);
        }
        for (_, dir) in &self.reuse {
            inputs.push(InputFile::of("pretrained", &ModelDir::open(dir)?.path.join(WEIGHTS_FILE))?);
        }
        if let Some(v) = &self.vocab {
            inputs.push(InputFile::of("vocab", &if v.is_dir() { v.join(TOKENIZER_FILE) } else { v.clone() })?);
        }
        let objectives: Vec<String> = self.objectives.iter().map(|t| tasks_label(t)).collect();
        Ok(serde_json::json!({
            "config": base.to_toml(),
            "backbones": self.backbones,
            "lr_grid": self.lr_grid,
            "objectives": objectives,
            "vocab_size": self.vocab_size,
            "problem": self.problem,
            "test_mode": self.test_mode,
            "inputs": inputs,
        }))
    }
}

/// Runs `compare` for `base` (every arm's settings are checked before the first one trains);
/// returns the finished output directory.
pub fn run(base: Config, job: &CompareJob) -> Result<PathBuf> {
    use super::setup::{load_tokenizer, read_training_files, test_mode};
    for &b in &job.backbones {
        base.clone().with_backbone(b).validate().with_context(|| format!("--backbone {b}"))?;
    }
    let mut reuse: BTreeMap<BackboneKind, Vec<PathBuf>> = BTreeMap::new();
    for (b, path) in &job.reuse {
        reuse.entry(*b).or_default().push(path.clone());
    }
    for tasks in &job.objectives {
        let mut cfg = base.clone();
        cfg.pretrain.set_tasks(tasks);
        cfg.validate().with_context(|| format!("--pretrain-arms {}", tasks_label(tasks)))?;
    }
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
    // Ctrl-C: the part under way saves a checkpoint, and --resume continues from there
    crate::train::interrupt::install_interrupt_handler();
    let record = job.record(&base)?;
    let resume = job.options.resume;
    let out = if resume { OutputDir::resume_parts(&job.out, holds_parts)? } else { OutputDir::create_parts(&job.out, job.overwrite, holds_parts)? };
    let record_file = out.path().join(COMPARE_JOB_FILE);
    if resume {
        let text = std::fs::read_to_string(&record_file).with_context(|| format!("{}: cannot read the interrupted comparison's settings", record_file.display()))?;
        let before: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not a comparison's settings", record_file.display()))?;
        if before != record {
            bail!("{}: the interrupted comparison had other settings or input files; resume with the same command and files", record_file.display());
        }
    } else {
        write_atomic(&record_file, serde_json::to_string_pretty(&record)?.as_bytes())?;
    }
    // a trained vocabulary is kept beside the runs, so that a resumed comparison reads it again
    let trained = out.path().join(TOKENIZER_FILE);
    let tokenizer = match &job.vocab {
        Some(p) => load_tokenizer(p)?,
        None if resume && trained.is_file() => WordPieceTokenizer::load(&trained)?,
        None => {
            let t = WordPieceTokenizer::train(docs.iter().cloned(), &VocabOptions { size: job.vocab_size, ..Default::default() })?;
            t.save(&trained)?;
            t
        }
    };
    let settings = CompareSettings { base: base.clone(), backbones: job.backbones.clone(), lr_grid: job.lr_grid.clone(), reuse, objectives: job.objectives.clone(), reused_model: job.reused_model.clone() };
    let data = CompareData { docs: &docs, train: &train, valid: &valid, test: test.as_deref() };
    let results = compare(&settings, &data, &tokenizer, problem, out.path(), &job.options)?;
    let names = job.train.iter().map(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| anyhow::anyhow!("{}: not a file", t.display()))).collect::<Result<Vec<_>>>()?;
    let title = format!("Pre-trained vs from scratch: {}, {} epochs, seed {}{}", names.join(" + "), base.finetune.optim.epochs, base.finetune.optim.seed, if job.test_mode { " (test mode)" } else { "" });
    write_outputs(&results, &title, out.path())?;
    out.commit()
}
