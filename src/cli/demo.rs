//! `bertlu demo`: the embedded default job, `compare` on a slice of Debtags shipped inside the
//! binary (with a vocabulary trained on it). For the Transformer and the TextCNN (tiny preset):
//! fine-tunes with and without pre-trained weights on the same data, seed and settings, and
//! prints the two side by side (and writes the CSV and plots). The TextCNN is pre-trained on the
//! corpus slice in the demo; the Transformer needs far more pre-training than a few minutes give,
//! so a tiny Transformer that bertlu pre-trained on the whole Debtags corpus ships inside the
//! binary too (its command in `data/debtags-mini/NOTICE`); `--pretrain` pre-trains it in the demo
//! instead.

use anyhow::{bail, Result};
use bertlu::store::output_dir::OutputDir;
use bertlu::apps::compare::{compare, write_outputs, CompareData, CompareSettings};
use bertlu::store::layout::COMPARE_TABLE_FILE;
use bertlu::config::{BackboneKind, Config, Preset};
use bertlu::data::classify::Problem;
use bertlu::text::corpus::read_documents;
use bertlu::text::labelled::read_examples;
use bertlu::text::tokenizer::WordPieceTokenizer;
use bertlu::train::RunOptions;
use clap::Args;
use std::path::PathBuf;

const CORPUS: &[u8] = include_bytes!("../../data/debtags-mini/corpus.txt.gz");
const TRAIN: &[u8] = include_bytes!("../../data/debtags-mini/train.txt.gz");
const VALID: &[u8] = include_bytes!("../../data/debtags-mini/valid.txt.gz");
/// Trained once on `CORPUS` (`bertlu vocab --size 4000`) and shipped: the WordPiece trainer
/// breaks ties in hash-map order, so a vocabulary trained in the demo would make two demo runs
/// differ; with this one the same seed gives the same numbers.
const VOCAB: &[u8] = include_bytes!("../../data/debtags-mini/vocab-4000.json");
/// The shipped pre-trained Transformer (tiny preset, `VOCAB`), without its tokenizer (`VOCAB`).
const PRETRAINED_TRANSFORMER: [(&str, &[u8]); 3] = [
    ("config.toml", include_bytes!("../../data/debtags-mini/pretrained-transformer/config.toml")),
    ("model.json", include_bytes!("../../data/debtags-mini/pretrained-transformer/model.json")),
    ("model.safetensors", include_bytes!("../../data/debtags-mini/pretrained-transformer/model.safetensors")),
];

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
    /// Fine-tuning learning rate of both arms (`compare` chooses one per arm from a grid instead).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pre-train the Transformer on the corpus slice in the demo too (a few minutes: too little
    /// to help it), instead of fine-tuning the shipped one that was pre-trained on the whole corpus.
    #[arg(long)]
    pub pretrain: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    if a.out.exists() && !a.out.join(COMPARE_TABLE_FILE).exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!("{}: exists and does not hold an earlier demo; choose another --out", a.out.display());
    }
    let out = OutputDir::create(&a.out, true)?;
    let data = out.path().join("data");
    std::fs::create_dir_all(&data)?;
    for (name, bytes) in [("corpus.txt.gz", CORPUS), ("train.txt.gz", TRAIN), ("valid.txt.gz", VALID), ("tokenizer.json", VOCAB)] {
        std::fs::write(data.join(name), bytes)?;
    }
    let mut cfg = Config::preset(Preset::Tiny);
    cfg.pretrain.optim.epochs = a.pretrain_epochs;
    cfg.pretrain.optim.seed = a.seed;
    cfg.finetune.optim.epochs = a.epochs;
    cfg.finetune.optim.seed = a.seed;

    let docs = read_documents(&data.join("corpus.txt.gz"))?;
    let train = read_examples(&data.join("train.txt.gz"))?;
    let valid = read_examples(&data.join("valid.txt.gz"))?;
    println!("demo: {} corpus documents, {} train / {} valid labelled examples (Debian package descriptions → Debtags)", docs.len(), train.len(), valid.len());
    let tokenizer = WordPieceTokenizer::load(&data.join("tokenizer.json"))?;
    let mut reuse = std::collections::BTreeMap::new();
    if !a.pretrain {
        let dir = data.join("pretrained-transformer");
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in PRETRAINED_TRANSFORMER.into_iter().chain([("tokenizer.json", VOCAB)]) {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("demo: the Transformer's pre-trained arm is the shipped tiny Transformer pre-trained on the whole Debtags corpus (data/pretrained-transformer; --pretrain pre-trains one here instead)");
        reuse.insert(BackboneKind::Transformer, vec![dir]);
    }
    let settings = CompareSettings { base: cfg, backbones: vec![BackboneKind::Transformer, BackboneKind::TextCnn], lr_grid: vec![a.lr], reuse, objectives: Vec::new(), reused_model: Default::default() };
    let corpus = CompareData { docs: &docs, train: &train, valid: &valid, test: None };
    let results = compare(&settings, &corpus, &tokenizer, Problem::infer(&train), out.path(), &RunOptions { quiet: a.quiet, ..Default::default() })?;
    let title = format!("bertlu demo: tiny preset, {} fine-tuning epochs at lr {:e}, seed {} (validation scores of the embedded Debtags slice)", a.epochs, a.lr, a.seed);
    write_outputs(&results, &title, out.path())?;
    let running = out.path().display().to_string();
    let dir = out.commit()?;
    // the table names the shipped model where it ended up, not in the run's temporary directory
    let table_file = dir.join(COMPARE_TABLE_FILE);
    let table = std::fs::read_to_string(&table_file)?.replace(&running, &dir.display().to_string());
    std::fs::write(&table_file, table)?;
    println!("\n{}", std::fs::read_to_string(dir.join(COMPARE_TABLE_FILE))?);
    println!("table, per-epoch CSV and plots (plot-*.svg) in {}; try: bertlu predict --model {}/runs/textcnn-pre-trained-lr{:e} {}/data/valid.txt.gz --k 3", dir.display(), dir.display(), a.lr, dir.display());
    Ok(())
}
