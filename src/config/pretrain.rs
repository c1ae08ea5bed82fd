//! `[pretrain]`: the objectives, masking, ELECTRA's generator and the time budget.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{ModelConfig, OptimConfig};

/// A pre-training objective; several are trained together, their losses summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Masked language model: predict the chosen word pieces.
    Mlm,
    /// Next-sentence prediction: does B follow A in `[CLS] A [SEP] B [SEP]`?
    Nsp,
    /// ELECTRA's replaced-token detection (Clark et al., 2020): a small generator, trained as a
    /// masked LM, fills the masked positions with samples; the backbone (the discriminator)
    /// tells, at every position, the original word pieces from the replaced ones.
    Electra,
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Mlm => "mlm",
            Objective::Nsp => "nsp",
            Objective::Electra => "electra",
        })
    }
}

pub(super) fn default_tasks() -> Vec<Objective> {
    vec![Objective::Mlm]
}

pub(super) fn default_short_seq_prob() -> f64 {
    0.1
}

/// ELECTRA's generator width as a share of the discriminator's (the paper: ¼ to ½ works best).
pub const DEFAULT_GENERATOR_SIZE: f64 = 0.25;
/// ELECTRA's weight of the replaced-token loss against the generator's masked-LM loss (λ).
pub const DEFAULT_RTD_WEIGHT: f64 = 50.0;

fn default_generator_size() -> f64 {
    DEFAULT_GENERATOR_SIZE
}

fn is_default_generator_size(x: &f64) -> bool {
    *x == DEFAULT_GENERATOR_SIZE
}

fn default_rtd_weight() -> f64 {
    DEFAULT_RTD_WEIGHT
}

fn is_default_rtd_weight(x: &f64) -> bool {
    *x == DEFAULT_RTD_WEIGHT
}

/// Pre-training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Batch size, learning rate and schedule, epochs over the corpus, seed.
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// Stop after this many optimiser steps (0: no limit).
    pub max_steps: usize,
    /// Share of the non-special positions chosen for prediction.
    pub mask_prob: f64,
    /// Most chosen positions a sequence.
    pub max_predictions: usize,
    /// Share of the documents held out for validation.
    pub valid_fraction: f64,
    /// Whole-word masking: all pieces of a chosen word are masked together.
    #[serde(default)]
    pub whole_word_mask: bool,
    /// Keep the model of every epoch as `epochs/epoch-N/` in the output directory (each a
    /// whole model directory, e.g. for `finetune --init`), not only the last.
    #[serde(default)]
    pub keep_epochs: bool,
    /// With whole-word masking, a file of words (one a line) whose runs of CJK characters are
    /// masked as one word; empty: none.
    #[serde(default)]
    pub word_list: String,
    /// The objectives trained together (`mlm`, `nsp`, `electra`; `electra` replaces `mlm`).
    #[serde(default = "default_tasks")]
    pub tasks: Vec<Objective>,
    /// With `nsp`: share of the pairs built to a random shorter length, so the model also sees
    /// short inputs (as fine-tuning will).
    #[serde(default = "default_short_seq_prob")]
    pub short_seq_prob: f64,
    /// With `electra`: the generator's hidden size (TextCNN: filters), feed-forward size and
    /// heads as a share of the discriminator's.
    #[serde(default = "default_generator_size", skip_serializing_if = "is_default_generator_size")]
    pub generator_size: f64,
    /// With `electra`: λ in `generator MLM loss + λ · replaced-token loss`.
    #[serde(default = "default_rtd_weight", skip_serializing_if = "is_default_rtd_weight")]
    pub rtd_weight: f64,
    /// Wall-clock seconds the whole run may take (0: no budget). Before training, the steps that
    /// fit are measured (a few steps on held-out batches) and become the run's `max_steps` and
    /// `epochs`, so warm-up and decay span exactly the budget (`epochs` is replaced; a
    /// `max_steps` still caps the steps).
    #[serde(default, skip_serializing_if = "is_no_budget")]
    pub time_budget: f64,
    /// Heads of the model a continued pre-training started from (`pretrain --init`) that this
    /// run does not train (`mlm`, `nsp`): carried over unchanged, so that, e.g., an imported
    /// BERT's pooler (the next-sentence head's dense layer) still reaches fine-tuning, `embed
    /// --pooling pooler` and `export-hf` after `--tasks mlm`. Set from the `--init` model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_heads: Vec<Objective>,
}

fn is_no_budget(x: &f64) -> bool {
    *x == 0.0
}

impl PretrainConfig {
    /// Rejects settings no pre-training can run with, naming the key; `model`: the shape it trains.
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        self.optim.validate("pretrain")?;
        if !(self.mask_prob > 0.0 && self.mask_prob < 1.0) {
            bail!("pretrain.mask_prob must be in (0, 1) (got {})", self.mask_prob);
        }
        if self.max_predictions == 0 {
            bail!("pretrain.max_predictions must be positive");
        }
        if !self.word_list.is_empty() && !self.whole_word_mask {
            bail!("pretrain.word_list needs whole_word_mask (--whole-word-mask)");
        }
        if self.tasks.is_empty() {
            bail!("pretrain.tasks must name at least one objective (mlm, nsp, electra)");
        }
        if self.has(Objective::Mlm) && self.has(Objective::Electra) {
            bail!("pretrain.tasks: electra replaces mlm (its generator is the masked LM); choose one");
        }
        if !(self.generator_size > 0.0 && self.generator_size <= 1.0) {
            bail!("pretrain.generator_size must be in (0, 1] (got {})", self.generator_size);
        }
        if !(self.rtd_weight > 0.0 && self.rtd_weight.is_finite()) {
            bail!("pretrain.rtd_weight must be positive (got {})", self.rtd_weight);
        }
        if self.has(Objective::Nsp) && model.type_vocab_size != 2 {
            bail!("pretrain.tasks has nsp, which needs segment embeddings (model.type_vocab_size = 2)");
        }
        if !(0.0..=1.0).contains(&self.short_seq_prob) {
            bail!("pretrain.short_seq_prob must be in [0, 1] (got {})", self.short_seq_prob);
        }
        if let Some(o) = self.kept_heads.iter().find(|o| !matches!(o, Objective::Mlm | Objective::Nsp)) {
            bail!("pretrain.kept_heads: only the mlm and nsp heads can be kept untrained (got {o})");
        }
        if !(self.time_budget >= 0.0 && self.time_budget.is_finite()) {
            bail!("pretrain.time_budget must be a number of seconds ≥ 0 (got {})", self.time_budget);
        }
        if self.time_budget > 0.0 && self.valid_fraction == 0.0 {
            bail!("pretrain.time_budget needs held-out sequences to measure a step on (pretrain.valid_fraction > 0)");
        }
        if !(0.0..0.5).contains(&self.valid_fraction) {
            bail!("pretrain.valid_fraction must be in [0, 0.5) (got {})", self.valid_fraction);
        }
        Ok(())
    }

    /// Whether `objective` is trained.
    pub fn has(&self, objective: Objective) -> bool {
        self.tasks.contains(&objective)
    }

    /// Whether the model has `objective`'s head: trained, or kept from the model it continues.
    pub fn has_head(&self, objective: Objective) -> bool {
        self.has(objective) || self.kept_heads.contains(&objective)
    }

    /// The heads a run continuing a model pre-trained with `init` keeps without training them:
    /// the masked-LM and next-sentence heads `init` has and this run's objectives leave out.
    /// (An ELECTRA generator is not kept: only pre-training uses it.)
    pub fn keep_heads_of(&mut self, init: &PretrainConfig) {
        self.kept_heads = [Objective::Mlm, Objective::Nsp].into_iter().filter(|&o| init.has_head(o) && !self.has(o)).collect();
    }

    /// Sets the objectives, each once, in a fixed order (`nsp,mlm` and `mlm,nsp` are one setting).
    pub fn set_tasks(&mut self, tasks: &[Objective]) {
        self.tasks = tasks.to_vec();
        self.tasks.sort();
        self.tasks.dedup();
    }
}
