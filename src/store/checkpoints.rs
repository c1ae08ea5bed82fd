//! Training-state checkpoints, so a killed or interrupted run continues where it stopped.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNNN` inside the run's output directory
//! holding the model being trained, the AdamW state, the tokenizer, the config and `state.json`
//! (step, position in the epoch, the training loop's running numbers). It is written under a
//! `.tmp` name and renamed, so a kill at any moment leaves either the whole checkpoint or none;
//! the last `keep` are kept. Resuming needs no random-generator state: data order is drawn from
//! a generator seeded by (seed, epoch) and masking and dropout from generators seeded by
//! (seed, step) — see `train::derived_seed` — so a resumed run repeats the uninterrupted one.

use super::atomic::write_atomic;
use super::layout::{CHECKPOINTS_DIR, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use super::weights::{check_length, load_weights, save_weights};
use crate::config::Config;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Context, Result};
use burn::module::{list_param_ids, Module, ModuleMapper, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// When and how many training-state checkpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Write one every this many optimiser steps (0: only at the end of each epoch).
    pub every: usize,
    /// Keep the newest this many.
    pub keep: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self { every: 500, keep: 2 }
    }
}

/// Where a training loop is, plus its own running numbers `S`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Position<S> {
    /// Optimiser steps done.
    pub step: usize,
    /// 1-based epoch in progress.
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch: usize,
    /// Seconds of training before this point (wall time survives restarts).
    pub seconds: f64,
    /// The loop's running numbers.
    pub state: S,
}

#[derive(Serialize, Deserialize)]
struct StateFile<P> {
    position: P,
    /// Hash of the training data as the loop sees it (token ids, labels).
    data_hash: String,
    /// Parameter ids in module order: the optimiser state is keyed by them.
    param_ids: Vec<u64>,
    weights_bytes: u64,
    optimizer_bytes: u64,
}

/// Writes and finds the checkpoints of one output directory.
pub struct Checkpoints {
    out: PathBuf,
    dir: PathBuf,
    policy: CheckpointPolicy,
}

impl Checkpoints {
    /// The checkpoints of output directory `out`.
    pub fn new(out: &Path, policy: CheckpointPolicy) -> Self {
        Self { out: out.to_path_buf(), dir: out.join(CHECKPOINTS_DIR), policy }
    }

    /// The output directory whose checkpoints these are.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// Whether a checkpoint is due after `step` steps (epoch ends are handled by the caller).
    pub fn due(&self, step: usize) -> bool {
        self.policy.every > 0 && step % self.policy.every == 0
    }

    /// Writes a checkpoint (whole or not at all) and drops the oldest beyond `keep`.
    #[allow(clippy::too_many_arguments)]
    pub fn save<M: Module, S: Serialize>(&self, cfg: &Config, tokenizer: &WordPieceTokenizer, model: &M, optim: &ModuleOptimizer, position: &Position<S>, data_hash: &str) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).with_context(|| format!("{}: cannot create", self.dir.display()))?;
        let name = format!("step-{:09}", position.step);
        let fin = self.dir.join(&name);
        if fin.exists() {
            return Ok(fin); // the same step, written before (an epoch end right after a periodic save)
        }
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let weights_bytes = save_weights(model, &tmp.join(WEIGHTS_FILE))?;
        let opt_path = tmp.join(OPTIMIZER_FILE);
        optim.save(&opt_path).map_err(|e| anyhow::anyhow!("{}: cannot write optimizer state: {e}", opt_path.display()))?;
        let optimizer_bytes = fs::metadata(&opt_path)?.len();
        tokenizer.save(&tmp.join(TOKENIZER_FILE))?;
        write_atomic(&tmp.join(CONFIG_FILE), cfg.to_toml().as_bytes())?;
        let state = StateFile { position, data_hash: data_hash.to_owned(), param_ids: list_param_ids(model).iter().map(|p| p.val()).collect(), weights_bytes, optimizer_bytes };
        write_atomic(&tmp.join(STATE_FILE), serde_json::to_string(&state)?.as_bytes())?;
        fs::rename(&tmp, &fin).with_context(|| format!("{}: cannot move checkpoint into place", fin.display()))?;
        let mut all = complete(&self.dir)?;
        while all.len() > self.policy.keep.max(1) {
            let old = all.remove(0);
            let _ = fs::remove_dir_all(old);
        }
        Ok(fin)
    }
}

/// Complete checkpoint directories of a `checkpoints` directory, oldest first.
fn complete(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp")))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    Ok(v)
}

/// The newest complete checkpoint of output directory `out`, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(complete(&out.join(CHECKPOINTS_DIR))?.pop())
}

/// Whether `out` holds any complete checkpoint.
pub fn has_checkpoint(out: &Path) -> bool {
    latest(out).ok().flatten().is_some()
}

/// The tokenizer saved with a checkpoint.
pub fn checkpoint_tokenizer(ckpt: &Path) -> Result<WordPieceTokenizer> {
    WordPieceTokenizer::load(&ckpt.join(TOKENIZER_FILE))
}

/// What [`restore`] gives back.
pub struct Restored<M, S> {
    /// The model with the checkpoint's weights.
    pub model: M,
    /// The optimiser with its moments and step counts.
    pub optim: ModuleOptimizer,
    /// Where the loop was.
    pub position: Position<S>,
}

/// Loads the newest checkpoint of output directory `out` (see [`restore`]); returns it with
/// the checkpoint's path. No checkpoint is an error.
pub fn restore_latest<M: Module, S: DeserializeOwned>(out: &Path, cfg: &Config, data_hash: &str, model: M, optim: ModuleOptimizer) -> Result<(Restored<M, S>, PathBuf)> {
    let ckpt = latest(out)?.ok_or_else(|| anyhow::anyhow!("{}: no checkpoint to resume from", out.display()))?;
    Ok((restore(&ckpt, cfg, data_hash, model, optim)?, ckpt))
}

/// Loads checkpoint `ckpt` into a freshly built `model` and `optim`, after checking that it
/// belongs to the same config and data.
pub fn restore<M: Module, S: DeserializeOwned>(ckpt: &Path, cfg: &Config, data_hash: &str, model: M, optim: ModuleOptimizer) -> Result<Restored<M, S>> {
    let state_path = ckpt.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).with_context(|| format!("{}: cannot read", state_path.display()))?;
    let state: StateFile<Position<S>> = serde_json::from_str(&text).with_context(|| format!("{}: invalid checkpoint state", state_path.display()))?;
    let saved_cfg = fs::read_to_string(ckpt.join(CONFIG_FILE)).with_context(|| format!("{}: cannot read config", ckpt.display()))?;
    if saved_cfg != cfg.to_toml() {
        bail!("{}: the interrupted run used another configuration (config, preset or command-line settings differ); resume with the same command", ckpt.display());
    }
    if state.data_hash != data_hash {
        bail!("{}: the interrupted run trained on other data or towards another teacher (hash {} vs {data_hash}); resume with the same files and teacher", ckpt.display(), state.data_hash);
    }
    let model = load_weights(model, &ckpt.join(WEIGHTS_FILE), state.weights_bytes)?;
    let ids = list_param_ids(&model);
    if ids.len() != state.param_ids.len() {
        bail!("{}: {} parameters saved, the model has {}", ckpt.display(), state.param_ids.len(), ids.len());
    }
    let model = model.map(&mut SetIds { ids: state.param_ids.iter().map(|&i| ParamId::from(i)).collect(), next: 0 });
    let opt_path = ckpt.join(OPTIMIZER_FILE);
    check_length(&opt_path, state.optimizer_bytes)?;
    let optim = optim.load(&opt_path).map_err(|e| anyhow::anyhow!("{}: cannot read optimizer state: {e}", opt_path.display()))?;
    Ok(Restored { model, optim, position: state.position })
}

/// Gives the parameters, in module order, the ids they had when the checkpoint was written, so
/// the optimiser state (keyed by id) finds them.
struct SetIds {
    ids: Vec<ParamId>,
    next: usize,
}

impl SetIds {
    fn take(&mut self) -> ParamId {
        let id = self.ids[self.next];
        self.next += 1;
        id
    }
}

impl ModuleMapper for SetIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = self.take();
        param
    }
    fn map_int<const D: usize>(&mut self, mut param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        param.id = self.take();
        param
    }
    fn map_bool<const D: usize>(&mut self, mut param: Param<Tensor<D, Bool>>) -> Param<Tensor<D, Bool>> {
        param.id = self.take();
        param
    }
}

/// Removes the checkpoints of a finished run: its model files are complete, nothing to resume.
pub fn remove_all(out: &Path) -> Result<()> {
    let dir = out.join(CHECKPOINTS_DIR);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
    }
    Ok(())
}

/// Reads an `f64` that JSON may hold as `null` (serde_json writes NaN as `null`).
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoint_numbers_round_trip_bit_for_bit() {
        // serde_json's default float parser may be off by one unit in the last place; resumed
        // runs need the exact running sums and learning rates (the float_roundtrip feature).
        for x in [2.9760522496371554e-3_f64, 0.1 + 0.2, 1.0 / 3.0, 123456.789e-17] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
    }
}
