//! `bertlu demo`: the embedded default job. Pre-trains a tiny model on a slice of the Debtags
//! corpus shipped inside the binary, fine-tunes it with and without the pre-trained weights on
//! the same data, seed and settings, and prints the two side by side.

use anyhow::{bail, Result};
use bertlu::checkpoint::{ModelDir, OutputDir};
use bertlu::config::{Config, Preset};
use bertlu::tasks::classify::Problem;
use bertlu::text::corpus::read_documents;
use bertlu::text::labelled::read_examples;
use bertlu::text::tokenizer::{VocabOptions, WordPieceTokenizer};
use bertlu::train::finetune::{finetune, FinetuneReport, Init};
use bertlu::train::pretrain::pretrain;
use bertlu::train::RunOptions;
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

const CORPUS: &[u8] = include_bytes!("../../data/debtags-mini/corpus.txt.gz");
const TRAIN: &[u8] = include_bytes!("../../data/debtags-mini/train.txt.gz");
const VALID: &[u8] = include_bytes!("../../data/debtags-mini/valid.txt.gz");
const MARKER: &str = "demo.md";

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the data, models and the summary go (replaced if it holds an earlier demo).
    #[arg(long, default_value = "bertlu-demo")]
    pub out: PathBuf,
    /// Pre-training epochs over the corpus slice.
    #[arg(long, default_value_t = 3)]
    pub pretrain_epochs: usize,
    /// Fine-tuning epochs of each arm.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    if a.out.exists() && !a.out.join(MARKER).exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!("{}: exists and does not hold an earlier demo; choose another --out", a.out.display());
    }
    let out = OutputDir::create(&a.out, true)?;
    let data = out.path().join("data");
    std::fs::create_dir_all(&data)?;
    for (name, bytes) in [("corpus.txt.gz", CORPUS), ("train.txt.gz", TRAIN), ("valid.txt.gz", VALID)] {
        std::fs::write(data.join(name), bytes)?;
    }
    let opts = RunOptions { quiet: a.quiet };
    let mut cfg = Config::preset(Preset::Tiny);
    cfg.pretrain.epochs = a.pretrain_epochs;
    cfg.pretrain.seed = a.seed;
    cfg.finetune.epochs = a.epochs;
    cfg.finetune.patience = 0;
    cfg.finetune.seed = a.seed;
    cfg.finetune.lr = 1e-3;

    let docs = read_documents(&data.join("corpus.txt.gz"))?;
    let train = read_examples(&data.join("train.txt.gz"))?;
    let valid = read_examples(&data.join("valid.txt.gz"))?;
    println!("demo: {} corpus documents, {} train / {} valid labelled examples (Debian package descriptions → Debtags)", docs.len(), train.len(), valid.len());
    let tokenizer = WordPieceTokenizer::train(docs.iter().cloned(), &VocabOptions { size: 4000, ..Default::default() })?;
    cfg.model.vocab_size = tokenizer.vocab_size();

    let pre_dir = out.path().join("pretrained");
    std::fs::create_dir_all(&pre_dir)?;
    println!("\n== pre-training (masked LM, tiny preset) ==");
    pretrain(&cfg, &docs, &tokenizer, &pre_dir, &opts)?;
    let pretrained = ModelDir::open(&pre_dir)?;

    let problem = Problem::infer(&train);
    let mut reports = Vec::new();
    for (name, init) in [("scratch", Init::Scratch), ("pretrained", Init::Pretrained(&pretrained))] {
        println!("\n== fine-tuning from {name} ==");
        let dir = out.path().join(format!("classifier-{name}"));
        std::fs::create_dir_all(&dir)?;
        reports.push(finetune(&cfg, init, &tokenizer, &train, &valid, problem, Some(&dir), &opts)?);
    }
    let table = side_by_side(&reports[0], &reports[1]);
    std::fs::write(out.path().join(MARKER), &table)?;
    let dir = out.commit()?;
    println!("\n{table}");
    println!("models and data in {}; try: bertlu predict --model {}/classifier-pretrained {}/data/valid.txt.gz --k 3", dir.display(), dir.display(), dir.display());
    Ok(())
}

/// A Markdown table of validation scores per epoch, scratch vs pre-trained.
pub fn side_by_side(scratch: &FinetuneReport, pre: &FinetuneReport) -> String {
    let mut s = String::from("| epoch | scratch loss | scratch micro-F1 | scratch macro-F1 | pre-trained loss | pre-trained micro-F1 | pre-trained macro-F1 |\n|---|---|---|---|---|---|---|\n");
    let _ = writeln!(s, "| 0 | {:.4} | | | {:.4} | | |", scratch.initial_valid_loss, pre.initial_valid_loss);
    for (a, b) in scratch.epochs.iter().zip(&pre.epochs) {
        let _ = writeln!(s, "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |", a.epoch, a.valid_loss, a.micro_f1, a.macro_f1, b.valid_loss, b.micro_f1, b.macro_f1);
    }
    s
}
