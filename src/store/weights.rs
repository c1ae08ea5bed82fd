//! Module weights as safetensors: saved atomically, loaded whole (every tensor, every shape) or
//! by name prefix (a pre-trained backbone into a classifier), with one-line errors that name
//! the file and the first tensor that does not fit.

use super::atomic::write_via_tmp;
use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::store::{ModuleSnapshot, PathFilter, SafetensorsStore};
use std::fs;
use std::path::Path;

/// Saves a module's weights as safetensors (atomically); returns the file length.
pub fn save_weights<M: Module>(model: &M, path: &Path) -> Result<u64> {
    write_via_tmp(path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp).overwrite(true);
        model.save_into(&mut store).map_err(|e| anyhow::anyhow!("weights: {e}"))
    })?;
    Ok(fs::metadata(path)?.len())
}

/// Loads every weight of `model` from a safetensors file; any missing, extra or mis-shaped
/// tensor is an error.
pub fn load_weights<M: Module>(model: M, path: &Path, expected_bytes: u64) -> Result<M> {
    check_length(path, expected_bytes)?;
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path);
    let result = model.load_from(&mut store).map_err(|e| store_error(path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        bail!("{}: weights do not fit the model: {}", path.display(), summarize(&result));
    }
    Ok(model)
}

/// Loads exactly the tensors under `prefix` (e.g. `backbone.`) into `model` and returns their
/// names. Fails unless every such tensor of the model was found with the same shape.
pub fn load_prefix<M: Module>(model: M, path: &Path, expected_bytes: u64, prefix: &str) -> Result<(M, Vec<String>)> {
    load_mapped(model, path, expected_bytes, prefix, prefix)
}

/// Loads the file's tensors under `from` into the model's tensors under `to` (e.g. a
/// pre-trained `nsp.dense.` pooler into a classifier's `head.dense.`) and returns the model's
/// names. Fails unless every model tensor under `to` was found with the same shape.
pub fn load_mapped<M: Module>(model: M, path: &Path, expected_bytes: u64, from: &str, to: &str) -> Result<(M, Vec<String>)> {
    check_length(path, expected_bytes)?;
    let mut model = model;
    let pattern = format!("^{}", regex_escape(to));
    let wanted: Vec<String> = model.collect(Some(PathFilter::new().with_regex(&pattern)), None, false).into_iter().map(|t| t.name.clone()).collect();
    let mut store = SafetensorsStore::from_file(path).with_regex(&pattern).allow_partial(true);
    if from != to {
        store = store.with_key_remapping(format!("^{}", regex_escape(from)), to);
    }
    let result = model.load_from(&mut store).map_err(|e| store_error(path, e))?;
    if !result.errors.is_empty() {
        bail!("{}: pre-trained weights do not fit: {}", path.display(), summarize(&result));
    }
    let mut applied = result.applied.clone();
    applied.sort();
    let mut want = wanted.clone();
    want.sort();
    if applied != want {
        let missing: Vec<&String> = want.iter().filter(|w| !applied.contains(w)).collect();
        bail!("{}: pre-trained weights lack {} of the {} tensors under {from} (first: {})", path.display(), missing.len(), want.len(), missing.first().map(|s| s.as_str()).unwrap_or("?"));
    }
    Ok((model, applied))
}

/// A store failure as one readable line; validation failures (shape mismatches) say so first.
fn store_error(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    let text = e.to_string().replace('\n', " ");
    let short: String = text.chars().take(300).collect();
    let more = if short.len() < text.len() { "…" } else { "" };
    if text.contains("Mismatch") || text.contains("Validation") {
        anyhow::anyhow!("{}: weights do not fit the model: {short}{more}", path.display())
    } else {
        anyhow::anyhow!("{}: cannot read weights: {short}{more}", path.display())
    }
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || c == '_' { c.to_string() } else { format!("\\{c}") }).collect()
}

fn summarize(r: &burn::store::ApplyResult) -> String {
    let mut parts = Vec::new();
    if let Some(e) = r.errors.first() {
        parts.push(format!("{} error(s), first: {e:?}", r.errors.len()));
    }
    if let Some((m, _)) = r.missing.first() {
        parts.push(format!("{} missing, first: {m}", r.missing.len()));
    }
    if let Some(u) = r.unused.first() {
        parts.push(format!("{} unexpected, first: {u}", r.unused.len()));
    }
    parts.join("; ").replace('\n', " ")
}

/// Checks a file's length against the one recorded when it was written (catches truncation).
pub fn check_length(path: &Path, expected: u64) -> Result<()> {
    let len = fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?.len();
    if len != expected {
        bail!("{}: truncated or altered checkpoint ({len} bytes, expected {expected})", path.display());
    }
    Ok(())
}
