//! The optimiser settings `[pretrain]` and `[finetune]` share, and the products' number format.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The optimiser settings pre-training and fine-tuning share (keys of `[pretrain]` and of
/// `[finetune]`): AdamW with linear warm-up and decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Examples (sequences) a batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of the steps spent warming up linearly to the peak.
    pub warmup_ratio: f64,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f64,
    /// Gradient clipping by norm (per parameter tensor); 0 disables it.
    pub grad_clip: f64,
    /// Passes over the data.
    pub epochs: usize,
    /// Random seed (data order, masking, initial weights, dropout).
    pub seed: u64,
    /// Number format of the training step's matrix-product inputs: `f32`, or `bf16` (mixed
    /// precision: weights, gradients and optimiser state stay f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// Number format of the training step's matrix-product inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Precision {
    /// Single precision throughout.
    #[default]
    F32,
    /// The linear layers' products take bf16 inputs (rounded from the f32 values) and sum in
    /// f32, with AVX-512 BF16 instructions; where the CPU lacks them, f32 (the log says so).
    Bf16,
}

impl Precision {
    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl OptimConfig {
    /// Refuses settings no run can train with; `section` names the TOML section in errors.
    pub fn validate(&self, section: &str) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("{section}.lr must be positive (got {})", self.lr);
        }
        Ok(())
    }
}
