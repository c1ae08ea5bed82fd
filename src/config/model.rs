//! `[model]`: the backbone's shape, the Transformer's and the TextCNN's own settings.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

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

pub(super) fn default_filter_widths() -> Vec<usize> {
    vec![3, 4, 5]
}

fn default_filters() -> usize {
    128
}

impl ModelConfig {
    /// The same model reading texts of up to `max_len` pieces at prediction instead of the
    /// `max_len` it was trained with: a Transformer's position table keeps its rows (so a longer
    /// `max_len` must fit in them: an imported BERT's 512), a TextCNN reads any length from its
    /// widest filter up.
    pub fn reading(&self, max_len: usize) -> Result<Self> {
        let mut m = self.clone();
        if m.backbone == BackboneKind::Transformer {
            m.max_positions = m.positions();
        }
        m.max_len = max_len;
        m.validate()?;
        Ok(m)
    }

    /// Rejects impossible sizes with a message that names the key.
    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 {
            bail!("model.d_model must be positive");
        }
        self.transformer.validate(self.d_model, self.backbone == BackboneKind::Transformer)?;
        if self.max_len < 8 {
            bail!("model.max_len must be at least 8 (got {})", self.max_len);
        }
        if self.max_positions != 0 && self.max_positions < self.max_len {
            bail!("model.max_len ({}) exceeds the position table (model.max_positions = {})", self.max_len, self.max_positions);
        }
        if self.backbone == BackboneKind::TextCnn {
            self.textcnn.validate(self.max_len)?;
            // Refused rather than ignored: the TextCNN's one pooling is max-over-time.
            if self.transformer.pooling != Pooling::Cls {
                bail!("model.pooling (--pooling) applies to the transformer backbone; the textcnn always pools by max-over-time");
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("model.dropout must be in [0, 1) (got {})", self.dropout);
        }
        if self.type_vocab_size != 0 && self.type_vocab_size != 2 {
            bail!("model.type_vocab_size must be 0 (no segments) or 2 (got {})", self.type_vocab_size);
        }
        Ok(())
    }

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
