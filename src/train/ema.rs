//! An exponential moving average of a model's weights (Polyak averaging).
//!
//! At a high learning rate the last step's weights carry the noise of the last batches; their
//! running average over roughly `1 / (1 - decay)` steps scores like an ensemble of the recent
//! models at the cost of one. The average follows TensorFlow's `ExponentialMovingAverage` with
//! `num_updates`: early on the decay is `min(decay, (1 + t) / (10 + t))`, so the first steps are
//! not averaged with the random starting weights for long. [`mean_of`] is the plain mean of
//! finished models (checkpoint averaging), the same blend with the decay `k / (k + 1)`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use std::collections::VecDeque;

/// The averaged weights of a module of type `M`, kept without gradients.
#[derive(Clone)]
pub struct Ema<M> {
    decay: f64,
    updates: u64,
    average: M,
}

impl<M: Module + Clone> Ema<M> {
    /// Starts the average at `model`'s weights, with `updates` steps already averaged
    /// (0 for a new run; the step count when resuming).
    pub fn new(model: &M, decay: f64, updates: u64) -> Self {
        Self { decay, updates, average: model.valid() }
    }

    /// The decay used for the next update.
    pub fn current_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves the average towards `model`'s weights: `avg ← d·avg + (1 − d)·w`.
    pub fn update(&mut self, model: &M) {
        let d = self.current_decay();
        self.average = blend(self.average.clone(), &model.valid(), d);
        self.updates += 1;
    }

    /// The averaged weights.
    pub fn model(&self) -> &M {
        &self.average
    }

    /// Replaces the averaged weights (a resumed run's, read from its checkpoint).
    pub fn with_average(self, average: M) -> Self {
        Self { average: average.valid(), ..self }
    }
}

/// The mean of the weights of `models` (two or more of one architecture, e.g. the same run's
/// epochs): one model that often scores above each of them, at the cost of one. Kept as a
/// running mean, so only one model beyond the mean need be in memory when `models` is lazy.
pub fn mean_of<M: Module>(models: impl IntoIterator<Item = M>) -> Option<M> {
    let mut mean: Option<M> = None;
    for (k, model) in models.into_iter().enumerate() {
        // the k-th model (from 0) weighs 1 / (k + 1): mean_k = k/(k+1) · mean_(k-1) + w_k/(k+1)
        mean = Some(match mean {
            None => model,
            Some(m) => blend(m, &model, k as f64 / (k as f64 + 1.0)),
        });
    }
    mean
}

/// `d · average + (1 − d) · model`, parameter by parameter. Both are modules of one type (their
/// parameters visited in one order); a shape that differs is a caller's bug.
fn blend<M: Module>(average: M, model: &M, d: f64) -> M {
    let mut current = Collect(VecDeque::new());
    model.visit(&mut current);
    average.map(&mut Blend { d, current: current.0 })
}

/// Every float parameter, flattened, in visiting order.
struct Collect(VecDeque<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.0.push_back(v.reshape([n]));
    }
}

/// Blends each float parameter with the next collected one.
struct Blend {
    d: f64,
    current: VecDeque<Tensor<1>>,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let w = self.current.pop_front().expect("weight average: the two modules have the same parameters");
        let d = self.d;
        param.map(|avg| {
            let shape = avg.shape();
            assert_eq!(shape.num_elements(), w.shape().num_elements(), "weight average: parameters of one shape");
            avg.mul_scalar(d).add(w.reshape(shape).mul_scalar(1.0 - d))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneKind, Config, Preset};
    use crate::model::Classifier;

    fn weights<M: Module>(m: &M) -> Vec<f32> {
        struct Flat(Vec<f32>);
        impl ModuleVisitor for Flat {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.extend(p.val().into_data().try_into_vec::<f32>().unwrap());
            }
        }
        let mut f = Flat(Vec::new());
        m.visit(&mut f);
        f.0
    }

    /// Every weight multiplied by `k` (ids kept, as an optimiser step keeps them).
    struct Scale(f32);
    impl ModuleMapper for Scale {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let k = self.0;
            p.map(|t| t.mul_scalar(k))
        }
    }

    #[test]
    fn the_average_follows_the_weights_at_the_warm_decay() {
        let (device, _) = crate::train::devices();
        device.seed(5);
        let mut cfg = Config::preset(Preset::Tiny).model;
        cfg.backbone = BackboneKind::TextCnn;
        cfg.vocab_size = 30;
        let model = Classifier::init(&cfg, 3, &device);
        let w0 = weights(&model);
        let mut ema = Ema::new(&model, 0.99, 0);
        // first decay: min(0.99, 1/10)
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        let doubled = model.clone().map(&mut Scale(2.0));
        ema.update(&doubled);
        // 0.1·w + 0.9·2w = 1.9w
        for (a, w) in weights(ema.model()).iter().zip(&w0) {
            assert!((a - 1.9 * w).abs() <= 1e-5 * w.abs().max(1.0), "{a} vs {}", 1.9 * w);
        }
        // second decay 2/11; then the cap: after many updates the decay is 0.99
        assert!((ema.current_decay() - 2.0 / 11.0).abs() < 1e-12);
        ema.update(&doubled);
        let expect = 2.0 / 11.0 * 1.9 + 9.0 / 11.0 * 2.0;
        for (a, w) in weights(ema.model()).iter().zip(&w0) {
            assert!((a - expect as f32 * w).abs() <= 1e-5 * w.abs().max(1.0));
        }
        assert_eq!(Ema::new(&model, 0.99, 10_000).current_decay(), 0.99);
        // the model it follows is untouched
        assert_eq!(weights(&doubled), w0.iter().map(|w| 2.0 * w).collect::<Vec<_>>());
    }

    #[test]
    fn the_mean_of_models_is_their_plain_mean() {
        let (device, _) = crate::train::devices();
        let mut cfg = Config::preset(Preset::Tiny).model;
        cfg.vocab_size = 30;
        // three independently drawn models, not scalings of one another
        let models: Vec<Classifier> = [1, 2, 3]
            .iter()
            .map(|&seed| {
                device.seed(seed);
                Classifier::init(&cfg, 3, &device)
            })
            .collect();
        let w: Vec<Vec<f32>> = models.iter().map(weights).collect();
        assert!(w[0].iter().zip(&w[1]).any(|(a, b)| a != b));
        let mean = weights(&mean_of(models).unwrap());
        assert_eq!(mean.len(), w[0].len());
        for i in 0..mean.len() {
            let expect = (w[0][i] + w[1][i] + w[2][i]) / 3.0;
            assert!((mean[i] - expect).abs() <= 1e-6 * expect.abs().max(1.0), "{i}: {} vs {expect}", mean[i]);
        }
        assert!(mean_of(Vec::<Classifier>::new()).is_none());
    }
}
