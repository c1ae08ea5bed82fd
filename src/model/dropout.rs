//! Inverted dropout with a cheap, seeded mask generator.
//!
//! Burn's `Dropout` draws every element of its mask from a ChaCha generator through a generic
//! sampler; on the CPU that was a quarter of a Transformer training step. Here the mask is drawn
//! from a small fast generator (xoshiro256++, 32 bits an element), already scaled by
//! `1 / (1 - p)`, and applied with one multiplication. The generator lives in the calling thread
//! and is reseeded by the training loops at every step ([`seed`]), so a step's dropout depends on
//! the seed and the step alone (what a resumed run needs) and parallel tests do not disturb
//! each other.

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use crate::model::kernels::{self, mask::masked};
use std::cell::RefCell;

thread_local! {
    static GENERATOR: RefCell<SmallRng> = RefCell::new(SmallRng::seed_from_u64(0));
}

/// Reseeds this thread's dropout generator.
pub fn seed(seed: u64) {
    GENERATOR.with(|g| *g.borrow_mut() = SmallRng::seed_from_u64(seed));
}

/// Draws the base seed of the next mask from this thread's generator.
pub(crate) fn next_base() -> u64 {
    GENERATOR.with(|g| g.borrow_mut().next_u64())
}

/// A mask of `n` values: 0 with probability `prob` (to 1/65536), else `1 / (1 - prob)`.
pub fn mask(n: usize, prob: f64) -> Vec<f32> {
    mask_of(next_base(), n, prob)
}

/// The mask of `n` values drawn from `base` (see [`masked`]).
fn mask_of(base: u64, n: usize, prob: f64) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    masked(base, prob, None, &mut out);
    out
}

/// Dropout layer: active only on a device that records gradients (training); the identity in
/// validation and inference.
#[derive(Module, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    #[module(skip)]
    pub prob: f64,
}

impl Dropout {
    /// A layer dropping with probability `prob` (in `[0, 1)`).
    pub fn new(prob: f64) -> Self {
        assert!((0.0..1.0).contains(&prob), "dropout probability must be in [0, 1), got {prob}");
        Self { prob }
    }

    /// The mask this layer would draw for a tensor on `device`: its probability and seed (a
    /// fused kernel applies it itself), or `None` where the layer is the identity.
    pub fn draw(&self, device: &Device) -> Option<(f64, u64)> {
        (self.prob > 0.0 && device.is_autodiff()).then(|| (self.prob, next_base()))
    }

    /// Zeroes each element with probability `prob` and scales the rest by `1 / (1 - prob)`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let device = input.device();
        let Some((prob, base)) = self.draw(&device) else { return input };
        if kernels::applies(&input) {
            // one parallel pass that draws and applies the mask; the backward pass redraws it
            return kernels::dropout(input, prob, base);
        }
        let shape = input.shape();
        let m = Tensor::<D>::from_data(TensorData::new(mask_of(base, shape.num_elements(), prob), shape), &device);
        input * m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_drops_the_asked_share_and_keeps_the_expectation() {
        seed(7);
        let m = mask(200_001, 0.1);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.003, "dropped share {dropped}");
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn same_seed_same_mask_other_seed_other_mask() {
        seed(3);
        let a = mask(1000, 0.5);
        seed(3);
        assert_eq!(a, mask(1000, 0.5));
        seed(4);
        assert_ne!(a, mask(1000, 0.5));
    }

    #[test]
    fn identity_without_autodiff_and_gradient_follows_the_mask() {
        let plain = Device::flex();
        let x = Tensor::<2>::ones([4, 8], &plain);
        let d = Dropout::new(0.5);
        assert_eq!(d.forward(x.clone()).into_data(), x.into_data());

        let ad = Device::flex().autodiff();
        seed(11);
        let x = Tensor::<2>::ones([4, 8], &ad).require_grad();
        let y = d.forward(x.clone());
        let out: Vec<f32> = y.clone().into_data().try_to_vec().unwrap();
        let grads = y.sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(out, g, "d(sum(dropout(x)))/dx is the mask itself");
        assert!(out.iter().any(|&v| v == 0.0) && out.iter().any(|&v| v == 2.0));
        // the fused path applies exactly the mask `mask` draws from the same seed
        seed(11);
        assert_eq!(out, mask(32, 0.5));
        // and its gradient follows the mask for any upstream gradient
        seed(12);
        let x = Tensor::<2>::random([300, 700], burn::tensor::Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let up = Tensor::<2>::random([300, 700], burn::tensor::Distribution::Normal(0.0, 1.0), &ad);
        let y = Dropout::new(0.1).forward(x.clone());
        let grads = (y.clone() * up.clone()).sum().backward();
        seed(12);
        let m = Tensor::<2>::from_data(TensorData::new(mask(300 * 700, 0.1), [300, 700]), &ad);
        let d1: f32 = (y.inner() - (x.clone().inner() * m.clone().inner())).abs().max().into_scalar();
        let d2: f32 = (x.grad(&grads).unwrap() - (up.inner() * m.inner())).abs().max().into_scalar();
        assert!(d1 == 0.0 && d2 == 0.0, "values {d1}, gradients {d2}");
    }
}
