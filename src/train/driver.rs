//! The one training loop. Pre-training and fine-tuning are two [`Task`]s: each says what its
//! batches are, what one optimiser step does and what happens at the end of an epoch; the
//! driver does the rest the same way for both — the epochs and steps, resuming inside an epoch,
//! seeding each step, the progress bar, the `metrics.csv` rows, checkpoints after steps and
//! epochs, Ctrl-C, and removing the checkpoints of a finished run. (Each task checks its own
//! loss is finite, so the error names its own learning-rate setting: see [`diverged`].)

use super::interrupt::{interrupted, Interrupted};
use super::metrics_log::{write_csv, MetricsRow, Window, LOG_EVERY};
use super::optim::Schedule;
use super::{progress, RunOptions};
use crate::config::Config;
use crate::store::checkpoints::{self, Checkpoints, Position};
use crate::store::layout::METRICS_FILE;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::Result;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The running numbers every task keeps in its checkpointed state.
pub(crate) trait Logged {
    /// The `metrics.csv` rows so far.
    fn rows(&self) -> &[MetricsRow];
    /// The rows, to add one, and the numbers since the last training row.
    fn log(&mut self) -> (&mut Vec<MetricsRow>, &mut Window);
}

/// A training task the driver runs.
pub(crate) trait Task<'a> {
    /// The model being trained.
    type Model: Module;
    /// One batch of training data.
    type Batch;
    /// The task's running numbers, saved in every checkpoint.
    type State: Logged + Serialize + DeserializeOwned;

    /// Epochs to run.
    fn epochs(&self) -> usize;
    /// Epochs shown on the progress bar ("epoch 2/N").
    fn epochs_shown(&self) -> usize {
        self.epochs()
    }
    /// The batches of `epoch`, in training order, and how many of them to train on (the last
    /// epoch of a step-limited run stops early).
    /// The iterator borrows the task's data (lifetime `'a`), not the task, which the steps change.
    fn batches(&self, epoch: usize, at: &Position<Self::State>) -> Result<(Box<dyn Iterator<Item = Result<Self::Batch>> + 'a>, usize)>;
    /// One optimiser step at `step` (0-based) on `batch`: forward, loss, backward, update,
    /// adding to `state`. A non-finite loss is an error ([`diverged`]) before the update.
    fn step(&mut self, model: Self::Model, optim: &mut ModuleOptimizer, batch: Self::Batch, step: usize, lr: f64, state: &mut Self::State) -> Result<Self::Model>;
    /// The progress bar's message after a step.
    fn message(&self, state: &Self::State, batches_done: usize) -> String;
    /// The end of an epoch: score the model, log it, save it; `Ok(true)` stops the run.
    fn end_epoch(&mut self, model: &Self::Model, at: &mut Position<Self::State>, lr: f64, seconds: f64) -> Result<bool>;
    /// Writes a training-state checkpoint of `model` (a task that keeps more weights beside
    /// it, such as a moving average, saves them too).
    fn save_checkpoint(&self, checkpoints: &Checkpoints, run: &Run, model: &Self::Model, optim: &ModuleOptimizer, at: &Position<Self::State>) -> Result<PathBuf> {
        checkpoints.save(run.cfg, run.tokenizer, model, optim, at, run.hash)
    }
}

/// The error of a step whose loss is not finite.
pub(crate) fn diverged(what: &str, step: usize, loss: f32, setting: &str) -> anyhow::Error {
    anyhow::anyhow!("{what} diverged at step {} (loss {loss}); lower {setting}", step + 1)
}

/// Where a run writes and what it checks on resume.
pub(crate) struct Run<'a> {
    /// The run's config (saved with each checkpoint, compared on resume).
    pub cfg: &'a Config,
    /// The tokenizer saved with each checkpoint.
    pub tokenizer: &'a WordPieceTokenizer,
    /// The output directory (none: nothing is written).
    pub out: Option<&'a Path>,
    /// Logging and checkpoint options.
    pub opts: &'a RunOptions,
    /// The training data's fingerprint, checked on resume.
    pub hash: &'a str,
    /// The seed of each step's randomness.
    pub seed: u64,
    /// The learning rate of each step.
    pub schedule: &'a Schedule,
}

/// Runs `task` from `at` (fresh, or restored from a checkpoint) to the end; returns the model
/// and the final position.
pub(crate) fn drive<'a, T: Task<'a>>(task: &mut T, mut model: T::Model, mut optim: ModuleOptimizer, mut at: Position<T::State>, run: &Run, device: &Device) -> Result<(T::Model, Position<T::State>)> {
    let checkpoints = run.out.map(|o| Checkpoints::new(o, run.opts.checkpoints));
    let start = Instant::now();
    let offset = at.seconds;
    let elapsed = || offset + start.elapsed().as_secs_f64();
    let epochs = task.epochs();
    while at.epoch <= epochs {
        let epoch = at.epoch;
        let (batches, n) = task.batches(epoch, &at)?;
        let mut pb = progress::Progress::new((n - at.batch.min(n)) as u64, &format!("epoch {epoch}/{}", task.epochs_shown()), run.opts.no_bars());
        // the batches done before a resume are drawn again (the data order is seeded) and skipped
        for batch in batches.take(n).skip(at.batch) {
            let batch = batch?;
            let step = at.step;
            let lr = run.schedule.lr(step);
            super::seed_step(device, run.seed, step);
            model = task.step(model, &mut optim, batch, step, lr, &mut at.state)?;
            at.step += 1;
            at.batch += 1;
            pb.inc();
            if at.batch % 10 == 0 || at.batch == n {
                pb.set_message(task.message(&at.state, at.batch));
            }
            if at.step % LOG_EVERY == 0 {
                let (rows, window) = at.state.log();
                rows.push(window.row(at.step, epoch, lr, elapsed()));
            }
            if let Some(c) = &checkpoints {
                at.seconds = elapsed();
                checkpoint_after_step(task, c, run, &model, &optim, &at)?;
            }
        }
        pb.finish();
        let lr = run.schedule.lr(at.step.saturating_sub(1));
        let stop = task.end_epoch(&model, &mut at, lr, elapsed())?;
        if let Some(out) = run.out {
            write_csv(at.state.rows(), &out.join(METRICS_FILE))?;
        }
        at.epoch += 1;
        at.batch = 0;
        at.seconds = elapsed();
        if stop {
            break;
        }
        if let Some(c) = &checkpoints {
            if at.epoch <= epochs {
                task.save_checkpoint(c, run, &model, &optim, &at)?;
            }
        }
    }
    if let Some(out) = run.out {
        checkpoints::remove_all(out)?;
    }
    Ok((model, at))
}

/// After a training step: when a checkpoint is due or Ctrl-C was pressed, writes one and
/// `metrics.csv`; after Ctrl-C, then stops the loop with [`Interrupted`].
fn checkpoint_after_step<'a, T: Task<'a>>(task: &T, checkpoints: &Checkpoints, run: &Run, model: &T::Model, optim: &ModuleOptimizer, position: &Position<T::State>) -> Result<()> {
    let stop = interrupted();
    if !stop && !checkpoints.due(position.step) {
        return Ok(());
    }
    let dir = task.save_checkpoint(checkpoints, run, model, optim, position)?;
    write_csv(position.state.rows(), &checkpoints.out_dir().join(METRICS_FILE))?;
    if stop {
        return Err(Interrupted { step: position.step, dir }.into());
    }
    Ok(())
}
