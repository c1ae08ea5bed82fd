//! The `import-hf` command's pipeline: a HuggingFace BERT checkpoint read in (`store::hf`) and
//! written as a bertlu pre-trained model directory, which `finetune --init`, `pretrain --init`
//! and `compare --pretrained` take like one bertlu pre-trained itself.

use crate::store::hf::{import, NspImport};
use crate::store::model_dir::{ModelDir, ModelKind, ModelMeta};
use crate::store::output_dir::OutputDir;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Imports the checkpoint in `dir` into a new model directory `out`; returns it and the lines
/// that say what was loaded.
pub fn run(dir: &Path, out: &Path, overwrite: bool) -> Result<(PathBuf, Vec<String>)> {
    let device = crate::model::device::default_device();
    let imported = import(dir, &device)?;
    let out = OutputDir::create(out, overwrite)?;
    let m = &imported.config.model;
    let mut said = vec![format!(
        "{}: BERT, {} layers, hidden {}, {} heads, feed-forward {}, {} positions, vocabulary {} (special ids {:?})",
        dir.display(), m.transformer.n_layers, m.d_model, m.transformer.n_heads, m.transformer.d_ff, m.max_len, m.vocab_size, imported.tokenizer.specials()
    )];
    said.push(format!("loaded {} tensors; masked-LM head {}", imported.loaded.len(), if imported.mlm_head { "from the checkpoint" } else { "not in the checkpoint: it starts at random" }));
    said.push(match imported.nsp_head {
        NspImport::Complete => "pooler and next-sentence head from the checkpoint (classes reordered: bertlu's 1 is \"B follows A\")".to_owned(),
        NspImport::PoolerOnly => "pooler from the checkpoint; next-sentence output not in it: it starts at random".to_owned(),
        NspImport::Absent => "no pooler in the checkpoint: no next-sentence head, no `--pooling pooler`".to_owned(),
    });
    if !imported.unused.is_empty() {
        said.push(format!("not used ({}): {}", imported.unused.len(), imported.unused.join(", ")));
    }
    let info = serde_json::json!({ "imported_from": dir.display().to_string(), "loaded_tensors": imported.loaded, "unused_tensors": imported.unused, "mlm_head_from_checkpoint": imported.mlm_head });
    let meta = ModelMeta::new(ModelKind::Pretrained, None, 0.0, info);
    ModelDir::write(out.path(), &imported.config, &imported.tokenizer, &imported.model, meta, None)?;
    let path = out.commit()?;
    said.push(format!("pre-trained model written to {}", path.display()));
    Ok((path, said))
}
