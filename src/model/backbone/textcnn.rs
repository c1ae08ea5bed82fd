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
use burn::tensor::TensorData;

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

/// Largest table a segment that [`FoldedConvs`] builds, in bytes: 256 MiB, a vocabulary of
/// 43,000 pieces at the small preset's 1,536 product columns. Larger, prediction multiplies.
const FOLDED_TABLE_BYTES: usize = 256 << 20;

/// A TextCNN's convolutions folded into its embedding table, for prediction. The products at a
/// position, `(e_v + s) W` for every shifted weight block `W`, depend on its word piece `v` and
/// segment `s` alone, so they are computed once for the whole vocabulary (a table a segment:
/// the products of as many positions as the vocabulary has pieces, 49 MB at the small preset)
/// and prediction reads rows of it instead of multiplying (`kernels::table_windows_max`); the
/// shifted sums, bias, ReLU and maximum are as before. A table is built once that many
/// positions have been multiplied without it, so it never costs more than it has saved: one
/// `predict` line never builds it, a file or a server soon does. A snapshot of the weights it
/// was made from: a model trained further needs a new one.
pub struct FoldedConvs {
    /// The token embeddings `[vocab, d]`.
    embedding: Tensor<2>,
    /// The segment embeddings `[segments, d]` (`None`: the model has none).
    segments: Option<Tensor<2>>,
    /// Every width's every shift side by side, `[d, Σ w · filters]`.
    weight: Tensor<2>,
    /// `[widths · filters]`.
    bias: Vec<f32>,
    widths: Vec<usize>,
    filters: usize,
    /// Segment `s`'s table `[vocab, Σ w · filters]`, once built.
    tables: Vec<std::sync::OnceLock<Vec<f32>>>,
    /// Positions multiplied without the tables so far.
    multiplied: std::sync::atomic::AtomicUsize,
    /// Positions multiplied without the tables before they are built: the vocabulary's size.
    build_after: usize,
}

impl FoldedConvs {
    /// The folded convolutions of `backbone`, or `None` where prediction keeps multiplying: off
    /// the flex CPU device, a convolution without bias, or a table over [`FOLDED_TABLE_BYTES`].
    pub fn of(backbone: &TextCnnBackbone) -> Option<Self> {
        Self::within(backbone, FOLDED_TABLE_BYTES)
    }

    /// [`FoldedConvs::of`] with tables of at most `bytes` each.
    fn within(backbone: &TextCnnBackbone, bytes: usize) -> Option<Self> {
        let embedding = backbone.token_embedding.weight.val();
        let [vocab, d] = embedding.dims();
        if !by_product(&backbone.convs, &embedding.clone().unsqueeze::<3>()) {
            return None;
        }
        let (weight, bias, widths, filters) = stacked_weights(&backbone.convs, d);
        if vocab * weight.dims()[1] * std::mem::size_of::<f32>() > bytes {
            return None;
        }
        let segments = backbone.segment_embedding.as_ref().map(|s| s.weight.val());
        let tables = (0..segments.as_ref().map_or(1, |s| s.dims()[0])).map(|_| std::sync::OnceLock::new()).collect();
        Some(Self { embedding, segments, weight, bias: bias.into_data().convert::<f32>().try_into_vec().expect("f32 biases"), widths, filters, tables, multiplied: Default::default(), build_after: vocab })
    }

    /// Segment `s`'s table: `(E + S[s]) W`, `[vocab, Σ w · filters]` flattened.
    fn table(&self, s: usize) -> &[f32] {
        self.tables[s].get_or_init(|| {
            let x = match &self.segments {
                Some(seg) => {
                    let d = seg.dims()[1];
                    self.embedding.clone() + seg.clone().slice([s..s + 1, 0..d])
                }
                None => self.embedding.clone(),
            };
            x.matmul(self.weight.clone()).into_data().convert::<f32>().try_into_vec().expect("f32 products")
        })
    }

    /// `tokens` `[batch, seq]` → the pooled vector, `[batch, filters × widths]`: what
    /// [`TextCnnBackbone::pooled`] gives, to float rounding. `None` while the tables the batch
    /// needs are not built and the positions seen so far (this batch's included) are fewer than
    /// the vocabulary's pieces: the caller multiplies ([`TextCnnBackbone::pooled`]).
    pub fn pooled(&self, tokens: &TokenBatch) -> Option<Tensor<2>> {
        let [b, l] = tokens.dims();
        let vocab = self.embedding.dims()[0];
        let keep: Vec<f32> = tokens.pad_mask.to_data().convert::<bool>().try_into_vec::<bool>().expect("bool mask").into_iter().map(|pad| if pad { 0.0 } else { 1.0 }).collect();
        // a model without segments reads pairs as one text; a batch without pairs is segment 0
        let segments = tokens.segments.as_ref().filter(|_| self.segments.is_some()).map(int_values);
        let used = segments.as_ref().map_or(1, |seg| seg.iter().max().map_or(1, |&m| m as usize + 1));
        if used > self.tables.len() {
            // a segment id the table has no row for: the multiplying path says what happens
            return None;
        }
        if (0..used).any(|s| self.tables[s].get().is_none()) {
            // a table costs the products of `vocab` positions: built once that many have been
            // multiplied without it, so a few short texts never pay for it
            let positions = keep.iter().filter(|&&k| k != 0.0).count();
            if self.multiplied.fetch_add(positions, std::sync::atomic::Ordering::Relaxed) + positions < self.build_after {
                return None;
            }
        }
        let ids: Vec<u32> = int_values(&tokens.ids);
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            panic!("word piece id {id} outside the model's vocabulary of {vocab}");
        }
        let tables: Vec<&[f32]> = (0..used).map(|s| self.table(s)).collect();
        let pooled = kernels::table_windows_max(&tables, &ids, segments.as_deref(), &keep, l, &self.bias, &self.widths, self.filters);
        Some(Tensor::from_data(TensorData::new(pooled, [b, self.widths.len() * self.filters]), &self.embedding.device()))
    }

    /// How many of its tables (one a segment) are built.
    pub fn tables_built(&self) -> usize {
        self.tables.iter().filter(|t| t.get().is_some()).count()
    }

    /// The same fold building its tables at first use, however few positions it has seen (the
    /// steady state a benchmark measures; tests).
    pub fn eager(self) -> Self {
        Self { build_after: 0, ..self }
    }
}

/// An integer tensor's values as `u32`.
fn int_values(t: &Tensor<2, Int>) -> Vec<u32> {
    t.to_data().convert::<i64>().try_into_vec::<i64>().expect("integer data").into_iter().map(|v| v as u32).collect()
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

    /// A tiny TextCNN (tiny preset, `vocab` pieces, `segments` segment rows) with even and odd
    /// widths (1, 2, 3, 5) of `filters` each, biases of both signs (so some windows are cut to 0
    /// by ReLU and others are not) and segment rows that matter (they start at zero).
    fn tiny_model(device: &Device, vocab: usize, filters: usize, segments: usize) -> TextCnnBackbone {
        let mut config = crate::config::Config::preset(crate::config::Preset::Tiny).model;
        (config.vocab_size, config.textcnn.filter_widths, config.textcnn.filters, config.type_vocab_size) = (vocab, vec![1, 2, 3, 5], filters, segments);
        let mut model = TextCnnBackbone::init(&config, device);
        for conv in &mut model.convs {
            conv.bias = Some(burn::module::Param::from_tensor(Tensor::random([filters], Distribution::Normal(0.0, 0.5), device)));
        }
        if let Some(seg) = &mut model.segment_embedding {
            seg.weight = burn::module::Param::from_tensor(Tensor::random([segments, config.d_model], Distribution::Normal(0.0, 0.3), device));
        }
        model
    }

    #[test]
    fn the_pooled_vector_alone_equals_the_maximum_of_the_states() {
        let device = Device::flex();
        device.seed(13);
        // a filter count off the vector width
        let model = tiny_model(&device, 50, 7, 2);
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

    #[test]
    fn folded_convolutions_give_the_pooled_vector_of_texts_and_pairs() {
        let device = Device::flex();
        device.seed(17);
        let specials = crate::text::tokenizer::SpecialIds::BERTLU;
        // 40 filters: one block of the kernel's lanes and a tail
        for segments in [2, 0] {
            let model = tiny_model(&device, 60, 40, segments);
            let folded = FoldedConvs::of(&model).expect("a small table on the plain device").eager();
            let reference_model = model.clone().to_device(&device.clone().autodiff());
            let body = |s: usize, n: usize| -> Vec<u32> { (0..n).map(|t| 5 + ((s * 11 + t * 7) % 55) as u32).collect() };
            let single: Vec<Vec<u32>> = [9, 1, 4, 23].iter().enumerate().map(|(s, &n)| crate::data::classify::wrap(&body(s, n), 64, specials)).collect();
            let pairs: Vec<Vec<u32>> = [(3, 5), (1, 1), (8, 2)].iter().enumerate().map(|(s, &(a, b))| crate::data::nsp::wrap_pair(&body(s, a), &body(s + 3, b), 64, specials)).collect();
            for (what, seqs) in [("texts", &single), ("pairs", &pairs)] {
                let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
                let tokens = TokenBatch::new(&refs, specials, &device);
                assert_eq!(tokens.segments.is_some(), what == "pairs");
                let got = folded.pooled(&tokens).expect("an eager fold");
                assert_eq!(got.dims(), [seqs.len(), 4 * 40]);
                // the products computed, and Burn's convolutions
                let by_product = model.pooled(&tokens);
                let reference = reference_model.forward(&TokenBatch::new(&refs, specials, &device.clone().autodiff())).pooled.inner();
                for (name, other) in [("products", by_product), ("Burn's convolutions", reference)] {
                    let diff: f32 = (got.clone() - other).abs().max().into_scalar();
                    assert!(diff < 1e-5, "{segments} segments, {what}: {name}: max difference {diff}");
                }
                // single texts build segment 0's table alone
                if what == "texts" && segments == 2 {
                    assert!(folded.tables[0].get().is_some() && folded.tables_built() == 1);
                }
            }
        }
        // not eager: the table waits for as many positions as the vocabulary has pieces (60)
        let model = tiny_model(&device, 60, 40, 2);
        let lazy = FoldedConvs::of(&model).unwrap();
        let texts: Vec<Vec<u32>> = [20, 14].iter().map(|&n| crate::data::classify::wrap(&(5..5 + n).collect::<Vec<u32>>(), 64, specials)).collect();
        let refs: Vec<&[u32]> = texts.iter().map(|s| s.as_slice()).collect();
        let tokens = TokenBatch::new(&refs, specials, &device);
        assert!(lazy.pooled(&tokens).is_none(), "38 positions");
        let second = lazy.pooled(&tokens).expect("76 positions: built");
        let diff: f32 = (second - model.pooled(&tokens)).abs().max().into_scalar();
        assert!(diff < 1e-5, "max difference {diff}");
        // no fold where a table would be too large
        let bytes = 60 * (1 + 2 + 3 + 5) * 40 * 4;
        assert!(FoldedConvs::within(&model, bytes).is_some(), "a table of {bytes} bytes");
        assert!(FoldedConvs::within(&model, bytes - 1).is_none(), "a table over the limit");
    }
}
