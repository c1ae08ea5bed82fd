//! The library's pipelines called in-process, as the binary calls them: fine-tuning with the
//! asymmetric loss and with label attention, training files read as one set, `--set`. The
//! binary's own promises (exit codes, one-line errors, resume after a kill) are in `cli.rs`
//! and `resume.rs`.

mod common;

use bertlu::apps::finetune::{FinetuneJob, Finetuned};
use bertlu::apps::setup::{read_training_files, ConfigSources};
use bertlu::config::{BackboneKind, Preset};
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::text::labelled::read_examples;
use bertlu::text::reader::BadLines;
use bertlu::train::RunOptions;
use common::write;
use std::path::{Path, PathBuf};

/// The backend's random generator is one for the whole process: runs that must repeat
/// each other's numbers take turns.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device_turn() -> std::sync::MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train.txt.gz", common::labelled_lines(500, 2).as_bytes());
    write(dir.path(), "valid.txt", common::labelled_lines(120, 3).as_bytes());
    write(dir.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    dir
}

/// `finetune --preset tiny --config tiny.toml --backbone textcnn --vocab-size 120 -q [--set …]` in-process.
fn finetune(dir: &Path, train: &[PathBuf], out: &str, settings: &[&str]) -> anyhow::Result<Finetuned> {
    let sources = ConfigSources { preset: Some(Preset::Tiny), backbone: Some(BackboneKind::TextCnn), file: Some(dir.join("tiny.toml")), settings: settings.iter().map(|s| s.to_string()).collect() };
    let cfg = sources.fresh()?;
    let (examples, problem) = read_training_files(train, BadLines::Fail, None, |_| {})?;
    let valid = read_examples(&dir.join("valid.txt"))?;
    let job = FinetuneJob {
        train_files: train.to_vec(),
        valid_file: dir.join("valid.txt"),
        out: dir.join(out),
        init: None,
        vocab: None,
        vocab_size: 120,
        word_vectors: None,
        teacher: None,
        tune_thresholds: None,
        overwrite: false,
        options: RunOptions { quiet: true, ..Default::default() },
    };
    bertlu::apps::finetune::run(cfg, &job, &examples, &valid, problem)
}

fn micro_f1(dir: &Path, model: &str) -> f64 {
    let valid = read_examples(&dir.join("valid.txt")).unwrap();
    LoadedClassifier::open(&dir.join(model)).unwrap().evaluate(&valid, None, 64).scores.micro_f1
}

fn probabilities(dir: &Path, model: &str) -> Vec<Vec<f32>> {
    let texts: Vec<String> = read_examples(&dir.join("valid.txt")).unwrap().into_iter().map(|e| e.text).collect();
    LoadedClassifier::open(&dir.join(model)).unwrap().probabilities(&texts, 64)
}

#[test]
fn asymmetric_loss_trains_multi_label_and_is_refused_for_single_label() {
    let _turn = device_turn();
    let d = setup();
    let p = |n: &str| d.path().join(n);
    finetune(d.path(), &[p("train.txt.gz")], "asl", &["finetune.loss=asl"]).unwrap();
    let saved = std::fs::read_to_string(p("asl").join("config.toml")).unwrap();
    assert!(saved.contains("loss = \"asl\"") && saved.contains("asl_gamma_neg = 4"), "{saved}");
    let f1 = micro_f1(d.path(), "asl");
    assert!(f1 > 0.9, "the keyword rule is learnt with the asymmetric loss too: {f1}");
    // single-label data has no use for it: refused before anything is written
    let single: String = common::labelled_lines(200, 4).lines().map(|l| l.split(" __label__").take(2).collect::<Vec<_>>().join(" __label__") + "\n").collect();
    write(d.path(), "single.txt", single.as_bytes());
    let e = format!("{:#}", finetune(d.path(), &[p("single.txt")], "x", &["finetune.loss=asl"]).err().expect("refused"));
    assert!(e.contains("multi-label"), "{e}");
    assert!(!p("x").exists() && !p(".x.partial").exists());
    // impossible settings name the key
    let e = format!("{:#}", finetune(d.path(), &[p("train.txt.gz")], "x", &["finetune.loss=asl", "finetune.asl_clip=0.7"]).err().expect("refused"));
    assert!(e.contains("asl_clip"), "{e}");
}

#[test]
fn label_attention_head_learns_saves_and_reloads() {
    let _turn = device_turn();
    let d = setup();
    let p = |n: &str| d.path().join(n);
    finetune(d.path(), &[p("train.txt.gz")], "la", &["finetune.head=label-attention"]).unwrap();
    let saved = std::fs::read_to_string(p("la").join("config.toml")).unwrap();
    assert!(saved.contains("head = \"label-attention\""), "{saved}");
    // loading rebuilds the model from config.toml and reads every tensor strictly, attention included
    let f1 = micro_f1(d.path(), "la");
    assert!(f1 > 0.9, "the keyword rule is learnt with label attention: {f1}");
    assert_eq!(probabilities(d.path(), "la"), probabilities(d.path(), "la"));
    // the attention tensors are in the file: a pooled-head config no longer fits the weights
    std::fs::write(p("la").join("config.toml"), saved.replace("head = \"label-attention\"", "head = \"pooled\"")).unwrap();
    let e = format!("{:#}", LoadedClassifier::open(&p("la")).err().expect("refused"));
    assert!(e.contains("do not fit") && e.contains("attention"), "{e}");
}

#[test]
fn several_training_files_are_read_as_one() {
    let _turn = device_turn();
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let all = common::labelled_lines(500, 2);
    let lines: Vec<&str> = all.lines().collect();
    write(d.path(), "part1.txt.gz", (lines[..300].join("\n") + "\n").as_bytes());
    write(d.path(), "part2.txt", (lines[300..].join("\n") + "\n").as_bytes());
    finetune(d.path(), &[p("part1.txt.gz"), p("part2.txt")], "two", &["finetune.seed=3"]).unwrap();
    finetune(d.path(), &[p("train.txt.gz")], "one", &["finetune.seed=3"]).unwrap();
    assert_eq!(probabilities(d.path(), "two"), probabilities(d.path(), "one"), "two files, the same examples in the same order: the same model");
    let run = std::fs::read_to_string(p("two").join("run.json")).unwrap();
    assert!(run.contains("part1.txt.gz") && run.contains("part2.txt"), "both files recorded: {run}");
    // a bad line in the second file is named by that file and its line
    write(d.path(), "bad.txt", b"a network tool __label__net\n__label__py\n");
    let e = format!("{:#}", finetune(d.path(), &[p("part1.txt.gz"), p("bad.txt")], "x", &[]).err().expect("refused"));
    assert!(e.contains("bad.txt:2"), "{e}");
    assert!(!p("x").exists() && !p(".x.partial").exists());
}

#[test]
fn set_overrides_the_file_and_names_itself_in_errors() {
    let d = setup();
    let sources = |settings: &[&str]| ConfigSources { preset: Some(Preset::Tiny), backbone: None, file: Some(d.path().join("tiny.toml")), settings: settings.iter().map(|s| s.to_string()).collect() };
    let cfg = sources(&["finetune.lr=0.01", "model.n_layers=2"]).fresh().unwrap();
    assert_eq!((cfg.finetune.optim.lr, cfg.model.transformer.n_layers, cfg.model.d_model), (0.01, 2, 32), "--set over the file over the preset");
    let e = format!("{:#}", sources(&["model.n_heads=5"]).fresh().unwrap_err());
    assert!(e.contains("divisible"), "{e}");
    let e = format!("{:#}", sources(&["finetune.lrr=0.01"]).fresh().unwrap_err());
    assert!(e.contains("--set finetune.lrr=0.01") && e.contains("unknown key 'lrr'"), "{e}");
}
