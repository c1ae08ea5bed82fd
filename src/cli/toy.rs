//! `bertlu toy`: the digit-sum sanity task, trained from scratch with any backbone.

use anyhow::Result;
use bertlu::config::{BackboneKind, Config, Preset};
use bertlu::data::classify::Problem;
use bertlu::data::toy;
use bertlu::train::finetune::{finetune, Init};
use bertlu::train::RunOptions;
use clap::Args;

/// Arguments of `toy`.
#[derive(Args, Debug)]
pub struct ToyArgs {
    /// Backbone architecture (tiny preset).
    #[arg(long, value_enum, default_value_t = BackboneKind::Transformer)]
    pub backbone: BackboneKind,
    /// Digits a sequence.
    #[arg(long, default_value_t = 16)]
    pub len: usize,
    /// Training examples (a quarter as many are generated for validation).
    #[arg(long, default_value_t = 4000)]
    pub examples: usize,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Random seed (data, weights, order).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `toy`; prints the best validation accuracy.
pub fn run(a: ToyArgs) -> Result<()> {
    anyhow::ensure!(a.len >= 2 && a.examples >= 4, "--len must be at least 2 and --examples at least 4");
    let tokenizer = toy::tokenizer()?;
    let mut cfg = Config::preset(Preset::Tiny).with_backbone(a.backbone);
    cfg.model.vocab_size = tokenizer.vocab_size();
    cfg.model.max_len = (a.len + 2).max(8);
    cfg.model.textcnn.filter_widths.retain(|&w| w <= cfg.model.max_len);
    let f = &mut cfg.finetune;
    (f.optim.epochs, f.optim.lr, f.optim.seed, f.patience) = (a.epochs, a.lr, a.seed, 0);
    cfg.validate()?;
    let train = toy::examples(a.examples, a.len, a.seed);
    let valid = toy::examples(a.examples / 4, a.len, a.seed.wrapping_add(1));
    println!("toy: {} train / {} valid sequences of {} digits, label 1 when the sum exceeds {}; {} backbone (tiny)", train.len(), valid.len(), a.len, 9 * a.len / 2, a.backbone);
    let report = finetune(&cfg, Init::Scratch, &tokenizer, &train, &valid, Problem::SingleLabel, None, None, &RunOptions { quiet: a.quiet, ..Default::default() })?;
    let best = report.epochs.iter().find(|e| e.epoch == report.best_epoch).expect("best epoch is logged");
    // Single-label with one gold label an example: micro-F1 equals accuracy.
    println!("toy: best validation accuracy {:.4} (epoch {} of {}, {:.0}s)", best.micro_f1, best.epoch, a.epochs, report.epochs.last().map_or(0.0, |e| e.seconds));
    Ok(())
}
