//! Every file and directory name bertlu writes, in one place.
//!
//! A model directory holds `config.toml`, `tokenizer.json`, `model.safetensors`, `model.json`
//! and, for a classifier, `labels.txt` (an ensemble: `members/`; a linear model: `terms.txt`,
//! `linear.bin`, `linear.json`). A training run's output directory adds `metrics.csv`,
//! `run.json`, `checkpoints/step-N/` while it runs and, on request, `epochs/epoch-N/`.

pub use crate::text::tokenizer::TOKENIZER_FILE;

/// A model's config.
pub const CONFIG_FILE: &str = "config.toml";
/// A model's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// A model's description (kind, problem, thresholds, weight-file length).
pub const META_FILE: &str = "model.json";
/// A classifier's label order.
pub const LABELS_FILE: &str = "labels.txt";
/// Where an ensemble keeps its members' directories.
pub const MEMBERS_DIR: &str = "members";

/// A linear model's vocabulary of features.
pub const TERMS_FILE: &str = "terms.txt";
/// A linear model's weights.
pub const LINEAR_WEIGHTS_FILE: &str = "linear.bin";
/// A linear model's settings and calibration.
pub const LINEAR_FILE: &str = "linear.json";

/// A run's training curve, a row every few steps and one an epoch.
pub const METRICS_FILE: &str = "metrics.csv";
/// What a run was given and how it ended.
pub const RUN_FILE: &str = "run.json";
/// Where `pretrain.keep_epochs` and `finetune.keep_epochs` keep each epoch's model.
pub const EPOCHS_DIR: &str = "epochs";

/// The training-state checkpoints of an unfinished run.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// A checkpoint's position and fingerprints.
pub const STATE_FILE: &str = "state.json";
/// A checkpoint's optimiser moments.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// `report`'s curves.
pub const REPORT_SVG: &str = "report.svg";
/// `report`'s summary.
pub const REPORT_MD: &str = "report.md";

/// `compare`'s table.
pub const COMPARE_TABLE_FILE: &str = "compare.md";
/// `compare`'s every epoch of every arm.
pub const COMPARE_EPOCHS_FILE: &str = "epochs.csv";
/// `compare`'s full record.
pub const COMPARE_JSON_FILE: &str = "compare.json";
/// Written into each pre-training or fine-tuning directory of a `compare` once that part has
/// finished (a fine-tuning run's holds its scores): what `compare --resume` reuses.
pub const COMPARE_PART_FILE: &str = "compare-part.json";
/// What a `compare` run was asked to do (settings, inputs' sizes and hashes), checked by
/// `compare --resume`.
pub const COMPARE_JOB_FILE: &str = "compare-job.json";

/// A HuggingFace checkpoint's model description.
pub const HF_CONFIG_FILE: &str = "config.json";
/// A HuggingFace checkpoint's weights.
pub const HF_WEIGHTS_FILE: &str = "model.safetensors";
/// The PyTorch pickle weights of older HuggingFace checkpoints (not read: converted first).
pub const HF_PICKLE_WEIGHTS_FILE: &str = "pytorch_model.bin";
/// A HuggingFace checkpoint's vocabulary, one token a line in id order.
pub const HF_VOCAB_FILE: &str = "vocab.txt";
/// A HuggingFace checkpoint's tokenizer settings (`do_lower_case`).
pub const HF_TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
