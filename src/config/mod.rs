//! One place where defaults live: model presets, training settings and their TOML form. Each
//! section of a `config.toml` is a file here (`model`, `pretrain`, `finetune`, and the optimiser
//! settings the last two share); this one holds the whole config, the presets, and the file and
//! `--set` overrides.

mod finetune;
mod model;
mod optim;
mod pretrain;

pub use finetune::{FinetuneConfig, HeadKind, MultiLabelLoss};
pub use model::{Activation, BackboneKind, ModelConfig, Pooling, TextCnnConfig, TransformerConfig, BERT_LAYER_NORM_EPS};
pub use optim::{OptimConfig, Precision};
pub use pretrain::{Objective, PretrainConfig, DEFAULT_GENERATOR_SIZE, DEFAULT_RTD_WEIGHT};

use anyhow::{bail, Context, Result};
use finetune::{default_asl_clip, default_asl_gamma_neg, default_backbone_lr_scale, default_teacher_weight};
use model::default_filter_widths;
use pretrain::{default_short_seq_prob, default_tasks};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    ("finetune", "keep_epochs"),
    ("finetune", "teacher_weight"),
];

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
                keep_epochs: false,
                head: HeadKind::Pooled,
                teacher_weight: default_teacher_weight(),
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
        self.model.validate()?;
        self.pretrain.validate(&self.model)?;
        self.finetune.validate()
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
        let given = ["model.max_positions=512", "model.activation=\"gelu-tanh\"", "model.layer_norm_eps=1e-5", "model.activation_dropout=0", "pretrain.generator_size=0.5", "pretrain.rtd_weight=20", "pretrain.time_budget=60", "pretrain.kept_heads=[\"nsp\"]", "pretrain.precision=bf16", "finetune.precision=bf16", "finetune.teacher_weight=0.8"];
        let c = Config::preset(Preset::Tiny).with_settings(&given.map(String::from)).unwrap();
        assert_eq!((c.model.max_positions, c.model.transformer.activation, c.model.transformer.layer_norm_eps), (512, Activation::GeluTanh, 1e-5));
        assert_eq!((c.model.activation_dropout(), c.model.dropout), (0.0, 0.1));
        assert_eq!((c.pretrain.generator_size, c.pretrain.rtd_weight, c.pretrain.time_budget), (0.5, 20.0, 60.0));
        assert_eq!(c.pretrain.kept_heads, vec![Objective::Nsp]);
        assert_eq!((c.pretrain.optim.precision, c.finetune.optim.precision), (Precision::Bf16, Precision::Bf16));
        assert_eq!(c.finetune.teacher_weight, 0.8);
        // …or its default, in a --config file and in a saved model's config.toml
        let defaults = "[model]\nmax_positions = 0\nactivation = \"gelu\"\nlayer_norm_eps = 1e-12\n[pretrain]\ngenerator_size = 0.25\nrtd_weight = 50.0\ntime_budget = 0.0\nkept_heads = []\nprecision = \"f32\"\n[finetune]\nprecision = \"f32\"\nteacher_weight = 0.5\n";
        assert_eq!(Config::preset(Preset::Tiny).merged(defaults).unwrap(), Config::preset(Preset::Tiny));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, Config::preset(Preset::Tiny).to_toml() + "\n").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text.replace("[pretrain]\n", "[pretrain]\ntime_budget = 0.0\n").replace("[model]\n", "[model]\nmax_positions = 0\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(Config::load(&path).unwrap(), Config::preset(Preset::Tiny));
        // every field serde leaves out at its default is in the list
        let sources = [include_str!("model.rs"), include_str!("optim.rs"), include_str!("pretrain.rs"), include_str!("finetune.rs"), include_str!("mod.rs")];
        let skipped: usize = sources.iter().map(|s| s.matches(concat!("skip_serializing", "_if")).count()).sum();
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
