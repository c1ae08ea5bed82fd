//! Training loops: masked-LM pre-training and classification fine-tuning.
//!
//! The loops are written here rather than with burn-train's `Learner`: they need step-level
//! stopping (`max_steps`), exact epoch-level F1 over the whole validation set for model
//! selection and early stopping, and bertlu's own model-directory layout (config + tokenizer +
//! labels + weights, written atomically).

pub mod finetune;
pub mod optim;
pub mod pretrain;
pub mod progress;

/// Options every training run shares.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
}

/// Logs a line to stdout unless quiet.
pub(crate) fn say(opts: &RunOptions, line: &str) {
    if !opts.quiet {
        println!("{line}");
    }
}

/// The training device (autodiff over the default backend) and its plain twin for evaluation.
pub fn devices() -> (burn::tensor::Device, burn::tensor::Device) {
    let plain = crate::device::default_device();
    (plain.clone().autodiff(), plain)
}
