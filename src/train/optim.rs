//! Optimiser and learning-rate schedule shared by pre-training and fine-tuning.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};

/// AdamW (β 0.9/0.999, ε 1e-6 as in BERT) with decoupled weight decay and optional clipping
/// of each gradient tensor's norm.
pub fn adamw(weight_decay: f64, grad_clip: f64) -> ModuleOptimizer {
    let clip = (grad_clip > 0.0).then(|| GradientClippingConfig::Norm(grad_clip as f32));
    AdamWConfig::new().with_epsilon(1e-6).with_weight_decay(weight_decay as f32).with_grad_clipping(clip).init()
}

/// Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at `total`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl Schedule {
    /// A schedule whose warm-up is `warmup_ratio` of `total` steps (at least one step).
    pub fn new(peak: f64, warmup_ratio: f64, total: usize) -> Self {
        let warmup = ((total as f64 * warmup_ratio).round() as usize).max(1);
        Self { peak, warmup, total: total.max(1) }
    }

    /// Learning rate of 0-based step `step`.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            self.peak * (step + 1) as f64 / self.warmup as f64
        } else if step >= self.total {
            0.0
        } else {
            let rest = (self.total - self.warmup).max(1) as f64;
            self.peak * ((self.total - step) as f64 / rest).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = Schedule::new(1.0, 0.1, 100);
        assert_eq!(s.warmup, 10);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(55) - 0.5).abs() < 1e-12);
        assert!(s.lr(99) > 0.0 && s.lr(99) < 0.02);
        assert_eq!(s.lr(100), 0.0);
        assert!((0..99).all(|i| i < 9 && s.lr(i + 1) > s.lr(i) || i >= 10 && s.lr(i + 1) <= s.lr(i) || i == 9));
    }
}
