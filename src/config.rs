//! One place where defaults live: model presets, training settings and their TOML form.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The backbone architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    /// BERT-style Transformer encoder.
    Transformer,
    /// Kim's TextCNN: parallel "same"-padded 1-D convolutions, max-over-time pooling.
    #[serde(rename = "textcnn")]
    #[cfg_attr(feature = "cli", value(name = "textcnn"))]
    TextCnn,
}

impl std::fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackboneKind::Transformer => "transformer",
            BackboneKind::TextCnn => "textcnn",
        })
    }
}

/// How a backbone turns per-position states into one vector a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The state of the first position ([CLS]), as in BERT.
    #[default]
    Cls,
    /// The mean of the states of the non-padding positions.
    Mean,
    /// The feature-wise maximum over the non-padding positions (as the TextCNN pools).
    Max,
}

/// Shape of the backbone. `vocab_size` is filled from the tokenizer. In TOML every key sits
/// flat in `[model]` (the two backbones' own settings included), as in every saved model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which backbone.
    pub backbone: BackboneKind,
    /// Vocabulary size (set from the tokenizer; 0 until then).
    #[serde(default)]
    pub vocab_size: usize,
    /// Longest sequence in tokens, [CLS] and [SEP] included.
    pub max_len: usize,
    /// Rows of the Transformer's position table (BERT: 512), when more than `max_len`: an
    /// imported checkpoint keeps its table whatever length it is trained at. 0 (the default,
    /// not written): `max_len`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_positions: usize,
    /// Width of the token embeddings (and of every Transformer state).
    pub d_model: usize,
    /// Dropout rate.
    pub dropout: f64,
    /// Segment (token-type) embeddings: 2 gives sentence pairs `[CLS] A [SEP] B [SEP]` one
    /// embedding for A and one for B (next-sentence prediction, pair classification); 0 has
    /// none (models saved before segments existed read as 0).
    #[serde(default)]
    pub type_vocab_size: usize,
    /// The Transformer's own settings.
    #[serde(flatten)]
    pub transformer: TransformerConfig,
    /// The TextCNN's own settings.
    #[serde(flatten)]
    pub textcnn: TextCnnConfig,
}

/// The Transformer encoder's own settings (`[model]` keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Attention heads; `d_model / n_heads` is the per-head size d_k.
    pub n_heads: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Width of the feed-forward block (4 × d_model in the presets).
    pub d_ff: usize,
    /// Pooled vector: `cls`, `mean` or `max`.
    #[serde(default)]
    pub pooling: Pooling,
    /// LayerNorm before each sub-layer (pre-LN, with a final LayerNorm) instead of after (BERT's post-LN).
    #[serde(default)]
    pub norm_first: bool,
    /// The feed-forward (and masked-LM transform) activation: `gelu` (exact, BERT's) or
    /// `gelu-tanh` (the tanh approximation, HuggingFace's `gelu_new`). Written only when not the
    /// default, so configs stay as earlier builds wrote them.
    #[serde(default, skip_serializing_if = "Activation::is_default")]
    pub activation: Activation,
    /// LayerNorm's epsilon (BERT: 1e-12); written only when not BERT's.
    #[serde(default = "bert_layer_norm_eps", skip_serializing_if = "is_bert_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Dropout after the feed-forward activation. Absent (the default, not written): the
    /// model's `dropout`, as bertlu's own models have always trained. BERT has none there (its
    /// feed-forward block drops only its output), so `import-hf` writes 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_dropout: Option<f64>,
}

/// BERT's LayerNorm epsilon.
pub const BERT_LAYER_NORM_EPS: f64 = 1e-12;

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn bert_layer_norm_eps() -> f64 {
    BERT_LAYER_NORM_EPS
}

fn is_bert_layer_norm_eps(v: &f64) -> bool {
    *v == BERT_LAYER_NORM_EPS
}

/// The Transformer's feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `x Φ(x)` with the exact normal CDF (erf): BERT's `gelu`.
    #[default]
    Gelu,
    /// `x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))`: HuggingFace's `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
}

impl Activation {
    fn is_default(&self) -> bool {
        *self == Activation::Gelu
    }
}

impl TransformerConfig {
    /// Refuses sizes the encoder cannot have (`active`: the Transformer is the backbone).
    pub fn validate(&self, d_model: usize, active: bool) -> Result<()> {
        for (name, v) in [("model.n_heads", self.n_heads), ("model.n_layers", self.n_layers), ("model.d_ff", self.d_ff)] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if let Some(p) = self.activation_dropout.filter(|p| !(0.0..1.0).contains(p)) {
            bail!("model.activation_dropout must be in [0, 1) (got {p})");
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            bail!("model.layer_norm_eps must be within (0, 1) (got {})", self.layer_norm_eps);
        }
        if active && d_model % self.n_heads != 0 {
            bail!("model.d_model ({d_model}) must be divisible by model.n_heads ({})", self.n_heads);
        }
        Ok(())
    }
}

/// The TextCNN's own settings (`[model]` keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCnnConfig {
    /// The convolution widths, one group of filters each.
    #[serde(default = "default_filter_widths")]
    pub filter_widths: Vec<usize>,
    /// Filters a width; states and the pooled vector have `filters × widths` features.
    #[serde(default = "default_filters")]
    pub filters: usize,
}

impl TextCnnConfig {
    /// Refuses filters the convolutions cannot have.
    pub fn validate(&self, max_len: usize) -> Result<()> {
        if self.filters == 0 || self.filter_widths.is_empty() || self.filter_widths.contains(&0) {
            bail!("model.filters and every model.filter_widths entry must be positive");
        }
        if let Some(w) = self.filter_widths.iter().find(|&&w| w > max_len) {
            bail!("model.filter_widths entry {w} is wider than model.max_len ({max_len})");
        }
        Ok(())
    }
}

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

fn default_filter_widths() -> Vec<usize> {
    vec![3, 4, 5]
}

fn default_filters() -> usize {
    128
}

impl ModelConfig {
    /// Rows of the position table: `max_positions`, or `max_len` when that is 0.
    pub fn positions(&self) -> usize {
        if self.max_positions == 0 {
            self.max_len
        } else {
            self.max_positions
        }
    }

    /// Dropout rate after the Transformer's feed-forward activation (`activation_dropout`, else `dropout`).
    pub fn activation_dropout(&self) -> f64 {
        self.transformer.activation_dropout.unwrap_or(self.dropout)
    }

    /// Width of the backbone's states and pooled vector (what the heads take in).
    pub fn output_dim(&self) -> usize {
        match self.backbone {
            BackboneKind::Transformer => self.d_model,
            BackboneKind::TextCnn => self.textcnn.filters * self.textcnn.filter_widths.len(),
        }
    }
}

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

fn default_tasks() -> Vec<Objective> {
    vec![Objective::Mlm]
}

fn default_short_seq_prob() -> f64 {
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
    /// The objectives trained together (`mlm`, `nsp`).
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

/// The settings a config file leaves out while they hold their default (so files stay as
/// earlier builds wrote them), `(section, key)`: still settings a file or `--set` may give.
const UNWRITTEN_AT_DEFAULT: &[(&str, &str)] = &[
    ("model", "max_positions"),
    ("model", "activation"),
    ("model", "layer_norm_eps"),
    ("model", "activation_dropout"),
    ("pretrain", "generator_size"),
    ("pretrain", "rtd_weight"),
    ("pretrain", "time_budget"),
    ("pretrain", "kept_heads"),
    ("pretrain", "precision"),
    ("finetune", "precision"),
];

fn is_no_budget(x: &f64) -> bool {
    *x == 0.0
}

impl PretrainConfig {
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

fn default_asl_gamma_neg() -> f64 {
    4.0
}

fn default_asl_clip() -> f64 {
    0.05
}

fn default_backbone_lr_scale() -> f64 {
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
}

/// Everything a run needs; saved as `config.toml` beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Backbone shape.
    pub model: ModelConfig,
    /// Pre-training settings.
    pub pretrain: PretrainConfig,
    /// Fine-tuning settings.
    pub finetune: FinetuneConfig,
}

/// Named model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Preset {
    /// d_model 64, 8 heads (d_k 8), 2 layers.
    Tiny,
    /// d_model 128, 8 heads (d_k 16), 4 layers.
    Small,
    /// d_model 512, 8 heads (d_k 64), 6 layers.
    Big,
}

impl Config {
    /// The defaults of a preset.
    pub fn preset(preset: Preset) -> Self {
        let (d_model, n_layers, filters, lr) = match preset {
            Preset::Tiny => (64, 2, 64, 1e-3),
            Preset::Small => (128, 4, 128, 5e-4),
            Preset::Big => (512, 6, 256, 1e-4),
        };
        Config {
            model: ModelConfig {
                backbone: BackboneKind::Transformer,
                vocab_size: 0,
                max_len: 128,
                max_positions: 0,
                d_model,
                dropout: 0.1,
                type_vocab_size: 2,
                transformer: TransformerConfig { n_heads: 8, n_layers, d_ff: 4 * d_model, pooling: Pooling::Cls, norm_first: false, activation: Activation::Gelu, layer_norm_eps: BERT_LAYER_NORM_EPS, activation_dropout: None },
                textcnn: TextCnnConfig { filter_widths: default_filter_widths(), filters },
            },
            pretrain: PretrainConfig {
                optim: OptimConfig { batch_size: 32, lr, warmup_ratio: 0.06, weight_decay: 0.01, grad_clip: 1.0, epochs: 1, seed: 42, precision: Precision::F32 },
                max_steps: 0,
                mask_prob: 0.15,
                max_predictions: 20,
                valid_fraction: 0.01,
                whole_word_mask: false,
                keep_epochs: false,
                word_list: String::new(),
                tasks: default_tasks(),
                short_seq_prob: default_short_seq_prob(),
                time_budget: 0.0,
                kept_heads: Vec::new(),
                generator_size: DEFAULT_GENERATOR_SIZE,
                rtd_weight: DEFAULT_RTD_WEIGHT,
            },
            finetune: FinetuneConfig {
                optim: OptimConfig { batch_size: 32, lr: lr / 2.0, warmup_ratio: 0.06, weight_decay: 0.01, grad_clip: 1.0, epochs: 5, seed: 42, precision: Precision::F32 },
                patience: 2,
                threshold: 0.5,
                loss: MultiLabelLoss::Bce,
                asl_gamma_neg: default_asl_gamma_neg(),
                asl_gamma_pos: 0.0,
                asl_clip: default_asl_clip(),
                backbone_lr_scale: default_backbone_lr_scale(),
                ema: 0.0,
                head: HeadKind::Pooled,
            },
        }
    }

    /// A preset with the overrides of a TOML file applied; unknown keys are errors.
    pub fn from_preset_and_file(preset: Preset, file: Option<&Path>) -> Result<Self> {
        let mut cfg = Self::preset(preset);
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
            cfg = cfg.merged(&text).with_context(|| format!("{}", path.display()))?;
            cfg.validate().with_context(|| format!("{}", path.display()))?;
        } else {
            cfg.validate()?;
        }
        Ok(cfg)
    }

    /// Whether `[section] key` is a setting: one of the keys `written` (the section as
    /// [`Config::to_toml`] writes it), or one of the [`UNWRITTEN_AT_DEFAULT`] keys.
    fn is_known_key(written: &toml::Table, section: &str, key: &str) -> bool {
        written.contains_key(key) || UNWRITTEN_AT_DEFAULT.contains(&(section, key))
    }

    /// Applies the keys present in a TOML text on top of `self`.
    pub fn merged(&self, toml_text: &str) -> Result<Self> {
        let overrides: toml::Table = toml::from_str(toml_text).map_err(|e| anyhow::anyhow!("invalid TOML: {}", one_line(&e.to_string())))?;
        let mut base = toml::Table::try_from(self)?;
        for (section, value) in overrides {
            match (base.get_mut(&section), value) {
                (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => {
                    for (k, v) in src {
                        if k != "vocab_size" && !Self::is_known_key(dst, &section, &k) {
                            bail!("unknown key '{k}' in [{section}]");
                        }
                        dst.insert(k, v);
                    }
                }
                (Some(_), _) => bail!("'{section}' must be a table ([{section}])"),
                (None, _) => bail!("unknown section '{section}' (expected model, pretrain, finetune)"),
            }
        }
        let cfg: Config = toml::Value::Table(base).try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{}", one_line(&e.to_string())))?;
        Ok(cfg)
    }

    /// Applies `section.key=value` settings (the command line's `--set`) on top of `self`, in
    /// order, as [`Config::merged`] does a TOML file: unknown keys are errors. A value is read as
    /// TOML (`0.1`, `true`, `[3, 4, 5]`, `"mean"`); anything else is taken as a string.
    pub fn with_settings(&self, settings: &[String]) -> Result<Self> {
        let mut cfg = self.clone();
        for setting in settings {
            cfg = cfg.merged(&setting_toml(setting)?).with_context(|| format!("--set {setting}"))?;
        }
        Ok(cfg)
    }

    /// Rejects impossible sizes with a message that names the key.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        if m.d_model == 0 {
            bail!("model.d_model must be positive");
        }
        m.transformer.validate(m.d_model, m.backbone == BackboneKind::Transformer)?;
        if m.max_len < 8 {
            bail!("model.max_len must be at least 8 (got {})", m.max_len);
        }
        if m.max_positions != 0 && m.max_positions < m.max_len {
            bail!("model.max_len ({}) exceeds the position table (model.max_positions = {})", m.max_len, m.max_positions);
        }
        if m.backbone == BackboneKind::TextCnn {
            m.textcnn.validate(m.max_len)?;
            // Refused rather than ignored: the TextCNN's one pooling is max-over-time.
            if m.transformer.pooling != Pooling::Cls {
                bail!("model.pooling (--pooling) applies to the transformer backbone; the textcnn always pools by max-over-time");
            }
        }
        if !(0.0..1.0).contains(&m.dropout) {
            bail!("model.dropout must be in [0, 1) (got {})", m.dropout);
        }
        let p = &self.pretrain;
        p.optim.validate("pretrain")?;
        self.finetune.optim.validate("finetune")?;
        if !(p.mask_prob > 0.0 && p.mask_prob < 1.0) {
            bail!("pretrain.mask_prob must be in (0, 1) (got {})", p.mask_prob);
        }
        if p.max_predictions == 0 {
            bail!("pretrain.max_predictions must be positive");
        }
        if !p.word_list.is_empty() && !p.whole_word_mask {
            bail!("pretrain.word_list needs whole_word_mask (--whole-word-mask)");
        }
        if m.type_vocab_size != 0 && m.type_vocab_size != 2 {
            bail!("model.type_vocab_size must be 0 (no segments) or 2 (got {})", m.type_vocab_size);
        }
        if p.tasks.is_empty() {
            bail!("pretrain.tasks must name at least one objective (mlm, nsp, electra)");
        }
        if p.has(Objective::Mlm) && p.has(Objective::Electra) {
            bail!("pretrain.tasks: electra replaces mlm (its generator is the masked LM); choose one");
        }
        if !(p.generator_size > 0.0 && p.generator_size <= 1.0) {
            bail!("pretrain.generator_size must be in (0, 1] (got {})", p.generator_size);
        }
        if !(p.rtd_weight > 0.0 && p.rtd_weight.is_finite()) {
            bail!("pretrain.rtd_weight must be positive (got {})", p.rtd_weight);
        }
        if p.has(Objective::Nsp) && m.type_vocab_size != 2 {
            bail!("pretrain.tasks has nsp, which needs segment embeddings (model.type_vocab_size = 2)");
        }
        if !(0.0..=1.0).contains(&p.short_seq_prob) {
            bail!("pretrain.short_seq_prob must be in [0, 1] (got {})", p.short_seq_prob);
        }
        if let Some(o) = p.kept_heads.iter().find(|o| !matches!(o, Objective::Mlm | Objective::Nsp)) {
            bail!("pretrain.kept_heads: only the mlm and nsp heads can be kept untrained (got {o})");
        }
        if !(p.time_budget >= 0.0 && p.time_budget.is_finite()) {
            bail!("pretrain.time_budget must be a number of seconds ≥ 0 (got {})", p.time_budget);
        }
        if p.time_budget > 0.0 && p.valid_fraction == 0.0 {
            bail!("pretrain.time_budget needs held-out sequences to measure a step on (pretrain.valid_fraction > 0)");
        }
        if !(0.0..0.5).contains(&p.valid_fraction) {
            bail!("pretrain.valid_fraction must be in [0, 0.5) (got {})", p.valid_fraction);
        }
        if !(0.0..=1.0).contains(&self.finetune.threshold) {
            bail!("finetune.threshold must be in [0, 1]");
        }
        let f = &self.finetune;
        if !(f.asl_gamma_neg >= 0.0 && f.asl_gamma_pos >= 0.0 && f.asl_gamma_neg.is_finite() && f.asl_gamma_pos.is_finite()) {
            bail!("finetune.asl_gamma_neg and finetune.asl_gamma_pos must be ≥ 0");
        }
        if !(0.0..0.5).contains(&f.asl_clip) {
            bail!("finetune.asl_clip must be in [0, 0.5) (got {})", f.asl_clip);
        }
        if !(0.0..=1.0).contains(&f.backbone_lr_scale) {
            bail!("finetune.backbone_lr_scale must be in [0, 1] (got {})", f.backbone_lr_scale);
        }
        if !(0.0..1.0).contains(&f.ema) {
            bail!("finetune.ema must be in [0, 1) (got {}; 0 turns the weight average off)", f.ema);
        }
        Ok(())
    }

    /// The same preset for another backbone.
    pub fn with_backbone(mut self, backbone: BackboneKind) -> Self {
        self.model.backbone = backbone;
        self
    }

    /// Reads a saved `config.toml` exactly (no preset underneath).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
        // serde cannot refuse unknown keys in sections with flattened parts: every key read
        // must be one this config writes
        let read: toml::Table = toml::from_str(&text)?;
        let known = toml::Table::try_from(&cfg)?;
        for (section, keys) in &read {
            if let (toml::Value::Table(keys), Some(toml::Value::Table(known))) = (keys, known.get(section)) {
                if let Some(k) = keys.keys().find(|k| !Self::is_known_key(known, section, k)) {
                    bail!("{}: unknown key '{k}' in [{section}]", path.display());
                }
            }
        }
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// The TOML text of one `section.key=value` setting.
fn setting_toml(setting: &str) -> Result<String> {
    let (path, value) = setting.split_once('=').ok_or_else(|| anyhow::anyhow!("--set {setting}: expected SECTION.KEY=VALUE"))?;
    let (section, key) = path.trim().split_once('.').ok_or_else(|| anyhow::anyhow!("--set {setting}: expected SECTION.KEY=VALUE (e.g. finetune.lr=3e-4)"))?;
    let bare = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !bare(section) || !bare(key) {
        bail!("--set {setting}: section and key are names (letters, digits, _ and -)");
    }
    let value = value.trim();
    let literal = if toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok() { value.to_owned() } else { toml::Value::String(value.to_owned()).to_string() };
    Ok(format!("[{section}]\n{key} = {literal}\n"))
}

/// Folds a multi-line parser message onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_original_shapes() {
        let big = Config::preset(Preset::Big).model;
        assert_eq!((big.d_model, big.transformer.n_heads, big.d_model / big.transformer.n_heads, big.transformer.n_layers, big.transformer.d_ff), (512, 8, 64, 6, 2048));
        let small = Config::preset(Preset::Small).model;
        assert_eq!((small.d_model, small.d_model / small.transformer.n_heads), (128, 16));
        let tiny = Config::preset(Preset::Tiny).model;
        assert_eq!((tiny.d_model, tiny.d_model / tiny.transformer.n_heads, tiny.transformer.d_ff), (64, 8, 256));
        let c = Config::preset(Preset::Small);
        assert!(c.finetune.optim.lr < c.pretrain.optim.lr);
    }

    #[test]
    fn settings_left_out_at_their_default_can_still_be_given() {
        // each key a config file omits at its default, given a non-default value…
        let given = ["model.max_positions=512", "model.activation=\"gelu-tanh\"", "model.layer_norm_eps=1e-5", "model.activation_dropout=0", "pretrain.generator_size=0.5", "pretrain.rtd_weight=20", "pretrain.time_budget=60", "pretrain.kept_heads=[\"nsp\"]", "pretrain.precision=bf16", "finetune.precision=bf16"];
        let c = Config::preset(Preset::Tiny).with_settings(&given.map(String::from)).unwrap();
        assert_eq!((c.model.max_positions, c.model.transformer.activation, c.model.transformer.layer_norm_eps), (512, Activation::GeluTanh, 1e-5));
        assert_eq!((c.model.activation_dropout(), c.model.dropout), (0.0, 0.1));
        assert_eq!((c.pretrain.generator_size, c.pretrain.rtd_weight, c.pretrain.time_budget), (0.5, 20.0, 60.0));
        assert_eq!(c.pretrain.kept_heads, vec![Objective::Nsp]);
        assert_eq!((c.pretrain.optim.precision, c.finetune.optim.precision), (Precision::Bf16, Precision::Bf16));
        // …or its default, in a --config file and in a saved model's config.toml
        let defaults = "[model]\nmax_positions = 0\nactivation = \"gelu\"\nlayer_norm_eps = 1e-12\n[pretrain]\ngenerator_size = 0.25\nrtd_weight = 50.0\ntime_budget = 0.0\nkept_heads = []\nprecision = \"f32\"\n[finetune]\nprecision = \"f32\"\n";
        assert_eq!(Config::preset(Preset::Tiny).merged(defaults).unwrap(), Config::preset(Preset::Tiny));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, Config::preset(Preset::Tiny).to_toml() + "\n").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text.replace("[pretrain]\n", "[pretrain]\ntime_budget = 0.0\n").replace("[model]\n", "[model]\nmax_positions = 0\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(Config::load(&path).unwrap(), Config::preset(Preset::Tiny));
        // every field serde leaves out at its default is in the list
        let source = include_str!("config.rs");
        let skipped = source.matches(concat!("skip_serializing", "_if")).count();
        // (the optimiser's settings are keys of two sections, listed for each)
        let keys: std::collections::BTreeSet<&str> = UNWRITTEN_AT_DEFAULT.iter().map(|&(_, key)| key).collect();
        assert_eq!(skipped, keys.len(), "a setting left out at its default is missing from UNWRITTEN_AT_DEFAULT");
        // and a key that is no setting is still refused
        assert!(Config::preset(Preset::Tiny).with_settings(&["pretrain.time_budgett=1".into()]).is_err());
    }

    #[test]
    fn settings_override_like_a_file() {
        let base = Config::preset(Preset::Tiny);
        let c = base.with_settings(&["model.n_layers=3".into(), "finetune.pooling_unused=1".into()]);
        assert!(c.unwrap_err().to_string().contains("--set finetune.pooling_unused=1"));
        let c = base.with_settings(&["model.n_layers=3".into(), "pretrain.lr=0.01".into(), "model.pooling=mean".into(), "model.filter_widths=[2, 3]".into()]).unwrap();
        assert_eq!(c, base.merged("[model]\nn_layers = 3\npooling = \"mean\"\nfilter_widths = [2, 3]\n[pretrain]\nlr = 0.01\n").unwrap());
        assert!(base.with_settings(&["lr=0.1".into()]).unwrap_err().to_string().contains("SECTION.KEY=VALUE"));
        assert!(base.with_settings(&["model.n_layers=many".into()]).is_err(), "a string where a number belongs");
    }

    #[test]
    fn precision_is_a_training_setting_written_only_when_not_f32() {
        let base = Config::preset(Preset::Tiny);
        assert!(!base.to_toml().contains("precision"), "configs written at the default stay as they were");
        let c = base.with_settings(&["finetune.precision=bf16".into()]).unwrap();
        assert_eq!((c.pretrain.optim.precision, c.finetune.optim.precision), (Precision::F32, Precision::Bf16));
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert!(base.with_settings(&["pretrain.precision=fp8".into()]).is_err());
    }

    #[test]
    fn toml_overrides_and_errors() {
        let c = Config::preset(Preset::Tiny).merged("[model]\nn_layers = 3\n[pretrain]\nlr = 0.01\n").unwrap();
        assert_eq!(c.model.transformer.n_layers, 3);
        assert_eq!(c.pretrain.optim.lr, 0.01);
        assert_eq!(c.model.d_model, 64);
        let e = Config::preset(Preset::Tiny).merged("[model]\nlayers = 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown key 'layers'"), "{e}");
        let e = Config::preset(Preset::Tiny).merged("[optim]\nx = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown section"), "{e}");
        let c = Config::preset(Preset::Tiny).merged("[model]\nd_model = 60\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("divisible"));
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let c = Config::preset(Preset::Tiny).merged("[finetune]\nbackbone_lr_scale = 1.5\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("finetune.backbone_lr_scale must be in [0, 1] (got 1.5)"));
        // configs saved before the setting existed read as a backbone at the full rate
        let mut old = toml::Value::try_from(Config::preset(Preset::Small)).unwrap();
        old["finetune"].as_table_mut().unwrap().remove("backbone_lr_scale");
        let old: Config = old.try_into().unwrap();
        assert_eq!(old.finetune.backbone_lr_scale, 1.0);
    }
}
