//! Sentence vectors from any bertlu model with a backbone (pre-trained, imported or
//! fine-tuned): texts → word pieces → backbone → one vector a text, pooled from the states of
//! its positions (`[CLS]`, mean or max over the non-padding positions), optionally scaled to
//! unit length — with mean pooling and unit length, what sentence-transformers computes.

use crate::config::Pooling;
use crate::data::batch::{eval_batches, TokenBatch};
use crate::data::classify::encode_texts_flagged;
use crate::model::backbone::{pool, Backbone};
use crate::store::model_dir::ModelDir;
use crate::store::weights::load_prefix;
use anyhow::Result;
use burn::prelude::*;
use std::path::Path;

/// A model directory's backbone alone (the heads are not read).
#[derive(Module, Debug)]
struct BackboneOnly {
    backbone: Backbone,
}

/// A backbone and its tokenizer, ready to embed texts.
pub struct Embedder {
    dir: ModelDir,
    backbone: Backbone,
    device: Device,
}

impl Embedder {
    /// Opens the model directory `path` (pre-trained or classifier) and loads its backbone.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = ModelDir::open(path)?;
        let device = crate::model::device::default_device();
        let fresh = BackboneOnly { backbone: Backbone::init(&dir.config.model, &device) };
        let (loaded, _) = load_prefix(fresh, &dir.weights(), dir.meta.weights_bytes, "backbone.")?;
        Ok(Self { dir, backbone: loaded.backbone, device })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dir.config.model.output_dim()
    }

    /// One vector a text (a `a<TAB>b` line is a pair), in input order, `batch_size` texts a pass.
    pub fn embed(&self, texts: &[String], pooling: Pooling, normalize: bool, batch_size: usize) -> Vec<Vec<f32>> {
        self.embed_flagged(texts, pooling, normalize, batch_size).0
    }

    /// [`Embedder::embed`], and for each text whether it was cut to the model's `max_len`.
    pub fn embed_flagged(&self, texts: &[String], pooling: Pooling, normalize: bool, batch_size: usize) -> (Vec<Vec<f32>>, Vec<bool>) {
        let (seqs, cut) = encode_texts_flagged(texts, &self.dir.tokenizer, self.dir.config.model.max_len);
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut out = vec![Vec::new(); seqs.len()];
        for idx in eval_batches(&lengths, batch_size.max(1)) {
            let batch: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].as_slice()).collect();
            let tokens = TokenBatch::new(&batch, self.dir.tokenizer.specials(), &self.device);
            let states = self.backbone.forward(&tokens).states;
            let mut vectors = pool(states, &tokens.pad_mask, pooling);
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
