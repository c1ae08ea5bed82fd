//! Kim's TextCNN (2014): token embeddings, parallel 1-D convolutions of several widths, ReLU.
//! The convolutions are "same"-padded so every position keeps a state (the masked-LM task
//! predicts each masked token from its own window); the pooled vector is max-over-time.

use super::BackboneOutput;
use crate::data::batch::TokenBatch;
use crate::config::ModelConfig;
use crate::model::kernels;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, PaddingConfig1d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Larger than the Transformer's 0.02: with no LayerNorm after the embedding, 0.02 leaves the
/// convolutions' output dominated by their biases at the start. Measured on the Debtags demo
/// slice (small preset, 4 epochs): std 0.1 beats 0.02 from scratch (valid micro-F1 0.478 vs 0.461)
/// and in pre-training (masked-token accuracy 25.7 % vs 22.0 % after 654 steps). Kim used U(±0.25).
const EMBED_INIT: Initializer = Initializer::Normal { mean: 0.0, std: 0.1 };

/// The TextCNN backbone.
#[derive(Module, Debug)]
pub struct TextCnnBackbone {
    /// Word-piece embeddings `[vocab, d_model]`, tied to the masked-LM output.
    pub token_embedding: Embedding,
    /// Segment embeddings `[2, d_model]`, added to the token embeddings: A and B of a pair.
    pub segment_embedding: Option<Embedding>,
    /// One convolution a filter width, `d_model` → `filters` channels each.
    pub convs: Vec<Conv1d>,
}

impl TextCnnBackbone {
    /// Random initial weights for `config`.
    pub fn init(config: &ModelConfig, device: &Device) -> Self {
        Self {
            token_embedding: EmbeddingConfig::new(config.vocab_size, config.d_model).with_initializer(EMBED_INIT).init(device),
            // zeros: a single text then starts exactly as without segments (a random shared
            // vector added to every token slowed fine-tuning of the tiny test model measurably)
            segment_embedding: super::segment_table(config, Initializer::Zeros, device),
            convs: init_convs(config.d_model, config, device),
        }
    }

    /// `tokens` `[batch, seq]` → states `[batch, seq, filters × widths]`, pooled `[batch, filters × widths]`.
    pub fn forward(&self, tokens: &TokenBatch) -> BackboneOutput {
        self.encode(self.embed(tokens), tokens)
    }

    /// `tokens` `[batch, seq]` → token plus segment embeddings `[batch, seq, d_model]` (what an
    /// ELECTRA generator shares).
    pub fn embed(&self, tokens: &TokenBatch) -> Tensor<3> {
        let x = self.token_embedding.forward(tokens.ids.clone());
        match super::segment_embeddings(self.segment_embedding.as_ref(), tokens) {
            Some(seg) => x + seg,
            None => x,
        }
    }

    /// Embedded `x` `[batch, seq, d_model]` → states and pooled vector.
    pub fn encode(&self, x: Tensor<3>, tokens: &TokenBatch) -> BackboneOutput {
        let states = conv_states(&self.convs, x, &tokens.pad_mask);
        // After ReLU every value is ≥ 0 and padding states are 0, so the max ignores padding.
        let pooled = kernels::max_over_positions(states.clone());
        BackboneOutput { states, pooled }
    }

    /// `tokens` `[batch, seq]` → the pooled vector alone, `[batch, filters × widths]`: at
    /// inference the states' maximum is taken as they are computed, never written out.
    pub fn pooled(&self, tokens: &TokenBatch) -> Tensor<2> {
        let x = self.embed(tokens);
        if !by_product(&self.convs, &x) {
            return self.encode(x, tokens).pooled;
        }
        let (x, keep) = zero_padding(x, &tokens.pad_mask);
        let (weight, bias, widths, filters) = stacked_weights(&self.convs, x.dims()[2]);
        kernels::conv_windows_max(x, weight, bias, keep, &widths, filters)
    }
}

/// The `convs` (`d` → `filters` each, "same" padding) with ReLU over `x` `[b, l, d]`, concatenated:
/// `[b, l, filters × widths]`, zero at padding positions.
pub fn conv_states(convs: &[Conv1d], x: Tensor<3>, pad_mask: &Tensor<2, Bool>) -> Tensor<3> {
    let (x, keep) = zero_padding(x, pad_mask);
    if by_product(convs, &x) {
        return conv_states_by_product(convs, x, keep);
    }
    let [b, l] = keep.dims();
    let x = x.swap_dims(1, 2);
    let maps: Vec<Tensor<3>> = convs.iter().map(|conv| relu(conv.forward(x.clone()))).collect();
    Tensor::cat(maps, 1).swap_dims(1, 2) * keep.reshape([b, l, 1])
}

/// `x` `[b, l, d]` with its padding positions zeroed, so they do not leak into the windows of
/// real positions, and the positions kept `[b, l]` (1 real, 0 padding).
fn zero_padding(x: Tensor<3>, pad_mask: &Tensor<2, Bool>) -> (Tensor<3>, Tensor<2>) {
    let keep = pad_mask.clone().bool_not().float();
    let [b, l] = keep.dims();
    (x * keep.clone().reshape([b, l, 1]), keep)
}

/// Whether the inference kernels compute the convolutions over `x` (they need every bias).
fn by_product(convs: &[Conv1d], x: &Tensor<3>) -> bool {
    kernels::inference_kernels_apply(x) && convs.iter().all(|c| c.bias.is_some())
}

/// [`conv_states`] for inference: `x` `[b, l, d]` (zero at padding) times every width's every
/// weight block at once, then the shifted sums ([`kernels::conv_windows`]).
fn conv_states_by_product(convs: &[Conv1d], x: Tensor<3>, keep: Tensor<2>) -> Tensor<3> {
    let (weight, bias, widths, filters) = stacked_weights(convs, x.dims()[2]);
    kernels::conv_windows(x, weight, bias, keep, &widths, filters)
}

/// The convolutions (with biases) from width `d` as the inference kernels take them: every
/// width's every shift side by side `[d, Σ w · filters]`, the biases `[widths · filters]`, the
/// widths and the filters a width.
fn stacked_weights(convs: &[Conv1d], d: usize) -> (Tensor<2>, Tensor<1>, Vec<usize>, usize) {
    let filters = convs[0].weight.dims()[0];
    let widths: Vec<usize> = convs.iter().map(|c| c.weight.dims()[2]).collect();
    // weight [filters, d, w] → [d, w · filters]: column o · filters + f is W_o's filter f
    let blocks: Vec<Tensor<2>> = convs.iter().zip(&widths).map(|(c, &w)| c.weight.val().permute([1, 2, 0]).reshape([d, w * filters])).collect();
    let bias = Tensor::cat(convs.iter().map(|c| c.bias.as_ref().expect("checked by the caller").val()).collect(), 0);
    (Tensor::cat(blocks, 1), bias, widths, filters)
}

/// `config.textcnn` convolutions from width `d_in`.
pub fn init_convs(d_in: usize, config: &ModelConfig, device: &Device) -> Vec<Conv1d> {
    config.textcnn.filter_widths.iter().map(|&w| Conv1dConfig::new(d_in, config.textcnn.filters, w).with_padding(PaddingConfig1d::Same).init(device)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn the_pooled_vector_alone_equals_the_maximum_of_the_states() {
        let device = Device::flex();
        device.seed(13);
        let mut config = crate::config::Config::preset(crate::config::Preset::Tiny).model;
        // even and odd widths, a filter count off the vector width
        (config.vocab_size, config.textcnn.filter_widths, config.textcnn.filters) = (50, vec![1, 2, 3, 5], 7);
        let mut model = TextCnnBackbone::init(&config, &device);
        // biases of both signs, so some windows are cut to 0 by ReLU and others are not
        for conv in &mut model.convs {
            let n = conv.weight.dims()[0];
            conv.bias = Some(burn::module::Param::from_tensor(Tensor::random([n], Distribution::Normal(0.0, 0.5), &device)));
        }
        let ad = device.clone().autodiff();
        let on_autodiff = model.clone().to_device(&ad);
        // (lengths, padded length): longer than a block of pooled rows, batch 1 of length 1,
        // padding, a sequence of padding alone, many sequences
        for (lengths, l) in [(vec![21, 3, 17], 21), (vec![1], 1), (vec![9, 0, 4], 9), ((0..70).map(|i| 1 + i % 11).collect(), 11)] {
            let b = lengths.len();
            let ids: Vec<i64> = lengths.iter().enumerate().flat_map(|(s, &n)| (0..l).map(move |t| if t < n { 1 + ((s * 7 + t * 3) % 49) as i64 } else { 0 })).collect();
            let pad: Vec<bool> = lengths.iter().flat_map(|&n| (0..l).map(move |t| t >= n)).collect();
            let tokens = |d: &Device| TokenBatch { ids: Tensor::from_data(TensorData::new(ids.clone(), [b, l]), d), pad_mask: Tensor::from_data(TensorData::new(pad.clone(), [b, l]), d), segments: None };
            let alone = model.pooled(&tokens(&device));
            assert_eq!(alone.dims(), [b, 4 * 7]);
            // the whole pass on this device (states by product, then their maximum) and Burn's
            // convolutions (the autodiff device takes them)
            let whole = model.forward(&tokens(&device)).pooled;
            let reference = on_autodiff.forward(&tokens(&ad)).pooled.inner();
            for (name, other) in [("states' maximum", whole), ("Burn's convolutions", reference)] {
                let diff: f32 = (alone.clone() - other).abs().max().into_scalar();
                assert!(diff < 1e-5, "lengths {lengths:?}: {name}: max difference {diff}");
            }
        }
    }
}
