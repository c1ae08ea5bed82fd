//! An exponential moving average of a model's weights (Polyak averaging).
//!
//! At a high learning rate the last step's weights carry the noise of the last batches; their
//! running average over roughly `1 / (1 - decay)` steps scores like an ensemble of the recent
//! models at the cost of one. The average follows TensorFlow's `ExponentialMovingAverage` with
//! `num_updates`: early on the decay is `min(decay, (1 + t) / (10 + t))`, so the first steps are
//! not averaged with the random starting weights for long.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use std::collections::HashMap;

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
        let mut current = Collect(HashMap::new());
        model.valid().visit(&mut current);
        let average = self.average.clone();
        self.average = average.map(&mut Blend { d, current: current.0 });
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

/// Every float parameter, flattened, by id.
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.0.insert(param.id, v.reshape([n]));
    }
}

/// Blends each float parameter with the one of the same id.
struct Blend {
    d: f64,
    current: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(w) = self.current.remove(&param.id) else {
            panic!("moving average: parameter {} is missing from the trained model", param.id);
        };
        let d = self.d;
        param.map(|avg| {
            let shape = avg.shape();
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
}
