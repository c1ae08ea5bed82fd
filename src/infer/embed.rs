//! Sentence vectors from any bertlu model with a backbone (pre-trained, imported or
//! fine-tuned): texts → word pieces → backbone → one vector a text, pooled from the states of
//! its positions (`[CLS]`, mean or max over the non-padding positions, or BERT's pooler),
//! optionally scaled to unit length — with mean pooling and unit length, what
//! sentence-transformers computes.

use crate::config::{Pooling, Precision};
use crate::store::model_dir::ModelKind;
use crate::store::weights::load_mapped;
use burn::nn::{Linear, LinearConfig};
use serde::{Deserialize, Serialize};
use crate::data::batch::{eval_batches, TokenBatch};
use crate::data::classify::encode_texts_flagged;
use crate::model::backbone::{pool, Backbone};
use crate::store::model_dir::ModelDir;
use crate::store::weights::load_prefix;
use anyhow::{Context, Result};
use burn::prelude::*;
use std::path::Path;

/// A model directory's backbone alone (the heads are not read).
#[derive(Module, Debug)]
struct BackboneOnly {
    backbone: Backbone,
}

/// How a text's position states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum EmbedPooling {
    /// The `[CLS]` state.
    Cls,
    /// The mean of the non-padding states (sentence-transformers' usual choice).
    Mean,
    /// The feature-wise maximum over the non-padding states.
    Max,
    /// BERT's pooler: the model's pooled vector through its dense + tanh (HuggingFace's
    /// `pooler_output`): a pre-trained model's next-sentence (imported: `bert.pooler`) dense, a
    /// classifier's head dense.
    Pooler,
}

/// The pooler's dense layer alone.
#[derive(Module, Debug)]
struct PoolerOnly {
    dense: Linear,
}

/// A backbone and its tokenizer, ready to embed texts.
pub struct Embedder {
    dir: ModelDir,
    backbone: Backbone,
    /// BERT's pooler dense, when the model has one.
    pooler: Option<Linear>,
    device: Device,
    precision: Precision,
}

impl Embedder {
    /// Opens the model directory `path` (pre-trained or classifier) and loads its backbone.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = ModelDir::open(path)?;
        let device = crate::model::device::default_device();
        let fresh = BackboneOnly { backbone: Backbone::init(&dir.config.model, &device) };
        let (loaded, _) = load_prefix(fresh, &dir.weights(), dir.meta.weights_bytes, "backbone.")?;
        let d = dir.config.model.output_dim();
        let from = if dir.meta.kind == ModelKind::Classifier { "head.dense." } else { "nsp.dense." };
        let fresh = PoolerOnly { dense: LinearConfig::new(d, d).init(&device) };
        // absent (no next-sentence head, a label-attention head of another width): no pooler
        let pooler = load_mapped(fresh, &dir.weights(), dir.meta.weights_bytes, from, "dense.").ok().map(|(p, _)| p.dense);
        Ok(Self { dir, backbone: loaded.backbone, pooler, device, precision: Precision::F32 })
    }

    /// The same embedder with its products' inputs in `precision` (as
    /// [`crate::infer::classifier::LoadedClassifier::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The same embedder cutting texts at `max_len` pieces instead of the model's (see
    /// [`crate::config::ModelConfig::reading`]). `None`: as trained.
    pub fn with_max_len(mut self, max_len: Option<usize>) -> Result<Self> {
        let Some(max_len) = max_len else { return Ok(self) };
        self.dir.config.model = self.dir.config.model.reading(max_len).with_context(|| format!("--max-len {max_len}: {}", self.dir.path.display()))?;
        Ok(self)
    }

    /// Whether [`EmbedPooling::Pooler`] can be asked for.
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dir.config.model.output_dim()
    }

    /// One vector a text (a `a<TAB>b` line is a pair), in input order, `batch_size` texts a pass.
    pub fn embed(&self, texts: &[String], pooling: EmbedPooling, normalize: bool, batch_size: usize) -> Vec<Vec<f32>> {
        self.embed_flagged(texts, pooling, normalize, batch_size).0
    }

    /// [`Embedder::embed`], and for each text whether it was cut to the model's `max_len`.
    /// [`EmbedPooling::Pooler`] on a model without a pooler gives its pooled vector unchanged;
    /// callers check [`Embedder::has_pooler`] first.
    pub fn embed_flagged(&self, texts: &[String], pooling: EmbedPooling, normalize: bool, batch_size: usize) -> (Vec<Vec<f32>>, Vec<bool>) {
        let _precision = crate::model::kernels::prediction_precision_scope(self.precision);
        let (seqs, cut) = encode_texts_flagged(texts, &self.dir.tokenizer, self.dir.config.model.max_len);
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut out = vec![Vec::new(); seqs.len()];
        for idx in eval_batches(&lengths, batch_size.max(1)) {
            let batch: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].as_slice()).collect();
            let tokens = TokenBatch::new(&batch, self.dir.tokenizer.specials(), &self.device);
            let encoded = self.backbone.forward(&tokens);
            let mut vectors = match pooling {
                EmbedPooling::Cls => pool(encoded.states, &tokens.pad_mask, Pooling::Cls),
                EmbedPooling::Mean => pool(encoded.states, &tokens.pad_mask, Pooling::Mean),
                EmbedPooling::Max => pool(encoded.states, &tokens.pad_mask, Pooling::Max),
                EmbedPooling::Pooler => match &self.pooler {
                    Some(dense) => burn::tensor::activation::tanh(dense.forward(encoded.pooled)),
                    None => encoded.pooled,
                },
            };
            if normalize {
                let [b, _] = vectors.dims();
                let norm = vectors.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12).reshape([b, 1]);
                vectors = vectors / norm;
            }
            let [_, d] = vectors.dims();
            let flat: Vec<f32> = vectors.into_data().convert::<f32>().try_into_vec().expect("f32 data");
            for (k, &i) in idx.iter().enumerate() {
                out[i] = flat[k * d..(k + 1) * d].to_vec();
            }
        }
        (out, cut)
    }

    /// The backbone it runs.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The model directory it reads (config, tokenizer, description).
    pub fn dir(&self) -> &ModelDir {
        &self.dir
    }
}
