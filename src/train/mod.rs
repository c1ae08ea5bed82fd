//! Training loops: pre-training (masked LM, next sentence) and classification fine-tuning.
//!
//! The loops are written here rather than with burn-train's `Learner`: they need step-level
//! stopping (`max_steps`), exact epoch-level F1 over the whole validation set for model
//! selection and early stopping, and bertlu's own model-directory layout (config + tokenizer +
//! labels + weights, written atomically).

pub mod ema;
pub mod driver;
pub mod finetune;
pub mod interrupt;
pub mod metrics_log;
pub mod optim;
pub mod pretrain;
pub mod progress;

/// Options every training run shares.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Training-state checkpoints (written only when the run has an output directory).
    pub checkpoints: crate::store::checkpoints::CheckpointPolicy,
    /// Continue from the newest checkpoint in the output directory.
    pub resume: bool,
    /// One JSON object a line on stdout instead of text lines (no progress bars).
    pub json_logs: bool,
}

impl RunOptions {
    /// Whether progress bars stay hidden.
    pub fn no_bars(&self) -> bool {
        self.quiet || self.json_logs
    }
}

/// A seed for item `k` of random stream `stream`, derived from the run's seed: every epoch's data
/// order and every step's masking and dropout get their own generator, so a resumed run draws
/// exactly what the uninterrupted one would have (no generator state to save).
pub fn derived_seed(seed: u64, stream: u64, k: u64) -> u64 {
    // splitmix64 finaliser over a mix of the three
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeds the randomness of training step `step` (dropout, and anything else drawn on the device)
/// from the run's seed alone.
pub(crate) fn seed_step(device: &burn::tensor::Device, seed: u64, step: usize) {
    let s = derived_seed(seed, streams::DROPOUT, step as u64);
    device.seed(s);
    crate::model::dropout::seed(s);
}

/// Random streams of [`derived_seed`].
pub mod streams {
    /// Batch order of an epoch.
    pub const ORDER: u64 = 1;
    /// Masking of a step's batch.
    pub const MASKING: u64 = 2;
    /// Dropout of a step.
    pub const DROPOUT: u64 = 3;
    /// Sentence pairs of a chunk of documents.
    pub const PAIRS: u64 = 4;
    /// ELECTRA generator samples of a step.
    pub const SAMPLES: u64 = 5;
    /// The masking draws that count an epoch's masked pieces (whole-word masking).
    pub const COUNTING: u64 = 6;
}

/// Logs a line to stdout unless quiet (as `{"event": "message", "text": …}` with JSON logs).
pub(crate) fn say(opts: &RunOptions, line: &str) {
    if opts.quiet {
    } else if opts.json_logs {
        println!("{}", serde_json::json!({ "event": "message", "text": line.trim() }));
    } else {
        println!("{line}");
    }
}

/// Sets the training products' precision for this run (see [`crate::model::kernels::precision_scope`])
/// and says what it is when it is not f32: bf16, or f32 because the CPU lacks the instructions.
pub(crate) fn precision(optim: &crate::config::OptimConfig, task: &str, opts: &RunOptions) -> crate::model::kernels::PrecisionScope {
    use crate::config::Precision;
    if let Some(note) = crate::model::kernels::bf16_unavailable(optim.precision, task, "training") {
        say(opts, &note);
    } else if optim.precision == Precision::Bf16 {
        say(opts, &format!("{task}: bf16 matrix products in the linear layers (f32 sums, f32 weights and optimiser state)"));
    }
    crate::model::kernels::precision_scope(optim.precision)
}

/// Logs an epoch's scores: `human` as text, or `record` as one JSON object with
/// `"event": "epoch"` and `"task"`.
pub(crate) fn log_epoch<T: serde::Serialize>(opts: &RunOptions, task: &str, human: &str, record: &T) {
    if opts.quiet {
    } else if opts.json_logs {
        let mut v = serde_json::to_value(record).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "epoch".into());
            o.insert("task".into(), task.into());
        }
        println!("{v}");
    } else {
        println!("{human}");
    }
}

/// The training device (autodiff over the default backend) and its plain twin for evaluation.
pub fn devices() -> (burn::tensor::Device, burn::tensor::Device) {
    let plain = crate::model::device::default_device();
    (plain.clone().autodiff(), plain)
}

