//! BERT-style encoder: token + learned position embeddings, LayerNorm, post-LN Transformer
//! layers with GELU feed-forward blocks; pooled output = the [CLS] state or the mean state.

use super::BackboneOutput;
use crate::batch::TokenBatch;
use crate::config::{ModelConfig, Pooling};
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;

/// BERT's embedding initialisation: small enough that the tied output projection starts near uniform.
const EMBED_INIT: Initializer = Initializer::Normal { mean: 0.0, std: 0.02 };

/// The Transformer backbone.
#[derive(Module, Debug)]
pub struct TransformerBackbone {
    /// Word-piece embeddings `[vocab, d]`, tied to the masked-LM output.
    pub token_embedding: Embedding,
    /// Learned position embeddings `[max_len, d]`.
    pub position_embedding: Embedding,
    /// Normalises the summed embeddings.
    pub embed_norm: LayerNorm,
    /// Dropout on the embeddings.
    pub dropout: Dropout,
    /// The encoder layers.
    pub encoder: TransformerEncoder,
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
            position_embedding: EmbeddingConfig::new(config.max_len, config.d_model).with_initializer(EMBED_INIT).init(device),
            embed_norm: LayerNormConfig::new(config.d_model).with_epsilon(1e-12).init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            encoder: TransformerEncoderConfig::new(config.d_model, config.d_ff, config.n_heads, config.n_layers)
                .with_dropout(config.dropout)
                .with_layer_norm_eps(1e-12)
                .with_norm_first(config.norm_first)
                .init(device),
            final_norm: config.norm_first.then(|| LayerNormConfig::new(config.d_model).with_epsilon(1e-12).init(device)),
            pooling: config.pooling,
        }
    }

    /// `tokens` `[batch, seq]` → states `[batch, seq, d]`, pooled `[batch, d]`.
    pub fn forward(&self, tokens: &TokenBatch) -> BackboneOutput {
        let [b, l] = tokens.dims();
        let device = tokens.ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device).reshape([1, l]);
        let pos = self.position_embedding.forward(positions);
        let tok = self.token_embedding.forward(tokens.ids.clone());
        let d = tok.dims()[2];
        let x = tok + pos.expand([b, l, d]);
        let x = self.dropout.forward(self.embed_norm.forward(x));
        let mut states = self.encoder.forward(TransformerEncoderInput::new(x).mask_pad(tokens.pad_mask.clone()));
        if let Some(norm) = &self.final_norm {
            states = norm.forward(states);
        }
        let pooled = super::pool(states.clone(), &tokens.pad_mask, self.pooling);
        BackboneOutput { states, pooled }
    }
}
