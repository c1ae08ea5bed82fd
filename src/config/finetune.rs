//! `[finetune]`: the loss, the head, discriminative learning rates and the weight average.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::OptimConfig;

/// The training loss of a multi-label classifier (validation loss is always reported as BCE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MultiLabelLoss {
    /// Binary cross-entropy, every label and example weighted alike.
    #[default]
    Bce,
    /// Asymmetric loss (Ridnik et al., 2021): easy negatives are down-weighted by `p^gamma_neg`
    /// and negatives below `asl_clip` ignored, so the few positives of rare labels are not
    /// drowned by the many negatives of every example.
    Asl,
}

/// What the classification head reads from the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// Dense + tanh + linear on the pooled vector.
    #[default]
    Pooled,
    /// The pooled head plus label-wise attention: each label pools the per-position states
    /// with its own attention and scores what it pooled, an evidence term added to the pooled
    /// head's logit (starts at zero, so training begins from the pooled head).
    LabelAttention,
}

pub(super) fn default_asl_gamma_neg() -> f64 {
    4.0
}

pub(super) fn default_asl_clip() -> f64 {
    0.05
}

pub(super) fn default_backbone_lr_scale() -> f64 {
    1.0
}

/// Fine-tuning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Batch size, learning rate (smaller than pre-training's) and schedule, epochs over the
    /// training set, seed.
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// Stop when validation micro-F1 has not improved for this many epochs (0: never).
    pub patience: usize,
    /// Decision threshold on label probabilities for multi-label problems.
    pub threshold: f64,
    /// Multi-label training loss: `bce` or `asl`.
    #[serde(default)]
    pub loss: MultiLabelLoss,
    /// `asl`: focusing exponent of the negatives.
    #[serde(default = "default_asl_gamma_neg")]
    pub asl_gamma_neg: f64,
    /// `asl`: focusing exponent of the positives (0: plain log-likelihood).
    #[serde(default)]
    pub asl_gamma_pos: f64,
    /// `asl`: probability margin; a negative scored below it costs nothing.
    #[serde(default = "default_asl_clip")]
    pub asl_clip: f64,
    /// The classification head: `pooled` or `label-attention`.
    #[serde(default)]
    pub head: HeadKind,
    /// The backbone's learning rate (token and position embeddings included) as a share of
    /// `lr`; the head always trains at `lr`. Below 1 a pre-trained backbone moves less far from
    /// what it learnt (discriminative fine-tuning); 0 freezes it.
    #[serde(default = "default_backbone_lr_scale")]
    pub backbone_lr_scale: f64,
    /// Decay of an exponential moving average of the weights, updated every step; when above 0,
    /// the average (not the last step's weights) is scored each epoch and saved. 0: off.
    #[serde(default)]
    pub ema: f64,
    /// Keep the model scored at every epoch (the weight average's, with `ema`) as
    /// `epochs/epoch-N/` in the output directory, beside the best one; `bertlu average` makes
    /// one model of several of them. Not written when off, so configs read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_epochs: bool,
    /// With a teacher (`finetune --teacher`): its share of each training target,
    /// `teacher_weight · p_teacher + (1 − teacher_weight) · gold` (knowledge distillation;
    /// 1: the teacher's probabilities alone). Not written at its default, so configs read as
    /// before.
    #[serde(default = "default_teacher_weight", skip_serializing_if = "is_default_teacher_weight")]
    pub teacher_weight: f64,
}

pub(super) fn default_teacher_weight() -> f64 {
    0.5
}

fn is_default_teacher_weight(w: &f64) -> bool {
    *w == default_teacher_weight()
}

impl FinetuneConfig {
    /// Rejects settings no fine-tuning can run with, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.optim.validate("finetune")?;
        if !(0.0..=1.0).contains(&self.threshold) {
            bail!("finetune.threshold must be in [0, 1]");
        }
        if !(self.asl_gamma_neg >= 0.0 && self.asl_gamma_pos >= 0.0 && self.asl_gamma_neg.is_finite() && self.asl_gamma_pos.is_finite()) {
            bail!("finetune.asl_gamma_neg and finetune.asl_gamma_pos must be ≥ 0");
        }
        if !(0.0..0.5).contains(&self.asl_clip) {
            bail!("finetune.asl_clip must be in [0, 0.5) (got {})", self.asl_clip);
        }
        if !(0.0..=1.0).contains(&self.backbone_lr_scale) {
            bail!("finetune.backbone_lr_scale must be in [0, 1] (got {})", self.backbone_lr_scale);
        }
        if !(0.0..=1.0).contains(&self.teacher_weight) {
            bail!("finetune.teacher_weight must be in [0, 1] (got {})", self.teacher_weight);
        }
        if !(0.0..1.0).contains(&self.ema) {
            bail!("finetune.ema must be in [0, 1) (got {}; 0 turns the weight average off)", self.ema);
        }
        Ok(())
    }
}
