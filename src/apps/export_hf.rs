//! The `export-hf` command's pipeline: a bertlu Transformer (pre-trained or classifier) written
//! as a HuggingFace BERT checkpoint that python `transformers` loads, into a directory that
//! appears only when it is complete.

use crate::store::hf::export;
use crate::store::model_dir::ModelDir;
use crate::store::output_dir::OutputDir;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Exports the model directory `model` into `out`; returns the directory and the architecture.
pub fn run(model: &Path, out: &Path, overwrite: bool) -> Result<(PathBuf, String)> {
    let dir = ModelDir::open(model)?;
    let device = crate::model::device::default_device();
    let out = OutputDir::create(out, overwrite)?;
    let architecture = export(&dir, out.path(), &device)?;
    Ok((out.commit()?, architecture))
}
