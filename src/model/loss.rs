//! Multi-label training losses on logits: binary cross-entropy and the asymmetric loss.

use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};

/// Which loss scores a multi-label batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelLoss {
    /// Mean binary cross-entropy over every (example, label) cell.
    Bce,
    /// Asymmetric loss (Ridnik et al., ICCV 2021), averaged like BCE. With `p` the predicted
    /// probability: a positive costs `−(1−p)^gamma_pos · log p`; a negative costs
    /// `−p_m^gamma_neg · log(1−p_m)` with `p_m = max(p − clip, 0)`. With 262 labels and 2–6
    /// positives an example, almost every cell is an easy negative; BCE spends most of its
    /// gradient on them, this loss spends it on positives and hard negatives.
    Asymmetric {
        /// Focusing exponent of the negatives.
        gamma_neg: f64,
        /// Focusing exponent of the positives.
        gamma_pos: f64,
        /// Probability margin under which a negative costs nothing.
        clip: f64,
    },
}

impl LabelLoss {
    /// Mean loss of `logits` `[batch, labels]` against 0/1 `targets` of the same shape, `[1]`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<1> {
        match *self {
            LabelLoss::Bce => BinaryCrossEntropyLossConfig::new().with_logits(true).init(&logits.device()).forward(logits, targets),
            LabelLoss::Asymmetric { .. } => self.forward_soft(logits, targets.float()),
        }
    }

    /// [`Self::forward`] against targets anywhere in [0, 1] (a teacher's probabilities, for
    /// distillation): every cell costs `y ·` its positive term `+ (1 − y) ·` its negative term,
    /// which for 0/1 targets is the same loss.
    pub fn forward_soft(&self, logits: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
        match *self {
            LabelLoss::Bce => {
                let ones = y.ones_like();
                (y.clone() * log_sigmoid(logits.clone()) + (ones - y) * log_sigmoid(logits.neg())).mean().neg()
            }
            LabelLoss::Asymmetric { gamma_neg, gamma_pos, clip } => {
                let p = sigmoid(logits.clone());
                let mut pos = log_sigmoid(logits.clone());
                if gamma_pos > 0.0 {
                    pos = pos * p.clone().neg().add_scalar(1.0).powf_scalar(gamma_pos);
                }
                let (p_m, log_not) = if clip > 0.0 {
                    let p_m = p.sub_scalar(clip).clamp_min(0.0);
                    // 1 − p_m ≥ clip, so the log is finite
                    let log_not = p_m.clone().neg().add_scalar(1.0).log();
                    (p_m, log_not)
                } else {
                    (p, log_sigmoid(logits.neg()))
                };
                let neg = if gamma_neg > 0.0 { log_not * p_m.powf_scalar(gamma_neg) } else { log_not };
                let ones = y.ones_like();
                (y.clone() * pos + (ones - y) * neg).mean().neg()
            }
        }
    }
}

impl LabelLoss {
    /// The multi-label loss a fine-tuning config asks for.
    pub fn of(f: &crate::config::FinetuneConfig) -> Self {
        match f.loss {
            crate::config::MultiLabelLoss::Bce => LabelLoss::Bce,
            crate::config::MultiLabelLoss::Asl => LabelLoss::Asymmetric { gamma_neg: f.asl_gamma_neg, gamma_pos: f.asl_gamma_pos, clip: f.asl_clip },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensors(logits: &[f32], targets: &[i64], d: &Device) -> (Tensor<2>, Tensor<2, Int>) {
        let n = logits.len();
        (Tensor::from_data(TensorData::new(logits.to_vec(), [1, n]), d), Tensor::from_data(TensorData::new(targets.to_vec(), [1, n]), d))
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn asymmetric_loss_matches_hand_computation() {
        let d = Device::flex();
        let xs = [2.0f32, -1.0, 0.5, -3.0];
        let ys = [1i64, 1, 0, 0];
        let (g_neg, g_pos, clip) = (4.0, 1.0, 0.05);
        let (l, t) = tensors(&xs, &ys, &d);
        let got: f32 = LabelLoss::Asymmetric { gamma_neg: g_neg, gamma_pos: g_pos, clip }.forward(l, t).into_scalar();
        let mut want = 0.0;
        for (&x, &y) in xs.iter().zip(&ys) {
            let p = sig(x as f64);
            want += if y == 1 {
                -(1.0 - p).powf(g_pos) * p.ln()
            } else {
                let pm = (p - clip).max(0.0);
                -pm.powf(g_neg) * (1.0 - pm).ln()
            };
        }
        want /= xs.len() as f64;
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn asymmetric_loss_without_focusing_is_bce() {
        let d = Device::flex();
        let xs = [1.5f32, -0.7, 0.2, -2.5, 4.0];
        let ys = [1i64, 0, 0, 1, 0];
        let (l, t) = tensors(&xs, &ys, &d);
        let bce: f32 = LabelLoss::Bce.forward(l.clone(), t.clone()).into_scalar();
        let asl: f32 = LabelLoss::Asymmetric { gamma_neg: 0.0, gamma_pos: 0.0, clip: 0.0 }.forward(l, t).into_scalar();
        assert!((bce - asl).abs() < 1e-6, "{bce} vs {asl}");
    }

    #[test]
    fn soft_targets_of_zero_or_one_are_the_hard_loss_and_between_them_mix_its_terms() {
        let d = Device::flex();
        let xs = [1.5f32, -0.7, 0.2, -2.5, 4.0, 0.0];
        let ys = [1i64, 0, 0, 1, 0, 1];
        let (l, t) = tensors(&xs, &ys, &d);
        let asl = LabelLoss::Asymmetric { gamma_neg: 4.0, gamma_pos: 1.0, clip: 0.05 };
        for loss in [LabelLoss::Bce, asl] {
            let hard: f32 = loss.forward(l.clone(), t.clone()).into_scalar();
            let soft: f32 = loss.forward_soft(l.clone(), t.clone().float()).into_scalar();
            assert!((hard - soft).abs() < 1e-6, "{loss:?}: {hard} vs {soft}");
        }
        // BCE against y = 0.3: −(0.3 · log p + 0.7 · log(1 − p)) a cell, by hand
        let y = 0.3f64;
        let want: f64 = xs.iter().map(|&x| -(y * sig(x as f64).ln() + (1.0 - y) * (1.0 - sig(x as f64)).ln())).sum::<f64>() / xs.len() as f64;
        let soft = Tensor::<2>::from_data(TensorData::new(vec![y as f32; xs.len()], [1, xs.len()]), &d);
        let got: f32 = LabelLoss::Bce.forward_soft(l, soft).into_scalar();
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn the_soft_bce_gradient_is_the_distance_to_the_target() {
        let d = Device::flex().autodiff();
        let xs = [2.0f32, -1.0, 0.5, -3.0];
        let ys = [0.9f32, 0.2, 0.5, 0.0];
        let l = Tensor::<2>::from_data(TensorData::new(xs.to_vec(), [2, 2]), &d).require_grad();
        let y = Tensor::<2>::from_data(TensorData::new(ys.to_vec(), [2, 2]), &d);
        let grads = LabelLoss::Bce.forward_soft(l.clone(), y).backward();
        let g: Vec<f32> = l.grad(&grads).unwrap().into_data().convert::<f32>().try_into_vec().unwrap();
        for ((&x, &y), g) in xs.iter().zip(&ys).zip(g) {
            let want = (sig(x as f64) - y as f64) / xs.len() as f64;
            assert!((g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    #[test]
    fn easy_negatives_cost_nothing_below_the_margin() {
        let d = Device::flex().autodiff();
        // p = sigmoid(-4) ≈ 0.018 < clip 0.05: zero loss and zero gradient
        let (l, t) = tensors(&[-4.0, -5.0], &[0, 0], &d);
        let l = l.require_grad();
        let loss = LabelLoss::Asymmetric { gamma_neg: 4.0, gamma_pos: 0.0, clip: 0.05 }.forward(l.clone(), t);
        assert_eq!(loss.clone().into_scalar::<f32>(), 0.0);
        let grads = loss.backward();
        let g: Vec<f32> = l.grad(&grads).unwrap().into_data().convert::<f32>().try_into_vec().unwrap();
        assert!(g.iter().all(|v| *v == 0.0), "{g:?}");
    }
}
