//! BERT-style encoder: token + learned position + segment embeddings, LayerNorm, then Transformer layers
//! (self-attention and a GELU feed-forward block, each with dropout, a residual connection and
//! LayerNorm, after the block by default or before it with `norm_first`); pooled output = the
//! [CLS] state, or the mean or maximum over the non-padding states (`model.pooling`).
//!
//! Written out here rather than taken from `burn::nn::transformer` so that the hot path is ours:
//! a cheap dropout mask, the attention scale applied to the queries (`[b, h, l, d_k]`) instead
//! of the scores (`[b, h, l, l]`), and padding as one additive bias computed once a batch. The
//! parameter names are those of Burn's encoder (`encoder.layers.N.mha.query`, `pwff.linear_inner`,
//! `norm_1`, …), so weights saved by either load into the other.

use super::BackboneOutput;
use crate::data::batch::TokenBatch;
use crate::config::{Activation, ModelConfig, Pooling};
use crate::model::dropout::Dropout;
use crate::model::kernels::{activate, attention, inference_kernels_apply, linear, softmax_last, trained_attention, LayerNorm};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// BERT's embedding initialisation: small enough that the tied output projection starts near uniform.
const EMBED_INIT: Initializer = Initializer::Normal { mean: 0.0, std: 0.02 };
/// PyTorch's `nn.Linear` default, which is also Burn's.
const LINEAR_INIT: Initializer = Initializer::KaimingUniform { gain: 0.577_350_26, fan_out_only: false };
/// Added to the attention scores of padding keys: exp() of it is 0 in f32.
const PAD_BIAS: f32 = -1.0e4;

fn linear_layer(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).with_initializer(LINEAR_INIT).init(device)
}

fn layer_norm(config: &ModelConfig, device: &Device) -> LayerNorm {
    LayerNorm::new(config.d_model, config.transformer.layer_norm_eps, device)
}

/// Multi-head self-attention.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Output projection.
    pub output: Linear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Number of heads (configuration).
    #[module(skip)]
    pub n_heads: usize,
}

impl SelfAttention {
    fn init(config: &ModelConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            query: linear_layer(d, d, device),
            key: linear_layer(d, d, device),
            value: linear_layer(d, d, device),
            output: linear_layer(d, d, device),
            dropout: Dropout::new(config.dropout),
            n_heads: config.transformer.n_heads,
        }
    }

    /// `x` `[b, l, d]`, `pad_bias` `[b, 1, 1, l]` → `[b, l, d]`.
    pub fn forward(&self, x: Tensor<3>, pad_bias: Tensor<4>) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let x_device = x.device();
        let scale = 1.0 / ((d / self.n_heads) as f32).sqrt();
        let (q, k, v) = (linear(&self.query, x.clone()), linear(&self.key, x.clone()), linear(&self.value, x));
        let bias = pad_bias.clone().reshape([b, l]);
        let fused = attention(&q, &k, &v, &bias, self.n_heads, scale as f64).or_else(|| trained_attention(&q, &k, &v, &bias, self.n_heads, scale as f64, self.dropout.draw(&x_device)));
        if let Some(context) = fused {
            return linear(&self.output, context);
        }
        // [b, l, d] → [b, heads, l, d_k]
        let heads = |t: Tensor<3>| t.reshape([b, l, self.n_heads, d / self.n_heads]).swap_dims(1, 2);
        let (q, k, v) = (heads(q) * scale, heads(k), heads(v));
        let probs = softmax_last(q.matmul(k.transpose()) + pad_bias);
        let context = self.dropout.forward(probs).matmul(v).swap_dims(1, 2).reshape([b, l, d]);
        self.output.forward(context)
    }

    /// The first position's output alone, `[b, 1, d]`, from `x` `[b, l, d]` (every position's
    /// key and value, the first one's query). Only where the inference kernels apply.
    fn forward_first(&self, x: Tensor<3>, pad_bias: Tensor<4>) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let scale = 1.0 / ((d / self.n_heads) as f32).sqrt();
        let q = linear(&self.query, x.clone().slice([0..b, 0..1, 0..d]));
        let (k, v) = (linear(&self.key, x.clone()), linear(&self.value, x));
        let context = attention(&q, &k, &v, &pad_bias.reshape([b, l]), self.n_heads, scale as f64).expect("called where the inference kernels apply");
        linear(&self.output, context)
    }
}

/// The position-wise feed-forward block: linear, GELU, dropout, linear. The dropout after the
/// activation is `model.activation_dropout` (BERT's is 0: imported checkpoints train as in
/// HuggingFace; bertlu's own models default to the model's dropout rate).
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `d_model` → `d_ff`.
    pub linear_inner: Linear,
    /// `d_ff` → `d_model`.
    pub linear_outer: Linear,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// Exact or tanh GELU (configuration).
    #[module(skip)]
    pub activation: Activation,
}

impl FeedForward {
    /// `[b, l, d]` → `[b, l, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.linear_outer, self.dropout.forward(activate(linear(&self.linear_inner, x), self.activation)))
    }
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Self-attention block.
    pub mha: SelfAttention,
    /// Feed-forward block.
    pub pwff: FeedForward,
    /// LayerNorm after attention (post-LN) or before the feed-forward block (pre-LN).
    pub norm_1: LayerNorm,
    /// LayerNorm after the feed-forward block (post-LN) or before attention (pre-LN).
    pub norm_2: LayerNorm,
    /// Dropout on each block's output before the residual sum.
    pub dropout: Dropout,
    /// Pre-LN instead of BERT's post-LN (configuration).
    #[module(skip)]
    pub norm_first: bool,
}

impl EncoderLayer {
    fn init(config: &ModelConfig, device: &Device) -> Self {
        Self {
            mha: SelfAttention::init(config, device),
            pwff: FeedForward {
                linear_inner: linear_layer(config.d_model, config.transformer.d_ff, device),
                linear_outer: linear_layer(config.transformer.d_ff, config.d_model, device),
                dropout: Dropout::new(config.activation_dropout()),
                activation: config.transformer.activation,
            },
            norm_1: layer_norm(config, device),
            norm_2: layer_norm(config, device),
            dropout: Dropout::new(config.dropout),
            norm_first: config.transformer.norm_first,
        }
    }

    /// `[b, l, d]` → `[b, l, d]`.
    pub fn forward(&self, x: Tensor<3>, pad_bias: Tensor<4>) -> Tensor<3> {
        if self.norm_first {
            let x = x.clone() + self.dropout.forward(self.mha.forward(self.norm_2.forward(x), pad_bias));
            x.clone() + self.dropout.forward(self.pwff.forward(self.norm_1.forward(x)))
        } else {
            let x = self.norm_1.forward(x.clone() + self.dropout.forward(self.mha.forward(x, pad_bias)));
            self.norm_2.forward(x.clone() + self.dropout.forward(self.pwff.forward(x)))
        }
    }

    /// The first position's output alone, `[b, 1, d]` (inference: no dropout), from `x` `[b, l, d]`.
    fn forward_first(&self, x: Tensor<3>, pad_bias: Tensor<4>) -> Tensor<3> {
        let [b, _, d] = x.dims();
        let first = |t: Tensor<3>| t.slice([0..b, 0..1, 0..d]);
        if self.norm_first {
            let x = first(x.clone()) + self.mha.forward_first(self.norm_2.forward(x), pad_bias);
            x.clone() + self.pwff.forward(self.norm_1.forward(x))
        } else {
            let x = self.norm_1.forward(first(x.clone()) + self.mha.forward_first(x, pad_bias));
            self.norm_2.forward(x.clone() + self.pwff.forward(x))
        }
    }
}

/// The stack of encoder layers.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, applied in order.
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `config.transformer.n_layers` random layers of width `config.d_model`.
    pub fn init(config: &ModelConfig, device: &Device) -> Self {
        Self { layers: (0..config.transformer.n_layers).map(|_| EncoderLayer::init(config, device)).collect() }
    }

    /// `x` `[b, l, d]` and padding mask `[b, l]` → `[b, l, d]`.
    pub fn forward(&self, mut x: Tensor<3>, pad_mask: &Tensor<2, Bool>) -> Tensor<3> {
        let pad_bias = pad_bias(pad_mask);
        for layer in &self.layers {
            x = layer.forward(x, pad_bias.clone());
        }
        x
    }
}

/// The padding mask `[b, l]` as the additive bias of attention scores `[b, 1, 1, l]`.
fn pad_bias(pad_mask: &Tensor<2, Bool>) -> Tensor<4> {
    let [b, l] = pad_mask.dims();
    pad_mask.clone().float().mul_scalar(PAD_BIAS).reshape([b, 1, 1, l])
}

/// The Transformer backbone.
#[derive(Module, Debug)]
pub struct TransformerBackbone {
    /// Word-piece embeddings `[vocab, d]`, tied to the masked-LM output.
    pub token_embedding: Embedding,
    /// Learned position embeddings `[positions, d]` (`ModelConfig::positions`).
    pub position_embedding: Embedding,
    /// Segment (token-type) embeddings `[2, d]`: A and B of a pair.
    pub segment_embedding: Option<Embedding>,
    /// Normalises the summed embeddings.
    pub embed_norm: LayerNorm,
    /// Dropout on the embeddings.
    pub dropout: Dropout,
    /// The encoder layers.
    pub encoder: Encoder,
    /// Final LayerNorm of a pre-LN encoder (absent for post-LN, whose layers end normalised).
    pub final_norm: Option<LayerNorm>,
    /// How the pooled vector is made (configuration, not a weight).
    #[module(skip)]
    pub pooling: Pooling,
}

impl TransformerBackbone {
    /// Random initial weights for `config`.
    pub fn init(config: &ModelConfig, device: &Device) -> Self {
        Self {
            token_embedding: EmbeddingConfig::new(config.vocab_size, config.d_model).with_initializer(EMBED_INIT).init(device),
            position_embedding: EmbeddingConfig::new(config.positions(), config.d_model).with_initializer(EMBED_INIT).init(device),
            segment_embedding: super::segment_table(config, EMBED_INIT, device),
            embed_norm: layer_norm(config, device),
            dropout: Dropout::new(config.dropout),
            encoder: Encoder::init(config, device),
            final_norm: config.transformer.norm_first.then(|| layer_norm(config, device)),
            pooling: config.transformer.pooling,
        }
    }

    /// `tokens` `[batch, seq]` → states `[batch, seq, d]`, pooled `[batch, d]`.
    pub fn forward(&self, tokens: &TokenBatch) -> BackboneOutput {
        self.encode(self.embed(tokens), tokens)
    }

    /// `tokens` `[batch, seq]` → the normalised sum of token, position and segment embeddings
    /// `[batch, seq, d]` (what an ELECTRA generator shares).
    pub fn embed(&self, tokens: &TokenBatch) -> Tensor<3> {
        let [b, l] = tokens.dims();
        let device = tokens.ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device).reshape([1, l]);
        let pos = self.position_embedding.forward(positions);
        let tok = self.token_embedding.forward(tokens.ids.clone());
        let d = tok.dims()[2];
        let mut sum = tok + pos.expand([b, l, d]);
        if let Some(seg) = super::segment_embeddings(self.segment_embedding.as_ref(), tokens) {
            sum = sum + seg;
        }
        self.dropout.forward(self.embed_norm.forward(sum))
    }

    /// `tokens` `[batch, seq]` → the pooled vector alone `[batch, d]`. With `[CLS]` pooling
    /// where the inference kernels apply, the last layer computes only the first position's
    /// state (its attention still reads every position's key and value): of that layer's
    /// matrix products, the keys' and values' are left, a sixth. Elsewhere (training, other
    /// devices, other poolings) the whole [`TransformerBackbone::forward`].
    pub fn pooled(&self, tokens: &TokenBatch) -> Tensor<2> {
        let x = self.embed(tokens);
        if self.pooling == Pooling::Cls && inference_kernels_apply(&x) {
            if let Some((last, rest)) = self.encoder.layers.split_last() {
                let bias = pad_bias(&tokens.pad_mask);
                let x = rest.iter().fold(x, |x, layer| layer.forward(x, bias.clone()));
                let mut first = last.forward_first(x, bias);
                if let Some(norm) = &self.final_norm {
                    first = norm.forward(first);
                }
                let [b, _, d] = first.dims();
                return first.reshape([b, d]);
            }
        }
        self.encode(x, tokens).pooled
    }

    /// Embedded `x` `[batch, seq, d]` → states and pooled vector.
    pub fn encode(&self, x: Tensor<3>, tokens: &TokenBatch) -> BackboneOutput {
        let mut x = self.encoder.forward(x, &tokens.pad_mask);
        if let Some(norm) = &self.final_norm {
            x = norm.forward(x);
        }
        let pooled = super::pool(x.clone(), &tokens.pad_mask, self.pooling);
        BackboneOutput { states: x, pooled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The tiny preset over a vocabulary of 50, with `n_layers` layers, pre-LN or post-LN.
    fn tiny(n_layers: usize, norm_first: bool) -> ModelConfig {
        let mut config = crate::config::Config::preset(crate::config::Preset::Tiny).model;
        (config.vocab_size, config.transformer.n_layers, config.transformer.norm_first) = (50, n_layers, norm_first);
        config
    }

    /// Two sequences of 6 positions on `device`, the second padded after 3.
    fn two_sequences(device: &Device) -> TokenBatch {
        let ids = vec![2i64, 7, 9, 11, 13, 3, 2, 5, 3, 0, 0, 0];
        let pad: Vec<bool> = ids.iter().enumerate().map(|(i, &t)| i >= 6 && t == 0).collect();
        TokenBatch { ids: Tensor::from_data(TensorData::new(ids, [2, 6]), device), pad_mask: Tensor::from_data(TensorData::new(pad, [2, 6]), device), segments: None }
    }

    #[test]
    fn the_cls_state_alone_equals_the_whole_forward_pass() {
        let device = Device::flex();
        device.seed(11);
        for norm_first in [false, true] {
            let config = tiny(3, norm_first);
            let model = TransformerBackbone::init(&config, &device);
            let tokens = two_sequences(&device);
            let whole = model.forward(&tokens).pooled;
            let first = model.pooled(&tokens);
            assert_eq!(first.dims(), [2, config.d_model]);
            let diff: f32 = (whole - first).abs().max().into_scalar();
            assert!(diff < 1e-5, "norm_first {norm_first}: max difference {diff}");
            // mean pooling reads every state: the whole pass
            let mean = TransformerBackbone { pooling: Pooling::Mean, ..model };
            let diff: f32 = (mean.forward(&tokens).pooled - mean.pooled(&tokens)).abs().max().into_scalar();
            assert_eq!(diff, 0.0);
        }
    }

    #[test]
    fn inference_kernels_equal_the_training_path() {
        let device = Device::flex();
        device.seed(17);
        for norm_first in [false, true] {
            let config = ModelConfig { dropout: 0.0, ..tiny(2, norm_first) };
            let model = TransformerBackbone::init(&config, &device);
            // the autodiff device takes the training kernels; dropout 0, so nothing random
            let ad = device.clone().autodiff();
            let on_ad = model.clone().to_device(&ad);
            let fast = model.forward(&two_sequences(&device)).states;
            let reference = on_ad.forward(&two_sequences(&ad)).states.inner();
            let diff: f32 = (fast - reference).abs().max().into_scalar();
            assert!(diff < 1e-4, "norm_first {norm_first}: max difference {diff}");
        }
    }

    #[test]
    fn the_activation_dropout_acts_only_where_configured() {
        let device = Device::flex();
        device.seed(23);
        let ad = device.clone().autodiff();
        // a training pass differs from inference by its dropout alone: with every other rate 0,
        // only the dropout after the feed-forward activation can make them differ
        let gap = |activation_dropout: Option<f64>, dropout: f64| -> f32 {
            let mut config = ModelConfig { dropout, ..tiny(2, false) };
            config.transformer.activation_dropout = activation_dropout;
            let model = TransformerBackbone::init(&config, &device);
            crate::model::dropout::seed(5);
            let trained = model.clone().to_device(&ad).forward(&two_sequences(&ad)).states.inner();
            (model.forward(&two_sequences(&device)).states - trained).abs().max().into_scalar()
        };
        assert!(gap(Some(0.5), 0.0) > 0.1, "the activation dropout set, the other rates 0: training must differ");
        assert!(gap(None, 0.0) < 1e-4, "unset, it takes the model's rate (0 here)");
        assert!(gap(Some(0.0), 0.0) < 1e-4);
        // unset, it is the model's dropout rate, as in every model saved before it existed
        let mut config = ModelConfig { dropout: 0.3, ..tiny(1, false) };
        assert_eq!(TransformerBackbone::init(&config, &device).encoder.layers[0].pwff.dropout.prob, 0.3);
        config.transformer.activation_dropout = Some(0.0);
        assert_eq!(TransformerBackbone::init(&config, &device).encoder.layers[0].pwff.dropout.prob, 0.0);
    }
}
