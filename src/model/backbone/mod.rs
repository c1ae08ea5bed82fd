//! The backbone contract: token ids and padding mask in, per-position states and one pooled
//! vector out. Pre-training objectives and classification heads use nothing else, so a new
//! backbone is one file here plus one variant of [`Backbone`] and of `BackboneKind`.

pub mod textcnn;
pub mod transformer;

use crate::data::batch::TokenBatch;
use crate::config::{BackboneKind, ModelConfig, Pooling};
use burn::prelude::*;

/// What every backbone yields; the width `d` is `ModelConfig::output_dim()`.
#[derive(Debug, Clone)]
pub struct BackboneOutput {
    /// Contextual state of every position, `[batch, seq, d_model]`.
    pub states: Tensor<3>,
    /// One vector a sequence for classification, `[batch, d_model]`.
    pub pooled: Tensor<2>,
}

/// Pools states `[batch, seq, d]` into `[batch, d]`: the first position, or the mean or the
/// maximum over the positions that are not padding.
pub fn pool(states: Tensor<3>, pad_mask: &Tensor<2, Bool>, pooling: Pooling) -> Tensor<2> {
    let [b, l, d] = states.dims();
    match pooling {
        Pooling::Cls => states.slice([0..b, 0..1, 0..d]).reshape([b, d]),
        Pooling::Mean => {
            let keep = pad_mask.clone().bool_not().float().reshape([b, l, 1]);
            let count = keep.clone().sum_dim(1).reshape([b, 1]);
            (states * keep).sum_dim(1).reshape([b, d]) / count
        }
        Pooling::Max => {
            // Padding states can be the largest values, so they are pushed below any real one.
            let pad = pad_mask.clone().float().reshape([b, l, 1]) * -1e9;
            crate::model::kernels::max_over_positions(states + pad)
        }
    }
}

/// The segment embeddings of a batch, `[batch, seq, d]`: each position's row of `table`
/// (`[2, d]`), or row 0 everywhere when the batch holds no pair. `None` without a table (a model
/// without segments reads pairs as one text).
pub fn segment_embeddings(table: Option<&burn::nn::Embedding>, tokens: &TokenBatch) -> Option<Tensor<3>> {
    let table = table?;
    let [b, l] = tokens.dims();
    Some(match &tokens.segments {
        Some(seg) => table.forward(seg.clone()),
        None => {
            let w = table.weight.val();
            let d = w.dims()[1];
            w.slice([0..1, 0..d]).reshape([1, 1, d]).expand([b, l, d])
        }
    })
}

/// A segment-embedding table for `config` (none when `type_vocab_size` is 0).
pub fn segment_table(config: &ModelConfig, init: burn::nn::Initializer, device: &Device) -> Option<burn::nn::Embedding> {
    (config.type_vocab_size > 0).then(|| burn::nn::EmbeddingConfig::new(config.type_vocab_size, config.d_model).with_initializer(init).init(device))
}

/// Any backbone; dispatches to the variant.
#[derive(Module, Debug)]
pub enum Backbone {
    /// BERT-style Transformer encoder.
    Transformer(transformer::TransformerBackbone),
    /// Kim's TextCNN.
    TextCnn(textcnn::TextCnnBackbone),
}

impl Backbone {
    /// A freshly initialised backbone of the configured kind.
    pub fn init(config: &ModelConfig, device: &Device) -> Self {
        match config.backbone {
            BackboneKind::Transformer => Backbone::Transformer(transformer::TransformerBackbone::init(config, device)),
            BackboneKind::TextCnn => Backbone::TextCnn(textcnn::TextCnnBackbone::init(config, device)),
        }
    }

    /// Encodes a batch: states `[batch, seq, d]`, pooled `[batch, d]`.
    pub fn forward(&self, tokens: &TokenBatch) -> BackboneOutput {
        match self {
            Backbone::Transformer(b) => b.forward(tokens),
            Backbone::TextCnn(b) => b.forward(tokens),
        }
    }

    /// `tokens` `[batch, seq]` → the pooled vector alone `[batch, d_model]` (what a pooled
    /// classification head reads; neither backbone does the work only other states need).
    pub fn pooled(&self, tokens: &TokenBatch) -> Tensor<2> {
        match self {
            Backbone::Transformer(b) => b.pooled(tokens),
            Backbone::TextCnn(b) => b.pooled(tokens),
        }
    }

    /// The embedded input `[batch, seq, d_model]`: what [`Backbone::encode`] takes, and what an
    /// ELECTRA generator shares with the backbone.
    pub fn embed(&self, tokens: &TokenBatch) -> Tensor<3> {
        match self {
            Backbone::Transformer(b) => b.embed(tokens),
            Backbone::TextCnn(b) => b.embed(tokens),
        }
    }

    /// Embedded input (from [`Backbone::embed`]) → states and pooled vector.
    pub fn encode(&self, embedded: Tensor<3>, tokens: &TokenBatch) -> BackboneOutput {
        match self {
            Backbone::Transformer(b) => b.encode(embedded, tokens),
            Backbone::TextCnn(b) => b.encode(embedded, tokens),
        }
    }

    /// The backbone with rows of its token embedding replaced: `(id, vector)` pairs.
    pub fn with_token_rows(self, rows: &[(u32, Vec<f32>)]) -> Self {
        let replace = |weight: burn::module::Param<Tensor<2>>| {
            weight.map(|w| {
                let [v, d] = w.dims();
                let device = w.device();
                let mut data: Vec<f32> = w.into_data().convert::<f32>().try_into_vec().expect("f32 embeddings");
                for (id, vec) in rows {
                    let i = *id as usize;
                    assert!(i < v && vec.len() == d, "embedding row {i} of [{v}, {d}] from a vector of {}", vec.len());
                    data[i * d..(i + 1) * d].copy_from_slice(vec);
                }
                Tensor::from_data(burn::tensor::TensorData::new(data, [v, d]), &device)
            })
        };
        match self {
            Backbone::Transformer(mut b) => {
                b.token_embedding.weight = replace(b.token_embedding.weight);
                Backbone::Transformer(b)
            }
            Backbone::TextCnn(mut b) => {
                b.token_embedding.weight = replace(b.token_embedding.weight);
                Backbone::TextCnn(b)
            }
        }
    }

    /// The token embedding matrix `[vocab, d]`, shared with the masked-LM output projection.
    pub fn token_embedding(&self) -> Tensor<2> {
        match self {
            Backbone::Transformer(b) => b.token_embedding.weight.val(),
            Backbone::TextCnn(b) => b.token_embedding.weight.val(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn pooling_ignores_padding() {
        let d = Device::flex();
        // batch 2, seq 3, width 2; the second sequence has one padding position
        let states = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 20.0, 30.0, 40.0, 99.0, 99.0], [2, 3, 2]), &d);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false, false, false, false, false, true], [2, 3]), &d);
        let mean: Vec<f32> = pool(states.clone(), &mask, Pooling::Mean).into_data().try_into_vec().unwrap();
        assert_eq!(mean, vec![3.0, 4.0, 20.0, 30.0]);
        let max: Vec<f32> = pool(states.clone(), &mask, Pooling::Max).into_data().try_into_vec().unwrap();
        assert_eq!(max, vec![5.0, 6.0, 30.0, 40.0]);
        let cls: Vec<f32> = pool(states, &mask, Pooling::Cls).into_data().try_into_vec().unwrap();
        assert_eq!(cls, vec![1.0, 2.0, 10.0, 20.0]);
    }
}
